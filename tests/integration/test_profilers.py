"""Real py-spy and real scalene against the real worker on the default model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from anubis_tui.config import Config
from anubis_tui.inference.models import default_model, read_gguf
from anubis_tui.inference.worker import Spec
from anubis_tui.profilers.pyspy import speedscope_frames
from anubis_tui.profilers.scalene import Scalene, scalene_lines
from anubis_tui.records import Event
from anubis_tui.session import Session
from anubis_tui.sources.base import SysfsRoot
from anubis_tui.sources.registry import discover
from tests.conftest import ANUBIS, FIXTURES, cli_env

pytestmark = pytest.mark.slow


class Events(list):
    def __call__(self, rec):
        if isinstance(rec, Event):
            self.append(rec)

    def wait(self, kind, timeout=60.0, **match):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in list(self):
                if e.kind == kind and all(e.payload.get(k) == v for k, v in match.items()):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {kind} {match}; saw {[e.kind for e in self]}")


@pytest.fixture
def session(tmp_path):
    model = default_model()
    ev = Events()
    sources = discover(
        SysfsRoot(FIXTURES / "empty_container"),
        config={"nvml_module": "absent_module"},
        warn=lambda m: None,
    )
    s = Session(
        Config(),
        spec=Spec(model=str(model), t0_ns=0, threads=1, max_tokens=64),
        model=read_gguf(model),
        sources=sources,
        log_path=tmp_path / "w.log",
        sinks=[ev],
        profiles_dir=tmp_path / "profiles",
    )
    s.start()
    ev.wait("model_loaded")
    yield s, s.profilers, ev
    s.stop()


def test_pyspy_toggle_and_rate_change_make_events_segments_and_a_speedscope(session):
    _s, ctl, ev = session
    out = _s.profiler_toggle("py-spy")
    assert out.ok and out.message.startswith("py-spy on at 100 Hz")
    on = ev.wait("profiler_on", profiler="py-spy")
    assert on.payload["rate_hz"] == 100 and on.payload["mode"] == "nonblocking"
    time.sleep(2.5)
    # hot frames are records: every ~2 s while py-spy runs
    first = ev.wait("profiler_frames", final=False)
    assert first.payload["samples"] > 0  # py-spy's own count while it runs
    end = time.monotonic() + 30
    while time.monotonic() < end:  # the frames come with the first `py-spy dump` snapshot
        live = next(
            (e for e in ev if e.kind == "profiler_frames" and e.payload.get("frames")), None
        )
        if live is not None:
            break
        time.sleep(0.2)
    assert live is not None and live.payload["snapshots"] >= 1 and live.payload["samples"] > 0
    assert _s.profiler_step_rate(+1).message == "py-spy now at 250 Hz"
    rate = ev.wait("profiler_rate", profiler="py-spy")
    assert rate.payload["rate_hz"] == 250 and rate.payload["previous_samples"] > 0
    time.sleep(2.5)
    assert _s.profiler_toggle("py-spy").message.startswith("py-spy off")
    off = ev.wait("profiler_off", profiler="py-spy")
    assert off.payload["samples"] > 0
    final = [e for e in ev if e.kind == "profiler_frames" and e.payload.get("final")]
    assert len(final) == 2 and final[-1].payload["samples"] == off.payload["samples"]
    top = final[-1].payload["frames"]
    assert top and all(0 < f["share"] <= 1 and ":" in f["where"] for f in top)
    cmds = [e for e in ev if e.kind == "command"]
    assert [c.payload["cmd"] for c in cmds] == ["profiler", "profiler_rate", "profiler"]
    assert all(c.payload["ok"] for c in cmds)
    art = Path(off.payload["artifact"])
    frames = speedscope_frames(art)
    assert "DecodeLoop.generate" in frames and "DecodeLoop._decode" in frames
    assert len(list(art.parent.glob("*.speedscope.json"))) == 2  # one per segment
    assert any("decode" in name for name, _ in ctl.pyspy.top)


def test_scalene_relaunches_the_worker_and_toggles_it(session):
    s, ctl, ev = session
    first_pid = s.worker_pid()
    assert ctl.toggle("scalene").startswith("scalene on")
    ev.wait("profiler_ready", profiler="scalene-off")
    on = ev.wait("profiler_on", profiler="scalene")
    loaded = [e for e in ev if e.kind == "model_loaded"][-1]
    assert loaded.payload["under_scalene"] is True and loaded.payload["pid"] != first_pid
    # Let scalene sample real inference, however slowly a loaded runner goes: at least 3 s
    # and two whole requests after it began (a fixed 3 s gave 0 samples beside a model).
    least, end = time.monotonic() + 3, time.monotonic() + 120
    while time.monotonic() < end and (
        time.monotonic() < least
        or sum(1 for e in list(ev) if e.kind == "request_end" and e.t > on.t) < 2
    ):
        time.sleep(0.1)
    assert ctl.toggle("scalene").startswith("scalene off")
    off = ev.wait("profiler_off", profiler="scalene")
    art = Path(off.payload["artifact"])
    end = time.monotonic() + 20
    while not art.exists() and time.monotonic() < end:
        time.sleep(0.2)
    lines = scalene_lines(art)
    worker = next(f for f in lines if f.endswith("worker.py"))
    assert len(lines[worker]) > 10
    found = ev.wait("profiler_frames", profiler="scalene", final=True)
    assert found.payload["samples"] > 0 and found.payload["frames"]
    # py-spy refuses while scalene runs the worker, and says why
    out = s.profiler_toggle("py-spy")
    assert not out.ok and "scalene" in out.message
    assert s.worker_alive()


def test_sigill_is_never_sent_to_a_plain_worker(session):
    s, _ctl, _ev = session
    pid = s.worker_pid()
    sc = Scalene()
    sc.attach(pid, False, 100, Path("/nonexistent.json"))
    assert "not running under scalene" in sc.start(pid, 100, Path("/tmp"))
    time.sleep(0.5)
    os.kill(pid, 0)  # still alive
    assert s.worker_alive()


def test_worker_death_while_profiled_ends_the_segment_at_once(session):
    s, ctl, ev = session
    ctl.toggle("py-spy")
    ev.wait("profiler_on")
    os.kill(s.worker_pid(), signal.SIGKILL)
    died = ev.wait("worker_died", timeout=5)
    off = ev.wait("profiler_off", profiler="py-spy", timeout=5)
    assert off.t - died.t < 3e9 and off.payload["reason"]
    # the segment that holds the death shows no deltas
    from anubis_tui.analysis.segments import SegmentFold

    fold = SegmentFold()
    fold.consume(s.header)
    for e in sorted(ev, key=lambda e: e.t):
        fold.consume(e)
    seg = next(f for f in fold.figures() if f.profiler == "py-spy")
    assert seg.died and seg.delta is None and seg.not_comparable == "worker died"


def test_scalene_that_crashes_here_is_refused_without_touching_the_worker(session, monkeypatch):
    s, _ctl, ev = session
    from anubis_tui.profilers import controller as ctl_mod

    # a launcher that dies at once, as scalene did under llama.cpp on the H100 host
    monkeypatch.setattr(ctl_mod, "scalene_command", lambda r, a: ["/bin/sh", "-c", "exit 139", "x"])
    pid = s.worker_pid()
    t = time.monotonic()
    out = s.profiler_toggle("scalene")
    assert not out.ok and time.monotonic() - t < 10
    assert out.message.startswith("scalene cannot run llama.cpp on this machine")
    assert "exit 139" in out.message and "\n" not in out.message
    assert s.worker_pid() == pid and s.worker_alive()
    assert not [e for e in ev if e.kind in ("worker_restart", "profiler_ready")]


def test_a_relaunch_that_dies_ends_at_once_and_inference_comes_back(session, monkeypatch):
    s, _ctl, ev = session
    from anubis_tui.profilers import controller as ctl_mod

    monkeypatch.setattr(
        ctl_mod, "scalene_command", lambda r, a: ["/bin/sh", "-c", "kill -SEGV $$", "x"]
    )
    monkeypatch.setattr(s, "probe_worker", lambda prefix, env: None)  # as if the probe passed
    t = time.monotonic()
    out = s.profiler_toggle("scalene")
    assert not out.ok and time.monotonic() - t < 30  # not the old 2-minute wait
    assert "plain inference restarted" in out.message
    assert s.worker_alive()
    end = time.monotonic() + 30
    while sum(1 for e in ev if e.kind == "model_loaded") < 2 and time.monotonic() < end:
        time.sleep(0.1)
    restart = [e for e in ev if e.kind == "worker_restart"][-1]
    assert [e for e in ev if e.kind == "model_loaded" and e.t > restart.t]


def test_plan_runs_native_1000hz_and_10hz_nonblocking_as_separate_segments(tmp_path):
    """What each step did, not how fast it ran: the cost figures live in bench/ (a loaded
    runner can leave a step too few tokens for a delta)."""
    out = tmp_path / "sweep.msgpack"
    p = subprocess.run(
        [
            *ANUBIS,
            "record",
            "-o",
            str(out),
            "--threads",
            "2",
            "--plan",
            "off:6,py-spy@1000n:8,off:5,py-spy@10:6,off:4",
        ],
        capture_output=True,
        env=cli_env("empty_container"),
        timeout=240,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(
        subprocess.run(
            [*ANUBIS, "report", str(out), "--json"], capture_output=True, env=cli_env(), check=True
        ).stdout
    )
    segs = {(g["profiler"], g["rate_hz"]): g for g in r["segments"] if g["profiler"]}
    native, light = segs[("py-spy --native", 1000.0)], segs[("py-spy", 10.0)]
    assert native["samples"] and light["samples"]  # both sampled the worker
    assert native["samples"] > light["samples"]  # 100× the rate for about as long
    assert native["profiler_cpu"] > light["profiler_cpu"]
    assert out.with_suffix(".profiles").is_dir()
