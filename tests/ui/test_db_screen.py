"""The `anubis db` screen, driven with Pilot on rows of the committed recordings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from anubis_tui.analysis import db
from anubis_tui.analysis.results import rows_of
from anubis_tui.recording.reader import load
from anubis_tui.ui.db import make_db_app

REC = Path(__file__).resolve().parents[2] / "recordings"
FILES = ("vm-2core-cpu-gemma270m.msgpack", "h200-cuda-gemma270m-knobs.msgpack")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [r for f in FILES for r in rows_of(load(REC / f), REC / f)]


async def until(pilot, pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.05)


def shown_ids(app) -> list[str]:
    t = app.query_one(DataTable)
    return [t.coordinate_to_cell_key((i, 0)).row_key.value for i in range(t.row_count)]


async def test_table_by_class_sorts_and_details(rows: list[dict]) -> None:
    app = make_db_app(rows)
    async with app.run_test(size=(80, 24)) as pilot:  # the smallest terminal it must fit
        await until(pilot, lambda: app.query_one(DataTable).row_count == len(rows))
        ids = shown_ids(app)
        labels = [app.labels[i] for i in ids]
        # rows stay grouped by class: each class's rows are contiguous
        assert len({lab for lab in labels}) == sum(
            1 for i, lab in enumerate(labels) if i == 0 or labels[i - 1] != lab
        )
        # within a class, by J/token (the default sort), rows without it last
        for cid, _ in db.by_class(rows).items():
            mine = [i for i in ids if app.rows[i]["class_id"] == cid]
            vals = [db.value(app.rows[i], "energy_per_output_token_j") for i in mine]
            have = [v for v in vals if v is not None]
            assert have == sorted(have) and vals[: len(have)] == have
        detail = str(app.query_one("#detail").render())
        first = app.rows[ids[0]]
        assert first["row_id"] in detail and "J/token" in detail and "[" in detail
        await pilot.press("down")
        await until(pilot, lambda: shown_ids(app)[1] in str(app.query_one("#detail").render()))
        await pilot.press("r")  # reversed: the highest J/token first within each class
        await until(pilot, lambda: "reversed" in app.sub_title)
        ids_r = shown_ids(app)
        gpu = [i for i in ids_r if app.rows[i]["class"]["hardware"]["gpus"]]
        by_class = [i for i in gpu if app.rows[i]["class_id"] == app.rows[gpu[0]]["class_id"]]
        vals = [db.value(app.rows[i], "energy_per_output_token_j") for i in by_class]
        assert vals == sorted(vals, reverse=True)
        await pilot.press("s")  # next column: W
        await until(pilot, lambda: "then W" in app.sub_title)


async def test_enter_returns_the_rows_recording(rows: list[dict]) -> None:
    app = make_db_app(rows)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.query_one(DataTable).row_count == len(rows))
        await pilot.press("enter")
    rid = app.selected_row_id
    assert app.return_value == app.rows[rid]["provenance"]["recording_path"]
    assert Path(app.return_value).is_file()


async def test_a_row_whose_recording_is_gone_says_so(rows: list[dict]) -> None:
    gone = json.loads(json.dumps(rows))
    for r in gone:
        r["provenance"]["recording_path"] = "/nonexistent/rec.msgpack"
    app = make_db_app(gone)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.query_one(DataTable).row_count == len(gone))
        await pilot.press("enter")
        await until(pilot, lambda: any("not found" in str(n.message) for n in app._notifications))
        assert app.is_running


def test_headless_db_modules_do_not_import_textual() -> None:
    code = (
        "import sys\n"
        "import anubis_tui.analysis.db, anubis_tui.analysis.results, anubis_tui.cli.db\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual','rich'))))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""
