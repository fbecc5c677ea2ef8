"""The bordered text panel every figure panel is made of."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from anubis_tui.analysis.live import Snapshot


class Panel(Static):
    """A bordered text panel that re-renders only when its text changes.

    Subclasses say what to show in `text`; `refresh_from` is called every frame.
    """

    TITLE = ""

    def __init__(self, **kw: Any) -> None:
        super().__init__("", **kw)
        self.border_title = self.TITLE
        self._text = ""

    def text(self, s: Snapshot) -> str:
        raise NotImplementedError

    def refresh_from(self, s: Snapshot) -> None:
        self.show(self.text(s))

    def show(self, text: str) -> None:
        # Panels are grid cells of fixed size: a new text needs a repaint, never a layout.
        if text != self._text:
            self._text = text
            self.update(text, layout=False)
