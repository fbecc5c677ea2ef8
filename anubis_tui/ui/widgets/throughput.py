"""Decode and prompt tok/s, TTFT and totals."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.panel import Panel


class ThroughputPanel(Panel):
    TITLE = "throughput"

    def text(self, s: Snapshot) -> str:
        return (
            f"decode  {fmt(s.decode_tps, '.1f')} tok/s\n"
            f"prompt  {fmt(s.prompt_tps, '.0f')} tok/s\n"
            f"TTFT    {fmt(s.ttft_ms, '.0f')} ms (med {fmt(s.ttft_median_ms, '.0f')})\n"
            f"{s.requests} req, {s.tokens} tok"
        )
