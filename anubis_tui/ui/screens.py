"""Modal screens: the help screen (every binding, grouped) and the model picker."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from anubis_tui.inference.quality import picker_note


class HelpScreen(ModalScreen[None]):
    """Every key of this mode with what it does, grouped; any of escape, q or ? closes it.

    The text is built as styled `Text`, never parsed as markup: a key such as
    ``[`` or ``]`` is shown as typed. It scrolls (arrows, page keys, home/end,
    the mouse wheel) where the terminal is shorter than the list.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("up", "scroll(-1)", "Up", show=False),
        Binding("down", "scroll(1)", "Down", show=False),
        Binding("pageup", "scroll(-10)", "Page up", show=False),
        Binding("pagedown", "scroll(10)", "Page down", show=False),
        Binding("home", "scroll(-10000)", "Top", show=False),
        Binding("end", "scroll(10000)", "Bottom", show=False),
    ]

    def __init__(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.groups = groups

    def help_text(self) -> Group:
        """The help as a two-column grid: group titles bold, keys literal (no markup is
        parsed), a long description wrapped under itself."""
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, min_width=11)
        grid.add_column(ratio=1)
        for title, rows in self.groups:
            if not rows:
                continue
            grid.add_row(Text(title, style="bold"), "")
            for key, desc in rows:
                grid.add_row(Text(f"  {key}", style="bold"), Text(desc))
        note = Text("\nescape, q or ? closes this; arrows and page keys scroll", style="dim")
        return Group(grid, note)

    def compose(self) -> ComposeResult:
        """The help grid (`help_text`) in a scrolling container."""
        with VerticalScroll(id="help"):
            yield Static(self.help_text(), id="help-text", markup=False)

    def action_scroll(self, lines: int) -> None:
        """Scroll the help by `lines` lines (negative: up)."""
        self.query_one("#help", VerticalScroll).scroll_relative(y=lines, animate=False)

    async def action_dismiss(self, result: None = None) -> None:
        """escape, q or ?: close the help."""
        self.dismiss(None)


class ModelPicker(ModalScreen[str | None]):
    """GGUF files of the model cache and --models-dir; enter loads one, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, files: list[Path], current: str | None) -> None:
        super().__init__()
        self.files = files
        self.current = current

    def compose(self) -> ComposeResult:
        """One option per GGUF file: its name, size in MiB, quantization, cached perplexity
        (`inference.quality.picker_note`), "(running)" for the loaded one, and its folder."""
        opts = []
        for p in self.files:
            mark = " (running)" if self.current and str(p) == self.current else ""
            size = picker_note(p)  # size, quantization, cached perplexity (issue 26)
            shown = f"{escape(p.name)}  {escape(size)}{mark}  [dim]{escape(str(p.parent))}[/]"
            opts.append(Option(shown, id=str(p)))
        with Vertical(id="picker"):
            yield Static("[b]model[/]: enter loads it (the worker reloads), escape cancels")
            yield OptionList(*opts, id="models")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """enter: close the picker with the chosen file's path."""
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        """escape: close the picker without a choice (None)."""
        self.dismiss(None)
