"""What the monitor itself costs: sampler rate and lateness, anubis and worker CPU."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.panel import Panel


class MonitorPanel(Panel):
    """What the monitor costs: sampler rate (Hz) against its target (`target_hz`),
    its p99 lateness (ms), anubis's and the worker's CPU (% of one core), and a
    remote session's key-to-acknowledgement time (ms)."""

    TITLE = "monitor"
    target_hz: float = 10.0

    def text(self, s: Snapshot) -> str:
        """The panel's lines; ``—`` for a figure not measured yet."""
        sc = s.self_cost
        return (
            f"sampler {fmt(sc['rate_hz'], '.1f')}/{self.target_hz:g} Hz\n"
            f"p99 late {fmt(sc['jitter_p99_s'] and sc['jitter_p99_s'] * 1e3, '.2f')} ms\n"
            f"anubis  {fmt(sc['anubis_cpu'] and sc['anubis_cpu'] * 100, '.1f')} % CPU\n"
            f"worker  {fmt(sc['worker_cpu'] and sc['worker_cpu'] * 100, '.0f')} % CPU"
            + (f"\nkey→ack {sc['ack_ms']:.0f} ms" if sc.get("ack_ms") is not None else "")
        )
