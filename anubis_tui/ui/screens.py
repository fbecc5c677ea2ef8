"""Modal screens: the help screen (every binding, grouped) and the model picker."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class HelpScreen(ModalScreen[None]):
    """Every key of this mode with what it does, grouped; any of escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
    ]

    def __init__(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        lines = []
        for title, rows in self.groups:
            if not rows:
                continue
            lines.append(f"[b]{title}[/]")
            lines += [f"  {escape(key):<9} {escape(desc)}" for key, desc in rows]
        lines.append("")
        lines.append("[dim]escape, q or ? closes this[/]")
        with Vertical(id="help"):
            yield Static("\n".join(lines), id="help-text", markup=True)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)


class ModelPicker(ModalScreen[str | None]):
    """GGUF files of the model cache and --models-dir; enter loads one, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, files: list[Path], current: str | None) -> None:
        super().__init__()
        self.files = files
        self.current = current

    def compose(self) -> ComposeResult:
        opts = []
        for p in self.files:
            mark = " (running)" if self.current and str(p) == self.current else ""
            try:
                size = f"{p.stat().st_size / 1e6:.0f} MB"
            except OSError:
                size = "?"
            opts.append(Option(f"{p.name}  {size}{mark}  [dim]{p.parent}[/]", id=str(p)))
        with Vertical(id="picker"):
            yield Static("[b]model[/]: enter loads it (the worker reloads), escape cancels")
            yield OptionList(*opts, id="models")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
