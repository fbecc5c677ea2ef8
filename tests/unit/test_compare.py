"""`anubis compare`: identity refusals, no-baseline refusals, three outcomes, runs or chunks."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from anubis_tui.analysis.compare import (
    INCONCLUSIVE,
    NO_REGRESSION,
    REGRESSION,
    compare,
)
from anubis_tui.analysis.segments import effective_n, lag1
from anubis_tui.recording.reader import load
from tests import synthetic
from tests.conftest import ANUBIS, cli_env

KNOBS = {"threads": 2, "gpu_layers": 0, "n_batch": 512, "flash_attn": False, "kv_type": "f16"}


def _tps(base: int, n: int, seed: int, spread: int = 1) -> list[int]:
    """n chunk rates around `base`, each off by a random multiple of 20 (±20·spread)."""
    rng = random.Random(seed)
    return [base + 20 * rng.randint(-spread, spread) for _ in range(n)]


def _write(tmp_path, name, rates, watts=100.0, prof=None, knobs=None, seed=0):
    path = tmp_path / f"{name}.msgpack"
    phases = [(5.0, watts, float(r), prof, 100.0 if prof else None) for r in rates]
    synthetic.write(path, phases, initial_knobs=knobs or KNOBS, jitter=0.01, seed=seed)
    return path


def _records(path):
    return load(str(path)).records


def _row(r, metric):
    return next(x for x in r["rows"] if x["metric"] == metric)


def test_a_against_a_is_no_regression_and_a_10_percent_slowdown_is_one(tmp_path):
    a = _records(_write(tmp_path, "a", _tps(400, 12, 1), seed=1))
    a2 = _records(_write(tmp_path, "a2", _tps(400, 12, 2), seed=2))
    slow = _records(_write(tmp_path, "slow", _tps(360, 12, 3), seed=3))
    same = compare([a], [a2], 5.0)
    assert same["unit"] == "chunks" and same["outcome"] == NO_REGRESSION, same["rows"]
    worse = compare([a], [slow], 5.0)
    tps = _row(worse, "decode_tps")
    assert worse["outcome"] == REGRESSION and "decode tok/s" in worse["failed"]
    assert tps["change_pct"] == pytest.approx(-10.0, abs=2.5)
    assert tps["low_pct"] < tps["change_pct"] < tps["high_pct"]
    # power is shown, never gated: a faster setting may rightly draw more
    assert not _row(worse, "power_w")["gated"]


def test_an_interval_straddling_the_threshold_is_inconclusive_and_says_what_would_decide(tmp_path):
    a = _records(_write(tmp_path, "a", _tps(400, 4, 5, spread=2), seed=5))
    b = _records(_write(tmp_path, "b", _tps(380, 4, 6, spread=2), seed=6))
    r = compare([a], [b], 5.0)
    tps = _row(r, "decode_tps")
    assert tps["verdict"] == INCONCLUSIVE, tps
    assert r["outcome"] == INCONCLUSIVE
    assert "s of baseline a side" in tps["need"]


def test_several_recordings_a_side_make_runs_the_unit_and_their_drift_the_noise(tmp_path):
    # each run sits at its own level (drift between runs); chunks inside a run are steady
    levels_a, levels_b = [400, 440, 380], [420, 380, 440]
    a = [_records(_write(tmp_path, f"a{i}", [v] * 4, seed=i)) for i, v in enumerate(levels_a)]
    b = [_records(_write(tmp_path, f"b{i}", [v] * 4, seed=9 + i)) for i, v in enumerate(levels_b)]
    r = compare(a, b, 3.0)
    tps = _row(r, "decode_tps")
    assert r["unit"] == "runs" and tps["a"]["n"] == 3 and tps["b"]["n"] == 3
    # the run-to-run spread (±~8 %) is in the interval: it cannot call 3 % either way
    assert tps["verdict"] == INCONCLUSIVE and "runs a side" in tps["need"]
    # one run against three: the single run borrows the others' run-to-run spread
    one = compare(a[:1], b, 3.0)
    assert one["unit"] == "runs" and _row(one, "decode_tps")["low_pct"] is not None


def test_drifting_chunks_count_as_fewer_samples_than_independent_ones():
    rng = random.Random(0)
    iid = [rng.gauss(0, 1) for _ in range(200)]
    walk = [sum(iid[: i + 1]) for i in range(200)]  # strongly autocorrelated
    assert abs(lag1(iid)) < 0.2 and lag1(walk) > 0.9
    assert effective_n(iid) > 120
    assert effective_n(walk) < 10
    assert effective_n([1.0, 2.0]) == 2  # too short to estimate: taken as independent


def test_a_drifting_run_gets_a_wider_interval_than_the_same_chunks_shuffled(tmp_path):
    ramp = [400 + 20 * (i // 3) for i in range(12)]  # 400 … 460 in steps: drift
    shuffled = list(ramp)
    random.Random(4).shuffle(shuffled)
    ref = _records(_write(tmp_path, "ref", _tps(430, 12, 7), seed=7))
    drift = compare([ref], [_records(_write(tmp_path, "d", ramp, seed=8))], 5.0)
    mixed = compare([ref], [_records(_write(tmp_path, "m", shuffled, seed=8))], 5.0)
    width = [
        _row(x, "decode_tps")["high_pct"] - _row(x, "decode_tps")["low_pct"] for x in (drift, mixed)
    ]
    assert width[0] > 1.3 * width[1]


def test_a_side_that_is_all_profiler_has_no_baseline_never_a_verdict(tmp_path):
    a = _records(_write(tmp_path, "a", [400] * 6))
    prof = _records(_write(tmp_path, "p", [260] * 6, prof="py-spy"))
    r = compare([a], [prof], 5.0)
    assert r["outcome"] == "no baseline" and r["no_baseline"] == {"a": [], "b": [0]}


def _cli(*args):
    return subprocess.run(
        [*ANUBIS, "compare", *map(str, args)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exit_codes_one_per_outcome_and_refusals(tmp_path):
    a = _write(tmp_path, "a", _tps(400, 12, 1), seed=1)
    a2 = _write(tmp_path, "a2", _tps(400, 12, 2), seed=2)
    slow = _write(tmp_path, "slow", _tps(360, 12, 3), seed=3)
    short = _write(tmp_path, "short", _tps(380, 3, 6, spread=2), seed=6)
    fa = _write(tmp_path, "fa", _tps(400, 12, 2), seed=2, knobs={**KNOBS, "flash_attn": True})
    prof = _write(tmp_path, "prof", [260] * 6, prof="py-spy")

    ok = _cli(a, a2)
    assert ok.returncode == 0 and "NO REGRESSION" in ok.stdout, ok.stdout + ok.stderr
    bad = _cli(a, slow)
    assert bad.returncode == 1 and "REGRESSION: decode tok/s" in bad.stdout
    unsure = _cli(a, short)
    assert unsure.returncode == 3 and "INCONCLUSIVE" in unsure.stdout and "needs" in unsure.stdout

    diff = _cli(a, fa)
    assert diff.returncode == 2 and diff.stdout == ""
    assert "setting.flash_attn: False (A) vs True (B)" in diff.stderr
    allowed = _cli(a, fa, "--allow-different", "setting.flash_attn", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["allowed_different"] == ["setting.flash_attn"]

    nob = _cli(a, prof)
    assert nob.returncode == 2 and "no baseline" in nob.stderr and "prof.msgpack" in nob.stderr
    typo = _cli(a, a2, "--allow-different", "runtime.llama")
    assert typo.returncode == 2 and "not an identity field" in typo.stderr

    runs = _cli(a, a2, "--vs", slow, short, "--json")
    assert json.loads(runs.stdout)["unit"] == "runs", runs.stderr
    for out in (ok, bad, unsure, diff, allowed, nob, typo, runs):
        assert "Traceback" not in out.stderr


def test_cli_refuses_the_vm_against_the_h200_naming_each_difference():
    r = _cli(
        "recordings/vm-2core-cpu-gemma270m.msgpack", "recordings/h200-cuda-gemma270m-knobs.msgpack"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert any("hardware.gpus: none (A) vs NVIDIA H200 (B)" in x for x in lines)
    assert any("runtime.backends" in x for x in lines)
    assert any("measurement.system_power" in x for x in lines)
    assert lines[-1].startswith("anubis: compare: refused")
