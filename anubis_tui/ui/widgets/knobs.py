"""The knobs: each knob's key, its value now, and whether it can be changed here (and why not)."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot
from anubis_tui.analysis.segments import show_knob
from anubis_tui.session.knobs import KNOBS
from anubis_tui.ui.widgets.panel import Panel

SHORT_LABELS = {"threads": "thr", "GPU layers": "ngl", "flash attn": "FA", "KV cache": "KV",
                "GPU power": "GPU W", "CPU max": "CPU", "model": ""}  # fmt: skip
MODEL_CHARS = 24  # a model's name is cut to this many characters (with …) in the strip


def knob_cells(s: Snapshot, form: int = 0) -> tuple[list[str], list[str]]:
    """(``t/T threads 2`` for each knob that can change; ``w/W GPU power: no NVIDIA GPU``,
    greyed, for each that cannot, with its value where it has one).

    `form` 0 is the full label, 1 a short one (``thr``, ``FA``), 2 the key and value only:
    the strip picks the longest form whose knobs fit one line."""
    live, greyed = [], []
    for k in KNOBS:
        why = s.knob_state.get(k.name, "")
        value = show_knob(k.name, s.knobs.get(k.name))
        cap = MODEL_CHARS if form == 0 else MODEL_CHARS // 2
        if k.name == "model" and len(value) > cap:
            value = value[: cap - 1] + "…"
        if why:
            shown = f" {value}" if value != "—" and k.name != "model" else ""
            greyed.append(f"{k.keys} {k.label}{shown}: {why}")
        else:
            label = (k.label, SHORT_LABELS.get(k.label, k.label), "")[form]
            live.append(f"[b]{k.keys}[/] {label} {value}".replace("  ", " "))
    return live, greyed


class KnobsPanel(Panel):
    """The knobs strip under the panels: each knob that can change with its key and
    value on one line; those that cannot, greyed, with the reason, on two more."""

    TITLE = "knobs"
    _key: object = None

    def refresh_from(self, s: Snapshot) -> None:
        # Knobs change rarely: the text is made again only when they or the width change.
        """Rebuild the text only when the knobs, their state or the width changed."""
        key = (repr(s.knobs), repr(s.knob_state), self.content_region.width)
        if key != self._key:
            self._key = key
            self.show(self.text(s))  # three lines of fixed height: never a layout

    def text(self, s: Snapshot) -> str:
        """The strip as markup: the changeable knobs on one line (shorter labels before
        a wrap), then up to two lines of the knobs that cannot change here and why."""
        if not s.knobs and not s.knob_state:
            return "[dim]no knobs (an older recording, or the session is starting)[/]"
        width = max(20, self.content_region.width or 80)
        # The knobs that can change: always one line (shorter labels before a wrap).
        for form in (0, 1, 2):
            live, greyed = knob_cells(s, form)
            line = _flow(["knobs", *live], 10**6)[0]
            if len(_strip_markup(line)) <= width:
                break
        lines = [line]
        if greyed:  # the rest: the two lines left
            lines += [f"[dim]{ln}[/]" for ln in _flow(["not here:", *greyed], width)[:2]]
        return "\n".join(lines)


def _flow(cells: list[str], width: int) -> list[str]:
    """Cells joined by `` · `` into lines of at most `width` cells (the first cell is a head)."""
    lines: list[str] = []
    cur, cur_len = "", 0
    for i, cell in enumerate(cells):
        plain = len(_strip_markup(cell))
        sep = " " if i == 1 else " · "
        if cur and cur_len + len(sep) + plain > width:
            lines.append(cur)
            cur, cur_len = "  " + cell, 2 + plain
            continue
        cur = f"{cur}{sep}{cell}" if cur else cell
        cur_len += (len(sep) if cur_len else 0) + plain
    if cur:
        lines.append(cur)
    return lines


def _strip_markup(s: str) -> str:
    from rich.text import Text

    return Text.from_markup(s).plain
