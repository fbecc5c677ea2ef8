"""The replay timeline: position, speed, markers and profiler events."""

from __future__ import annotations

from textual.widgets import Static

from anubis_tui.analysis.replay import Replay


class Timeline(Static):
    def __init__(self) -> None:
        super().__init__("", id="timeline")
        self._text = ""

    def refresh_from(self, rp: Replay, width_total: int) -> None:
        end = max(1, rp.end_ns)
        width = max(20, width_total - 30)
        pos = max(0, min(width - 1, int(rp.pos_ns / end * (width - 1))))
        bar = ["─"] * width
        for t, kind in rp.markers():
            i = max(0, min(width - 1, int(t / end * (width - 1))))
            bar[i] = "│" if kind == "marker" else "▀"
        bar[pos] = "●"
        state = "▶" if rp.playing else "⏸"
        live = " LIVE" if rp.growing and rp.pos_ns >= rp.end_ns - 1_000_000_000 else ""
        text = f" {state} {rp.pos_ns / 1e9:6.1f}/{end / 1e9:.1f}s {rp.speed:g}×{live} " + "".join(
            bar
        )
        if text != self._text:
            self._text = text
            self.update(text, layout=False)
