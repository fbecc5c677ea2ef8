"""Every key leaves the app right: each test presses keys, then reads the screen and the recording.

The inference worker here is `bench/ui_cost.py`'s synthetic one (``$ANUBIS_WORKER_CMD``): the
worker's own protocol, `Sender` and `Control`, at a set token rate, with no model. The real
worker's part (llama.cpp's batch threads) is tested with the model in `test_tmux_e2e.py`.
"""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from anubis_tui.analysis.report import report
from anubis_tui.config import Config
from anubis_tui.inference.models import default_model, read_gguf
from anubis_tui.inference.worker import Spec
from anubis_tui.recording.reader import load, read_all
from anubis_tui.records import Event, Footer, Sample, Tokens
from anubis_tui.ui.app import LiveOptions, make_app
from anubis_tui.ui.screens import HelpScreen
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
SIZE = (80, 24)


async def until(pilot, pred, timeout: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await pilot.pause(0.1)


def shown(app, wid: str) -> str:
    return app.query_one(wid).shown()


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def synthetic(monkeypatch, tmp_path):
    """A live app's options: the synthetic worker at 300 decode tok/s, an empty machine."""
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    monkeypatch.setenv(
        "ANUBIS_WORKER_CMD",
        f"{sys.executable} {ROOT / 'bench' / 'ui_cost.py'} --synthetic-worker 300",
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    model = default_model()

    def options(**kw) -> LiveOptions:
        spec = Spec(model=str(model), t0_ns=0, threads=2, max_tokens=64)
        return LiveOptions(spec=spec, model=read_gguf(model), log_path=tmp_path / "w.log", **kw)

    return options


async def test_plus_undoes_minus_and_a_refusal_says_where_the_rate_stays(synthetic, tmp_path):
    rec = tmp_path / "rate.msgpack"
    app = make_app(Config(), live=synthetic(record_path=str(rec)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.session is not None and app.state.tokens > 0, what="start")
        await until(pilot, lambda: "/10 Hz" in shown(app, "#monitor"), 5)
        await pilot.press("minus")
        await until(pilot, lambda: "/5 Hz" in shown(app, "#monitor"), 5, "5 Hz on screen")
        await pilot.press("plus")  # back to the default, whatever the sources' own rate
        await until(pilot, lambda: "/10 Hz" in shown(app, "#monitor"), 5, "10 Hz again")
        assert app.session.rate_hz == 10
        await pilot.press("plus")
        await until(pilot, lambda: len(notes(app)) >= 3, 5, "third notice")
        last = notes(app)[-1]
        if app.session.rate_hz == 10:  # the sources here update slower than 20 Hz: refused
            assert last.startswith("sampling stays at 10 Hz: the sources here update at most")
            assert "20 Hz would only repeat their values" in last
        else:
            assert last == "sampling at 20 Hz"
        await pilot.press("q")
    records, _ = read_all(rec)
    asked = [
        (e.payload["ok"], e.payload["message"])
        for e in records
        if isinstance(e, Event) and e.kind == "command" and e.payload.get("cmd") == "rate"
    ]
    assert asked[:2] == [(True, "sampling at 5 Hz"), (True, "sampling at 10 Hz")]


async def test_a_recording_started_with_r_holds_and_reports_only_its_own_time(
    synthetic, tmp_path, monkeypatch
):
    monkeypatch.setenv("ANUBIS_RECORD_DIR", str(tmp_path / "recs"))
    app = make_app(Config(record_dir=str(tmp_path / "recs")), live=synthetic())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.session is not None and app.state.tokens > 0, what="start")
        await pilot.pause(3.0)  # the session runs a while before r
        await pilot.press("r")
        await until(pilot, lambda: app.session.recording is not None, 10, "recording")
        path = app.session.recording
        await until(pilot, lambda: "● rec" in app.query_one("#title").render().plain, 5)
        started = app.state.t / 1e9
        await pilot.pause(2.5)
        await pilot.press("r")
        await until(pilot, lambda: app.session.recording is None, 10, "stopped")
        await until(pilot, lambda: any("recording saved" in n for n in notes(app)), 5)
        await pilot.press("q")
    assert app.recorded == [path]  # what the CLI names at quit: this file, which exists
    records, recovery = read_all(path)
    assert not recovery.truncated
    footer = records[-1]
    assert isinstance(footer, Footer)
    own = footer.totals
    assert own["samples"] == sum(isinstance(r, Sample) for r in records)
    assert own["tokens_decode"] == sum(
        r.count for r in records if isinstance(r, Tokens) and r.phase == "decode"
    )
    r = report(load(path))
    assert started > 3.0
    assert 1.5 < r["duration_s"] < 5.0, r["duration_s"]  # the file's 2.5 s, not the session's


async def test_t_sets_decode_and_batch_threads_and_the_screen_and_recording_say_so(
    synthetic, tmp_path
):
    rec = tmp_path / "threads.msgpack"
    app = make_app(Config(), live=synthetic(record_path=str(rec)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.session is not None and app.state.tokens > 0, what="start")
        knobs = re.compile(r"t/T (threads|thr) (\d+)")  # the label is short at 80 columns

        def threads() -> str | None:
            m = knobs.search(shown(app, "#knobs"))
            return m.group(2) if m else None

        await until(pilot, lambda: threads() == "2", 10)
        await pilot.press("t")
        await until(pilot, lambda: threads() == "1", 10, "threads 1 shown")
        await until(pilot, lambda: "threads=1," in shown(app, "#profiler"), 10, "its segment")
        await until(pilot, lambda: any(e.kind == "threads" for e in app.state.events), 10)
        await pilot.press("q")
    records, _ = read_all(rec)
    knob = next(r for r in records if isinstance(r, Event) and r.kind == "knob")
    assert knob.payload == {"name": "threads", "value": 1, "previous": 2, "threads_batch": 1}
    ev = next(r for r in records if isinstance(r, Event) and r.kind == "threads")
    assert ev.payload == {"n": 1, "threads_batch": 1}


async def test_tokens_reach_the_app_in_batches_whatever_the_rate(synthetic, tmp_path):
    """At 300 tok/s in requests of 64 tokens: decode Tokens records every ≥ 50 ms within a
    request (its last partial batch aside), and the app folds what came once per frame."""
    rec = tmp_path / "batches.msgpack"
    app = make_app(Config(), live=synthetic(record_path=str(rec)))
    folds: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        fold = app.state.consume_many
        app.state.consume_many = lambda recs: (folds.append(len(recs)), fold(recs))[1]
        await until(pilot, lambda: app.state.requests >= 6, 30, "six requests")
        await pilot.press("q")
    records, _ = read_all(rec)
    dec = [r for r in records if isinstance(r, Tokens) and r.phase == "decode"]
    by_req: dict[int, list[Tokens]] = {}
    for r in dec:
        by_req.setdefault(r.request, []).append(r)
    for batches in by_req.values():
        for r in batches[:-1]:  # every batch but a request's last spans ≥ 50 ms
            assert r.t - r.t_first >= 50_000_000, (r.t - r.t_first) / 1e6
    assert sum(r.count for r in dec) > 6 * 60
    assert max(folds) > 1  # several records folded in one frame, under one lock


async def test_help_shows_brackets_literally_and_scrolls_at_80x24():
    app = make_app(Config(), live=LiveOptions(autostart=False))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), 5)
        help_screen = app.screen
        out = Console(width=70, file=io.StringIO(), record=True)
        out.print(help_screen.help_text())
        lines = out.export_text().splitlines()
        keys = {ln.split()[0] for ln in lines if ln.startswith("  ") and ln.split()}
        assert {"[", "]", "?", "+", "-", "t", "T", "o"} <= keys, keys
        assert any("the running profiler samples slower" in ln for ln in lines)
        scroller = help_screen.query_one("#help")
        assert scroller.max_scroll_y > 0  # longer than 24 lines: it scrolls
        await pilot.press("end")
        await until(pilot, lambda: scroller.scroll_y == scroller.max_scroll_y, 5, "scrolled")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), 5)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_labels_keep_their_method_and_the_knobs_strip_one_line(synthetic, size):
    app = make_app(Config(), live=synthetic())
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.session is not None and app.state.tokens > 0, what="start")
        await until(pilot, lambda: "J/tok" in shown(app, "#power"), 15)
        power = shown(app, "#power").splitlines()
        for line in power[:3]:  # system W, J/token, energy: each keeps est. or meas.
            assert line.rstrip().endswith(("est.", "meas.")), power
        knobs = shown(app, "#knobs").splitlines()
        assert (knobs[0].startswith("knobs") and "threads" in knobs[0]) or "t/T" in knobs[0]
        assert len(knobs) <= 3
        panels = app.query_one("#panels").size.height
        assert panels >= (12 if size[1] == 24 else 30)  # the panels grow with the terminal
        await pilot.press("q")


@pytest.mark.slow
async def test_s_off_returns_the_worker_to_plain(tmp_path, monkeypatch):
    """The real worker under real scalene: s on, s off, and the worker runs plain again."""
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = default_model()
    rec = tmp_path / "scalene.msgpack"
    spec = Spec(model=str(model), t0_ns=0, threads=1, max_tokens=32)
    opts = LiveOptions(
        spec=spec, model=read_gguf(model), log_path=tmp_path / "w.log", record_path=str(rec)
    )
    app = make_app(Config(), live=opts)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.tokens > 10 and app.session is not None, 120)
        await pilot.press("s")
        await until(pilot, lambda: "scalene@" in shown(app, "#profiler"), 180, "scalene on")
        await pilot.press("s")
        await until(pilot, lambda: "scalene off, worker plain again" in notes(app), 180, "off")
        await until(pilot, lambda: shown(app, "#profiler").startswith("baseline"), 30)
        await pilot.press("q")
    records, _ = read_all(rec)
    loads = [r for r in records if isinstance(r, Event) and r.kind == "model_loaded"]
    assert [r.payload["under_scalene"] for r in loads] == [False, True, False]
