"""A real sweep on the default model: py-spy at 10 and 1000 Hz and the threads knob."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from anubis_tui.recording.reader import load
from tests.conftest import ANUBIS, cli_env

pytestmark = pytest.mark.slow


def test_a_short_real_sweep_records_every_step_and_reports_it(tmp_path):
    out = tmp_path / "sweep.msgpack"
    env = cli_env("empty_container")
    r = subprocess.run(
        [*ANUBIS, "sweep", "--profilers", "py-spy", "--rates", "10,1000", "--knob", "threads=1,2",
         "--segment-s", "3", "--repeats", "1", "--warmup-s", "1", "--seed", "3", "-o", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    base_threads = max(1, (os.cpu_count() or 2) // 2)
    other = 2 if base_threads == 1 else 1
    rec = load(str(out))
    kinds = [e.kind for e in rec.events]
    sweep = next(e.payload for e in rec.events if e.kind == "sweep")
    assert sweep["treatments"] == ["py-spy@10", "py-spy@1000", f"threads={other}"]
    assert sweep["seed"] == 3 and sweep["repeats"] == 1
    warm = next(e.payload for e in rec.events if e.kind == "warmup")
    assert warm["reached"] is False and "time bound" in warm["reason"]  # no temperature here
    steps = [e.payload for e in rec.events if e.kind == "sweep_step"]
    assert [s["role"] for s in steps] == ["baseline", "treatment"] * 3 + ["baseline"]
    assert sorted(s["treatment"] for s in steps if s["role"] == "treatment") == sorted(
        sweep["treatments"]
    )
    assert kinds.count("profiler_on") == 2 and kinds.count("knob") == 2  # there and back
    # every py-spy artifact lies beside the recording
    arts = sorted(p.name for p in (tmp_path / "sweep.profiles").iterdir())
    assert len([a for a in arts if a.endswith(".json")]) == 2, arts
    # the report: one row per treatment, and the figure
    png = tmp_path / "sweep.png"
    rep = subprocess.run(
        [*ANUBIS, "report", str(out), "--json", "--plot", str(png)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    sw = json.loads(rep.stdout)["sweep"]
    assert [row["treatment"] for row in sw["rows"]] == sweep["treatments"]
    fast = next(row for row in sw["rows"] if row["treatment"] == "py-spy@1000")
    assert fast["samples"] and fast["samples"] > 100  # py-spy really sampled at 1000 Hz
    assert "py-spy" in sw["recommended"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = subprocess.run(
        [*ANUBIS, "report", str(out)], env=env, capture_output=True, text=True, timeout=120
    ).stdout
    assert "recommended py-spy:" in text and "warm-up" in text
