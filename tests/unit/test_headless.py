"""`make_session`, the control surface as types, the headless runner and the agent's loop.

No model: sensors are a fake source (a real `Sampler` and `Bus` around it), and
inference, where a test needs it, is `bench/ui_cost.py`'s synthetic worker
(the worker's own protocol, through ``$ANUBIS_WORKER_CMD``) or a program that
exits at once (a worker that dies).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from anubis_tui.config import Config
from anubis_tui.inference.models import default_model
from anubis_tui.inference.worker import Spec
from anubis_tui.plugins import PluginError
from anubis_tui.recording.reader import read_all
from anubis_tui.recording.writer import RecordingWriter, open_output
from anubis_tui.records import Channel, Event, Footer, Sample
from anubis_tui.session.agent import AgentLoop, parse
from anubis_tui.session.core import Session
from anubis_tui.session.factory import make_session
from anubis_tui.session.headless import Headless, HeadlessError
from anubis_tui.session.plan import parse_plan
from anubis_tui.session.remote import RemoteSession
from anubis_tui.session.surface import Commands, ControlSurface
from anubis_tui.sources.base import ReadGroup, Source

ROOT = Path(__file__).resolve().parents[2]


class Fake(Source):
    @classmethod
    def discover(cls, ctx):
        return []


def fake_sources() -> list[Source]:
    """One GPU power channel at 100 W, readable at any rate."""
    ch = Channel(
        id="fake.power",
        label="fake power",
        source="fake",
        kind="power",
        unit="W",
        scope="gpu",
        method="instant",
        update_period_s=0.0,
    )
    return [Fake(name="fake", available=True, groups=[ReadGroup([ch], lambda t: [100.0], 0.0)])]


def session(tmp_path: Path, spec: Spec | None = None, **kw) -> Session:
    return make_session(
        Config(),
        spec,
        sources=fake_sources(),
        device_knobs=False,
        log_path=tmp_path / "w.log",
        **kw,
    )


def records_of(path: Path) -> list:
    records, _ = read_all(path)
    return records


@pytest.fixture
def synthetic(monkeypatch):
    """A spec whose worker is the synthetic one (300 decode tok/s, no model)."""
    monkeypatch.setenv(
        "ANUBIS_WORKER_CMD",
        f"{sys.executable} {ROOT / 'bench' / 'ui_cost.py'} --synthetic-worker 300",
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return Spec(model=str(default_model()), t0_ns=0, threads=2, max_tokens=32)


# -- make_session -------------------------------------------------------------------------


def test_make_session_configures_the_session_it_returns(tmp_path: Path):
    seen: list = []
    s = session(tmp_path, sinks=[seen.append], rate_hz=5000.0)
    assert isinstance(s, Session)
    assert s.config.rate_hz == 1000.0  # clamped to the sampler's range, not refused here
    assert s.rate_hz == 1000.0
    assert [c.id for c in s.channels][:1] == ["fake.power"]
    s.start()
    s.marker("m")
    s.flush()
    footer = s.stop("test")
    assert any(isinstance(r, Event) and r.kind == "marker" for r in seen)  # the sink got it
    assert isinstance(seen[-1], Footer) or footer.totals["stopped_by"] == "test"


def test_an_export_that_cannot_be_made_raises_or_is_reported(tmp_path: Path):
    with pytest.raises(PluginError, match="--export nothing"):
        session(tmp_path, exports=["nothing"])
    said: list[str] = []
    s = session(tmp_path, exports=["nothing"], on_export_error=said.append)
    assert len(said) == 1 and "no such sink plugin" in said[0]
    assert s.exports == []  # the session runs without it
    s.stop()


def test_stop_closes_the_exports_after_the_bus_drained(tmp_path: Path):
    s = session(tmp_path)
    seen: list = []

    class Export:
        closed_after = -1

        def __call__(self, rec):
            seen.append(rec)

        def close(self):
            Export.closed_after = len(seen)

    s.add_sink(Export())
    s.exports.append(Export())
    s.start()
    s.marker("last")
    s.stop("test")
    assert Export.closed_after == len(seen) > 0  # every record reached it before close


def test_session_and_remote_session_are_the_surfaces_they_claim(tmp_path: Path):
    s = session(tmp_path)
    assert isinstance(s, ControlSurface) and isinstance(s, Commands)
    r = RemoteSession("somehost")
    assert isinstance(r, Commands)  # every command the agent protocol carries
    assert not isinstance(r, ControlSurface)  # plans and sweeps run on the agent's machine
    s.stop()


# -- the headless runner -------------------------------------------------------------------


def recorded(tmp_path: Path, s: Session, name: str = "r.msgpack") -> Path:
    path = tmp_path / name
    assert s.start_recording(str(path)).ok
    return path


def test_a_duration_ends_the_run_with_a_footer(tmp_path: Path):
    s = session(tmp_path)
    path = recorded(tmp_path, s)
    t = time.monotonic()
    with Headless(s) as run:
        ended = run.wait(duration_s=0.6)
    assert ended.reason == "duration" and not ended.job_done
    assert 0.5 <= time.monotonic() - t < 5
    recs = records_of(path)
    assert isinstance(recs[-1], Footer) and recs[-1].totals["stopped_by"] == "duration"
    assert run.footer is not None and run.footer.totals["stopped_by"] == "duration"
    assert any(isinstance(r, Sample) for r in recs)


def test_sigint_ends_the_run_cleanly_and_the_old_handler_comes_back(tmp_path: Path):
    s = session(tmp_path)
    path = recorded(tmp_path, s)
    before = signal.getsignal(signal.SIGINT)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with Headless(s) as run:
        ended = run.wait()  # no duration: only the signal ends it
    assert ended.reason == "signal"
    assert records_of(path)[-1].totals["stopped_by"] == "signal"
    assert signal.getsignal(signal.SIGINT) is before


def test_a_recording_that_fails_ends_the_run(tmp_path: Path):
    s = session(tmp_path)
    with open("/dev/full", "wb") as full:  # every write: ENOSPC, as a full disk
        s.start_recording(str(tmp_path / "full.msgpack"), out=full)
        with Headless(s) as run:
            ended = run.wait(duration_s=30)
    assert ended.reason == "recording error"
    assert s.recording_error and "No space left" in s.recording_error


def test_a_job_that_returns_ends_the_run_under_its_name_and_its_error_is_kept(tmp_path: Path):
    s = session(tmp_path)
    with Headless(s) as run:
        ended = run.wait(lambda stop: None, "sweep", duration_s=30)
    assert (ended.reason, ended.job_done, ended.job_error) == ("sweep", True, None)
    s = session(tmp_path)
    with Headless(s) as run:
        ended = run.wait(lambda stop: "no treatment can run here", "sweep")
    assert (ended.reason, ended.job_error) == ("error", "no treatment can run here")

    def boom(stop):
        raise RuntimeError("deep in a sweep")

    s = session(tmp_path)
    with Headless(s) as run:
        ended = run.wait(boom, "sweep")
    assert ended.reason == "error" and ended.job_error == "RuntimeError: deep in a sweep"


def test_an_exception_in_the_block_still_stops_the_session_with_a_footer(tmp_path: Path):
    s = session(tmp_path)
    path = recorded(tmp_path, s)
    with pytest.raises(ValueError), Headless(s):
        raise ValueError("nothing to sweep")
    assert records_of(path)[-1].totals["stopped_by"] == "error"


def test_a_session_that_cannot_start_is_one_line_and_a_footer(tmp_path: Path, synthetic):
    (tmp_path / "w.log").mkdir()  # the worker's log cannot be made there
    s = session(tmp_path, synthetic)
    path = recorded(tmp_path, s)
    with pytest.raises(HeadlessError) as e, Headless(s):
        pass
    assert "\n" not in str(e.value) and str(e.value)
    assert records_of(path)[-1].totals["stopped_by"] == "start failed"


def test_a_worker_that_dies_ends_a_run_without_a_plan(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ANUBIS_WORKER_CMD", f"{sys.executable} -c 'import sys; sys.exit(3)'")
    s = session(tmp_path, Spec(model=str(default_model()), t0_ns=0))
    with Headless(s) as run:
        ended = run.wait(duration_s=60)
    assert ended.reason == "worker"
    assert s.worker_error and "exit 3" in s.worker_error


def test_a_plan_runs_its_steps_through_the_surface_and_ends_the_run(tmp_path: Path, synthetic):
    s = session(tmp_path, synthetic)
    path = recorded(tmp_path, s)
    said: list[str] = []
    with Headless(s, say=said.append) as run:
        ended = run.wait(run.plan(parse_plan("threads=1:0.5,threads=2:0.5")), "plan")
    assert ended.reason == "plan", said
    assert [m.split(":")[0] for m in said] == [
        "plan threads=1 for 0.5 s",
        "plan threads=2 for 0.5 s",
    ]
    knobs = [
        r.payload["value"]
        for r in records_of(path)
        if isinstance(r, Event) and r.kind == "knob" and r.payload["name"] == "threads"
    ]
    assert knobs == [1, 2]
    assert records_of(path)[-1].totals["stopped_by"] == "plan"


# -- the agent's loop ------------------------------------------------------------------------


def test_the_agent_loop_acks_in_order_runs_stop_at_once_and_beats(tmp_path: Path):
    s = session(tmp_path)
    stream_path = tmp_path / "stream.msgpack"
    r, w = os.pipe()
    run = Headless(s, label="agent", signal_names=True)
    stream = RecordingWriter(open_output(str(stream_path)), s.header)
    s.add_sink(stream.submit)
    cmds = [
        {"id": 1, "cmd": "marker", "label": "a"},
        {"id": 2, "cmd": "rate", "hz": "fast"},  # refused: a failed ack, in its place
        {"id": 3, "cmd": "marker", "label": "b"},
    ]
    with run:
        loop = AgentLoop(s, stream, run.end, run.stop, fd_in=r)
        loop.start()
        os.write(w, b"".join(msgpack.packb(c) for c in cmds))
        threading.Timer(1.5, os.write, (w, msgpack.packb({"id": 4, "cmd": "stop"}))).start()
        ended = run.wait(watch_worker=False, watch_recording=False, tick=loop.beat)
    stream.close(run.footer)
    os.close(w)
    os.close(r)
    assert ended.reason == "stop command"
    recs = records_of(stream_path)
    acks = [x.payload for x in recs if isinstance(x, Event) and x.kind == "ack"]
    assert [(a["id"], a["ok"]) for a in acks] == [(1, True), (2, False), (3, True), (4, True)]
    assert "hz must be a number" in acks[1]["message"]
    assert any(isinstance(x, Event) and x.kind == "heartbeat" for x in recs)
    assert recs[-1].totals["stopped_by"] == "agent: stop command"


def test_a_command_is_checked_once_and_a_stop_is_known_by_its_check():
    assert parse({"id": 1, "cmd": "stop"}).is_stop
    bad = parse({"id": 1, "cmd": "stop", "now": True})
    assert not bad.is_stop and bad.command is None and "unknown key now" in bad.args
    cid, name, c, args = parse({"id": 9, "cmd": "marker", "label": "x"})  # still a 4-tuple
    assert (cid, name, args) == (9, "marker", {"label": "x"}) and c is not None
