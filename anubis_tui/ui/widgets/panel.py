"""The bordered text panel every figure panel is made of, drawn line by line.

A panel is a grid cell of fixed size. Each frame it gets its text; only the
lines whose text changed are marked dirty (`Widget.refresh` with line
regions), so the compositor re-renders those lines and nothing else: no
layout, no re-render of the panel's other lines or of its border. Lines are
Rich markup, rendered once per change and cut to the panel's width.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from anubis_tui.analysis.live import Snapshot


def first_fit(width: int, *candidates: str) -> str:
    """The first candidate line (markup allowed) that fits `width` cells; else the last one.

    Panels give a long and a short form of a line, so a narrow terminal drops
    words the line can do without, never its unit or its method tag.
    """
    for c in candidates:
        if Text.from_markup(c).cell_len <= width:
            return c
    return candidates[-1]


class LinePanel(Widget):
    """Lines of markup; `show` repaints only the lines that changed."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._lines: list[str] = []
        self._strips: dict[int, Strip] = {}
        self._width = -1

    def show(self, text: str) -> None:
        """Show `text` (lines of markup): only the lines that changed are repainted."""
        new = text.split("\n")
        old = self._lines
        if new == old:
            return
        self._lines = new
        width = self.content_region.width or self.size.width
        dirty = [
            y
            for y in range(max(len(old), len(new)))
            if (old[y] if y < len(old) else None) != (new[y] if y < len(new) else None)
        ]
        for y in dirty:
            self._strips.pop(y, None)
        if width > 0:
            self.refresh(*(Region(0, y, width, 1) for y in dirty))
        else:
            self.refresh()

    def shown(self) -> str:
        """The text on screen now, without markup (tests and checks read this)."""
        return "\n".join(Text.from_markup(line).plain for line in self._lines)

    def render_line(self, y: int) -> Strip:
        """Line `y` cut to the width at a word's end (Textual's line API); cached until the
        line's text or the width changes."""
        width = self.content_region.width
        if width != self._width:  # resized: every line is cut anew
            self._width = width
            self._strips.clear()
        strip = self._strips.get(y)
        if strip is None:
            markup = self._lines[y] if y < len(self._lines) else ""
            text = Text.from_markup(markup, end="")
            if text.cell_len > width:  # cut at a word's end, never inside a word
                cut = text.plain.rfind(" ", 0, width + 1)
                text.truncate(cut if cut > 0 else width)
            strip = Strip(text.render(self.app.console), text.cell_len)
            strip = strip.extend_cell_length(width).crop(0, width)
            self._strips[y] = strip
        return strip.apply_style(self.rich_style)


class Panel(LinePanel):
    """A figure panel: subclasses say what to show in `text`; `refresh_from` runs every frame."""

    TITLE = ""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.border_title = self.TITLE

    @property
    def text_width(self) -> int:
        """Cells a line has in this panel now (22, a third of 80 columns, before layout)."""
        return self.content_region.width or 22

    def text(self, s: Snapshot) -> str:
        """The panel's text for one snapshot, as lines of Rich markup (subclasses say)."""
        raise NotImplementedError

    def refresh_from(self, s: Snapshot) -> None:
        """Show `text(s)`: called every frame; only changed lines are repainted."""
        self.show(self.text(s))
