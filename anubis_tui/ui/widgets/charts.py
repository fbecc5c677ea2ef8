"""Three time-aligned charts (W, °C, tok/s) and the segment strip beneath them."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from anubis_tui.analysis.live import Snapshot


class Charts(Vertical):
    """One column per second on every chart and on the strip; redrawn when a bin appears."""

    def __init__(self, **kw: object) -> None:
        super().__init__(id="charts")
        self._bins_drawn = -1

    def compose(self) -> ComposeResult:
        for label, wid in (("W   ", "spark-power"), ("°C  ", "spark-temp"), ("tok/s", "spark-tps")):
            with Horizontal(classes="chart"):
                yield Static(label, classes="chart-label")
                yield Sparkline([], id=wid)
        yield Static("", id="segments")

    def invalidate(self) -> None:
        self._bins_drawn = -1

    def set_tall(self, tall: bool) -> None:
        for chart in self.query(".chart"):
            chart.styles.height = 3 if tall else 1
        for spark in self.query(Sparkline):
            spark.styles.height = 3 if tall else 1

    def refresh_from(self, s: Snapshot) -> None:
        if len(s.history_tps) == self._bins_drawn:
            return
        self._bins_drawn = len(s.history_tps)
        width = max(10, self.query_one("#spark-tps", Sparkline).size.width or 60)
        for wid, data in (
            ("#spark-power", s.history_power),
            ("#spark-temp", s.history_temp),
            ("#spark-tps", s.history_tps),
        ):
            tail = [x if math.isfinite(x) else 0.0 for x in data[-width:]]
            # Left-pad to the width: one column is one second on every chart and the strip.
            pad = min(tail) if tail else 0.0
            self.query_one(wid, Sparkline).data = [pad] * (width - len(tail)) + tail
        strip = [" "] * width
        first = len(s.history_tps) - width
        for seg in s.segments:
            if seg.profiler is None:
                continue
            a = int(seg.start_s) - first
            b = int(seg.end_s) - first
            for i in range(max(0, a), min(width, b + 1)):
                strip[i] = "▀"
        for m in s.history_marks:
            i = m - first
            if 0 <= i < width:
                strip[i] = "│"
        self.query_one("#segments", Static).update("      " + "".join(strip), layout=False)
