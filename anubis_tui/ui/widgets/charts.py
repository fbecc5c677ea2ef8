"""Three time-aligned charts (W, °C, tok/s) with their scales, the segment strip and a time axis.

One column is one second on every row. Each chart says its range (min–max
with the unit) at its right; a second without a reading is a gap, and a
machine without the sensor says "no sensor" instead of drawing zeros. The
whole block is one line widget, redrawn when a new second's bin appears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from anubis_tui.analysis.live import Snapshot
from anubis_tui.ui.widgets.panel import LinePanel

BLOCKS = " ▁▂▃▄▅▆▇█"
LABEL_W = 6
SCALE_W = 14


def spark_rows(data: Sequence[float], width: int, height: int, lo: float, hi: float) -> list[str]:
    """`height` rows of eighth blocks for the last `width` values; NaN is a gap (blank)."""
    tail = list(data[-width:])
    cols = [math.nan] * (width - len(tail)) + tail
    span = (hi - lo) or 1.0
    levels = []
    for v in cols:
        if not math.isfinite(v):
            levels.append(-1)
        else:  # a reading always shows, at least as the lowest block
            levels.append(max(1, min(height * 8, round((v - lo) / span * height * 8))))
    rows = []
    for r in range(height):
        floor = (height - 1 - r) * 8
        rows.append("".join(" " if lv < 0 else BLOCKS[max(0, min(8, lv - floor))] for lv in levels))
    return rows


def scale(data: Sequence[float], width: int, zero: bool) -> tuple[float, float] | None:
    """The (low, high) a chart draws the last `width` values of `data` in: their range
    (from 0 when `zero`), at least 1 unit wide; None when none is finite."""
    vals = [v for v in data[-width:] if math.isfinite(v)]
    if not vals:
        return None
    lo, hi = (min(0.0, min(vals)) if zero else min(vals)), max(vals)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    return lo, hi


def time_axis(width: int) -> str:
    """Ticks back from now, one column a second."""
    step = 30 if width < 150 else 60
    axis = [" "] * width
    label = "now"
    axis[width - len(label) :] = list(label)
    k = 1
    while True:
        pos = width - 1 - k * step
        text = f"-{k * step // 60}m" if k * step % 60 == 0 else f"-{k * step}s"
        if pos < 0:
            break
        end = min(width, pos + 1 + len(text))
        if all(c == " " for c in axis[pos:end]):
            axis[pos] = "┴"
            axis[pos + 1 : end] = list(text)[: end - pos - 1]
        k += 1
    return "".join(axis)


class Charts(LinePanel):
    """Charts, segment strip and time axis; redrawn when a new second's bin appears."""

    def __init__(self) -> None:
        super().__init__(id="charts")
        self._bins_drawn = -1
        self._drawn_width = -1
        self.rows = 1  # lines per chart

    def invalidate(self) -> None:
        """Redraw at the next frame (after a seek or a resize), even with no new bin."""
        self._bins_drawn = -1

    def set_rows(self, rows: int) -> None:
        """`rows` lines per chart (3 charts, then the segment strip and the time axis)."""
        self.rows = max(1, rows)
        self.styles.height = 3 * self.rows + 2
        self.invalidate()

    def refresh_from(self, s: Snapshot) -> None:
        """Redraw when a new 1 s bin came or the width changed; otherwise nothing."""
        width = self.content_region.width or 80
        if len(s.history_tps) == self._bins_drawn and width == self._drawn_width:
            return
        self._bins_drawn = len(s.history_tps)
        self._drawn_width = width
        self.show(self.text(s, width))

    def text(self, s: Snapshot, width: int) -> str:
        """Three charts of `rows` lines each, one column a second, newest at the right:
        system power in W (1 s mean), the hottest temperature in °C (1 s max) and
        decode tok/s now (`analysis.rolling`, from 0), each with its visible range;
        then the profiler/marker strip and the time axis. `width` is in cells."""
        cols = max(10, width - LABEL_W - SCALE_W)
        h = self.rows
        has_temp = bool(s.temps)
        has_power = s.system_channel is not None
        lines: list[str] = []
        for label, unit, data, present, zero in (
            ("W", "W", s.history_power, has_power, False),
            ("°C", "°C", s.history_temp, has_temp, False),
            ("tok/s", "", s.history_tps, True, True),
        ):
            rng = scale(data, cols, zero) if present else None
            if rng is None:
                why = "no sensor" if not present else "no reading yet"
                lines.append(f"[dim]{label:<{LABEL_W}}{why}[/]")
                lines += [""] * (h - 1)
                continue
            lo, hi = rng
            rows = spark_rows(data, cols, h, lo, hi)
            rng_text = f" {lo:.0f}–{hi:.0f} {unit}".rstrip()
            for r, row in enumerate(rows):
                head = label if r == 0 else ""
                tail = rng_text if r == 0 else ""
                lines.append(f"{head:<{LABEL_W}}{row}[dim]{tail}[/]")
        lines.append(f"{'':<{LABEL_W}}[yellow]{self._strip(s, cols)}[/]")
        lines.append(f"[dim]{'':<{LABEL_W}}{time_axis(cols)}[/]")
        return "\n".join(lines)

    @staticmethod
    def _strip(s: Snapshot, width: int) -> str:
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
        return "".join(strip)
