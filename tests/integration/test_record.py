"""`anubis record` / `report` / `export` as a user runs them, with the real model."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from anubis_tui.recording.reader import ReaderError, load, read_all, read_bytes
from anubis_tui.records import Footer, Sample, Tokens
from tests.conftest import ANUBIS, cli_env

pytestmark = pytest.mark.slow


def run(*args, tree="jetson_orin_jp6", timeout=120, **env):
    return subprocess.run(
        [*ANUBIS, *args],
        capture_output=True,
        env=cli_env(tree, **env),
        timeout=timeout,
        check=False,
    )


def wait_for_samples(path, n, timeout=60.0):
    """Until the recording being written at `path` holds `n` Samples (its writer flushes
    every 0.5 s), however long the start takes on a loaded machine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = path.read_bytes() if path.exists() else b""
        try:
            records, _ = read_bytes(data) if data else ([], None)
        except ReaderError:  # caught in the middle of the header's write
            records = []
        if sum(isinstance(r, Sample) for r in records) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} held fewer than {n} samples after {timeout:g} s")


def test_record_then_report_with_real_model_on_a_jetson_tree(tmp_path):
    out = tmp_path / "s.msgpack"
    p = run("record", "--duration", "6", "-o", str(out), "--threads", "1", "--max-tokens", "48")
    assert p.returncode == 0, p.stderr.decode()
    records, recov = read_all(out)
    assert not recov.truncated and isinstance(records[-1], Footer)
    assert (out.with_name("s.msgpack.log")).exists()
    ts = [r.t for r in records[1:]]
    assert ts == sorted(ts), "records are in time order"
    assert any(isinstance(r, Tokens) and r.phase == "decode" for r in records)
    rep = run("report", str(out), "--json")
    assert rep.returncode == 0, rep.stderr.decode()
    r = json.loads(rep.stdout)
    # Behaviour, not speed (a loaded runner decodes slowly): tokens came and were timed.
    assert r["tokens"]["generated"] > 0 and r["tokens"]["decode_tps"] > 0
    # VDD_IN is a static 5.080 V × 1.180 A in the tree: energy is that power integrated
    assert r["energy"]["method"] == "derived" and r["energy"]["integration"] == "trapezoidal"
    rec = load(out)
    # the counter is extended to the recording's edges by up to two reading intervals
    step = float(np.median(np.diff(rec.t)))
    end = int(rec.duration_s * 1e9) + 1
    span = (min(end, rec.t[-1] + 2 * step) - max(0, rec.t[0] - 2 * step)) / 1e9
    assert r["energy"]["joules"] == pytest.approx(5.080 * 1.180 * span, rel=0.03)
    assert r["recovery"]["truncated"] is False
    assert r["sampler"]["rate_hz"] == pytest.approx(10, rel=0.1)
    txt = run("report", str(out))
    assert b"decode" in txt.stdout and b"baseline" in txt.stdout


def test_record_to_stdout_streams_a_readable_recording():
    p = run("record", "--duration", "2", "-o", "-", "--no-model")
    assert p.returncode == 0, p.stderr.decode()
    records, recov = read_bytes(p.stdout)
    assert not recov.truncated
    assert sum(isinstance(r, Sample) for r in records) >= 15


def test_sigint_ends_cleanly_with_a_footer(tmp_path):
    out = tmp_path / "i.msgpack"
    proc = subprocess.Popen(
        [*ANUBIS, "record", "-o", str(out), "--no-model"],
        env=cli_env("intel_laptop"),
        stderr=subprocess.PIPE,
    )
    wait_for_samples(out, 3)  # recording, with its signal handlers in place: not a fixed sleep
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    records, recov = read_all(out)
    assert isinstance(records[-1], Footer) and records[-1].totals["clean"] is True
    assert not recov.truncated


def test_sigkill_leaves_a_file_that_replays_to_within_a_second(tmp_path):
    out = tmp_path / "k.msgpack"
    proc = subprocess.Popen(
        [*ANUBIS, "record", "-o", str(out), "--rate", "20", "--no-model"],
        env=cli_env("intel_laptop"),
    )
    wait_for_samples(out, 20)  # a second of samples on disk before the kill
    killed_at = time.monotonic_ns()
    proc.kill()
    proc.wait(10)
    records, recov = read_all(out)
    assert recov.truncated and not isinstance(records[-1], Footer)
    header = records[0]
    last_t = max(r.t for r in records[1:])
    assert (killed_at - header.t0_monotonic_ns) - last_t < 1_000_000_000


def test_sigint_during_a_worker_relaunch_ends_at_once_with_a_footer(tmp_path):
    """Ctrl-C used to wait out the 2-minute relaunch wait of a plan's scalene step."""
    out = tmp_path / "s.msgpack"
    proc = subprocess.Popen(
        [*ANUBIS, "record", "-o", str(out), "--threads", "2", "--plan", "off:3,scalene@100:30"],
        stderr=subprocess.PIPE,
        env=cli_env("empty_container"),
    )
    assert proc.stderr is not None
    line = b""
    end = time.monotonic() + 90
    while b"plan off" not in line and time.monotonic() < end:
        line = proc.stderr.readline()
    time.sleep(3.5)  # the plan is now starting scalene: a probe, then a relaunch
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert time.monotonic() - t < 15
    records, recovery = read_all(out)
    assert not recovery.truncated and isinstance(records[-1], Footer)
    assert records[-1].totals["stopped_by"] == "signal"
