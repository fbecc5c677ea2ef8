"""`anubis db`: the results database as a sortable table by class, with a detail view.

The rows are read before the app starts (the app does no I/O); `enter` leaves
the app with the row's recording path as its return value, and the command
replays it, then comes back here with the same row selected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from anubis_tui.analysis import db

# Column key, title, the value a row sorts on.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("setting", "setting"),
    ("tps", "tok/s"),
    ("jpt", "J/tok"),
    ("w", "W"),
    ("c", "°C"),
    ("flags", "flags"),
    ("class", "class"),
)
SETTING_WIDTH = 26
_FIG = {"tps": "decode_tokens_per_s", "jpt": "energy_per_output_token_j", "w": "power_w"}


def _num(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def detail(row: dict[str, Any], setting: str) -> str:
    """The detail view's text: class, setting, every figure with n and interval, flags and
    where the row came from."""
    lines = [
        f"{setting}  ·  row {row['row_id']}  ·  class {row['class_id']} "
        f"({db.class_label(row.get('class') or {})})",
    ]
    figs = []
    for key, (label, _) in db.RANKABLE.items():
        f = row["figures"].get(key) or {}
        c = db.ci(row, key)
        figs.append(
            f"{label} {_num(db.value(row, key))}"
            + (f" [{c[0]:.4g}–{c[1]:.4g}]" if c else "")
            + f" n={f.get('n', 0)}"
        )
    lines.append("  ".join(figs[:4]))
    lines.append("  ".join(figs[4:]))
    st = row.get("steady_state") or {}
    lines.append(
        f"max {_num(row.get('temperature_max_c'), 3)} °C  ·  idle "
        f"{_num(row.get('idle_power_w'))} W  ·  steady: {st.get('reason', '—')}  ·  throttled: "
        + (", ".join(row.get("throttled") or []) or "no")
    )
    if row.get("flags"):
        lines.append("flagged (not ranked first): " + "; ".join(row["flags"]))
    p = row["provenance"]
    lines.append(
        f"{p.get('recording_path')}  sha256 {str(p.get('recording_sha256'))[:12]}  "
        f"anubis {p.get('anubis_version')}  enter: replay"
    )
    return "\n".join(lines)


class DbApp(App[str]):
    """The results table; returns the selected row's recording path when `enter` is pressed."""

    CSS_PATH = "styles/db.tcss"
    TITLE = "anubis results"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="db_quit"),
        Binding("enter", "replay", "Replay", id="db_replay"),
        Binding("s", "sort_next", "Sort", id="db_sort"),
        Binding("r", "reverse", "Reverse", id="db_reverse"),
    ]

    def __init__(self, rows: list[dict[str, Any]], selected: str | None = None) -> None:
        super().__init__()
        self.rows = {r["row_id"]: r for r in rows}
        self.texts: dict[str, str] = {}
        for rs in db.by_class(rows).values():
            self.texts.update(db.setting_texts(rs))
        self.labels = {r["row_id"]: db.class_label(r.get("class") or {}) for r in rows}
        self.selected_row_id = selected
        self.sort_col = 2  # J/token
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        """Header, the rows table, the detail of the row under the cursor, footer."""
        yield Header()
        yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
        yield Static(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        """The columns (`COLUMNS`), the rows by class then J/token, the cursor on the
        selected row."""
        t = self.query_one(DataTable)
        for key, title in COLUMNS:
            t.add_column(title, key=key)
        self._fill()
        t.focus()

    def _sort_value(self, rid: str, col: str) -> Any:
        r = self.rows[rid]
        if col in _FIG:
            v = db.value(r, _FIG[col])
            return (v is None, v if v is not None else 0.0)
        if col == "c":
            v = r.get("temperature_max_c")
            return (v is None, v or 0.0)
        if col == "flags":
            return (len(r.get("flags") or []), 0.0)
        return (False, self.texts[rid] if col == "setting" else self.labels[rid])

    def order(self) -> list[str]:
        """Row ids as shown: by class, then by the sort column (reversed on request; a row
        without the figure last either way)."""
        col = COLUMNS[self.sort_col][0]
        out: list[str] = []
        classes = {r["class_id"]: self.labels[i] for i, r in self.rows.items()}
        for cid in sorted(classes, key=lambda c: (classes[c], c)):
            ids = [i for i, r in self.rows.items() if r["class_id"] == cid]
            have = [i for i in ids if not self._sort_value(i, col)[0]]
            missing = [i for i in ids if self._sort_value(i, col)[0]]
            have.sort(key=lambda i: self._sort_value(i, col)[1], reverse=self.sort_reverse)
            out += have + missing
        return out

    def _fill(self) -> None:
        """(Re)build the table in the current order, keeping the selected row under the cursor."""
        t = self.query_one(DataTable)
        keep = self.selected_row_id
        t.clear()
        last = None
        for rid in self.order():
            r = self.rows[rid]
            # the class once, on its first row: the rows under it are its members
            first = r["class_id"] != last
            last = r["class_id"]
            setting = self.texts[rid]
            if len(setting) > SETTING_WIDTH:
                setting = setting[: SETTING_WIDTH - 1] + "…"
            t.add_row(
                setting,
                _num(db.value(r, _FIG["tps"])),
                _num(db.value(r, _FIG["jpt"])),
                _num(db.value(r, _FIG["w"])),
                _num(r.get("temperature_max_c"), 3),
                "; ".join(r.get("flags") or []) or "ok",
                self.labels[rid] if first else "",
                key=rid,
            )
        if keep is not None and keep in self.rows:
            t.move_cursor(row=t.get_row_index(keep))
        self.sub_title = f"by class, then {COLUMNS[self.sort_col][1]}" + (
            " (reversed)" if self.sort_reverse else ""
        )
        self._show()

    def _show(self) -> None:
        rid = self._current()
        text = detail(self.rows[rid], self.texts[rid]) if rid else "no row"
        self.query_one("#detail", Static).update(text)

    def _current(self) -> str | None:
        t = self.query_one(DataTable)
        if not t.row_count:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        return key if key in self.rows else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The row under the cursor is shown in the detail view and kept as selected."""
        self.selected_row_id = event.row_key.value
        self._show()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row: replay its recording (`action_replay`)."""
        self.action_replay()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column's header sorts by it; a second click reverses."""
        keys = [k for k, _ in COLUMNS]
        col = keys.index(str(event.column_key.value))
        if col == self.sort_col:
            self.sort_reverse = not self.sort_reverse
        self.sort_col = col
        self._fill()

    def action_sort_next(self) -> None:
        """s: sort by the next column (within each class)."""
        self.sort_col = (self.sort_col + 1) % len(COLUMNS)
        self._fill()

    def action_reverse(self) -> None:
        """r: reverse the sort."""
        self.sort_reverse = not self.sort_reverse
        self._fill()

    def action_replay(self) -> None:
        """enter: leave the app with the row's recording path (the command replays it);
        a recording no longer on disk is a notification instead."""
        rid = self._current()
        if rid is None:
            return
        path = self.rows[rid]["provenance"].get("recording_path")
        if not path or not Path(str(path)).is_file():
            self.notify(f"recording not found: {path}", severity="error")
            return
        self.selected_row_id = rid
        self.exit(str(path))


def make_db_app(rows: list[dict[str, Any]], selected: str | None = None) -> DbApp:
    """The one factory the CLI and the tests use."""
    return DbApp(rows, selected=selected)
