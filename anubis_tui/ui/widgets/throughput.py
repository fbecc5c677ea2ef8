"""Decode and prompt tok/s, TTFT and totals (shorter forms where the panel is narrow)."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.panel import Panel, first_fit


class ThroughputPanel(Panel):
    """Decode tok/s now (2 s window, `analysis.rolling`), prompt tok/s of the last
    request, TTFT in ms (last and median), requests and decode tokens so far."""

    TITLE = "throughput"

    def text(self, s: Snapshot) -> str:
        """The panel's four lines, shorter forms where the panel is narrow."""
        w = self.text_width
        ttft, med = fmt(s.ttft_ms, ".0f"), fmt(s.ttft_median_ms, ".0f")
        return "\n".join(
            (
                f"decode  {fmt(s.decode_tps, '.1f')} tok/s",
                f"prompt  {fmt(s.prompt_tps, '.0f')} tok/s",
                first_fit(
                    w,
                    f"TTFT    {ttft} ms (median {med})",
                    f"TTFT {ttft} ms, med {med}",
                    f"TTFT {ttft} ms",
                ),
                first_fit(
                    w,
                    f"{s.requests} requests, {s.tokens} tokens",
                    f"{s.requests} req, {s.tokens} tok",
                ),
            )
        )
