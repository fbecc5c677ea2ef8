"""The replay timeline: position, speed, markers and profiler events."""

from __future__ import annotations

from textual.widgets import Static

from anubis_tui.analysis.replay import Replay


class Timeline(Static):
    """The replay's line: playing or paused, position and length in s, speed, LIVE at
    the end of a growing stream, and a bar with markers (│) and profiler events (▀)."""

    def __init__(self) -> None:
        super().__init__("", id="timeline")
        self._text = ""

    def refresh_from(self, rp: Replay, width_total: int) -> None:
        """Redraw for the replay `rp` in a terminal `width_total` cells wide (the bar takes
        what the text leaves); repainted only when the text changed."""
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
