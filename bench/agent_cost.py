"""What the light path saves: CPU of the full TUI, `anubis agent` streaming to a local consumer,
and headless `anubis record`, side by side on this machine; the agent's import time and memory.

Each mode runs the default model with `--threads` = CPU count for `--seconds`, one after
another, alternating for `--repeats`; the anubis process's CPU (all its threads) is read with
psutil from second 2 on, as % of one core. The agent's consumer is a separate process that
parses the stream as `anubis run --remote` would; its own CPU is not counted.

    python bench/agent_cost.py [--seconds 20] [--repeats 2] [--json] [--check]

--check fails when the agent costs more than headless record + 0.3 % of a core (the goal)
plus a CI margin of 2 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ui_cost import cpu_pct, headless, in_tmux  # noqa: E402

CONSUMER = """
import sys
from anubis_tui.recording.reader import RecordStream
s = RecordStream()
n = 0
while True:
    data = sys.stdin.buffer.read1(65536)
    if not data:
        break
    n += len(s.feed(data))
print(n, file=sys.stderr)
"""


def agent(seconds: float, env: dict[str, str], model: list[str]) -> tuple[float, float]:
    """(CPU % of a core, RSS MiB) of `anubis agent` with a consumer reading its stream."""
    a = subprocess.Popen(
        [sys.executable, "-m", "anubis_tui", "agent", *model],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    c = subprocess.Popen(
        [sys.executable, "-c", CONSUMER], stdin=a.stdout, stderr=subprocess.DEVNULL, env=env
    )
    try:
        proc = psutil.Process(a.pid)
        pct = cpu_pct(proc, seconds)
        rss = proc.memory_info().rss / 2**20
        return pct, rss
    finally:
        assert a.stdin is not None
        a.stdin.close()  # the agent stops at stdin's end
        a.wait(60)
        c.wait(60)


def import_time_s(module: str) -> float:
    """Median wall time of `python -c "import MODULE"` less a bare interpreter's."""

    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    bare = statistics.median(run("pass") for _ in range(5))
    return statistics.median(run(f"import {module}") for _ in range(5)) - bare


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    env = {**os.environ, "TERM": "xterm-256color", "ANUBIS_CONFIG": "/nonexistent.toml"}
    model = ["--threads", str(os.cpu_count() or 2)]
    tmp = tempfile.mkdtemp(prefix="anubis-agentcost-")
    runs = []
    for i in range(max(1, a.repeats)):
        r: dict[str, float] = {}
        r["record_pct"] = headless(a.seconds, env, model, f"{tmp}/h{i}.msgpack")
        r["agent_pct"], r["agent_rss_mib"] = agent(a.seconds, env, model)
        run = f"{sys.executable} -m anubis_tui run {' '.join(model)} --record {tmp}/a{i}.msgpack"
        r["tui_pct"] = in_tmux(run, "anubis_tui", a.seconds, env)
        r["agent_minus_record_pct"] = r["agent_pct"] - r["record_pct"]
        runs.append(r)
    res: dict[str, object] = {"runs": runs}
    for key in runs[0]:
        res[f"median_{key}"] = statistics.median(r[key] for r in runs)
    # What each path imports before its session starts (the agent's imports are deferred).
    res["import_agent_s"] = import_time_s(
        "anubis_tui.cli.agent, anubis_tui.session.agent, anubis_tui.recording.writer"
    )
    res["import_app_s"] = import_time_s("anubis_tui.ui.app, anubis_tui.session")
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            if k != "runs":
                print(f"{k:<34} {v:8.3f}")
        for i, r in enumerate(runs):
            print(f"run {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    extra = res["median_agent_minus_record_pct"]
    if a.check and isinstance(extra, float) and extra > 0.3 + 2.0:
        print(
            "FAIL: the agent costs more than headless record + 0.3 % (+2 % margin)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
