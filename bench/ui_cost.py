"""CPU of the app against a headless `anubis record` of the same length, and against btop.

Each contender runs for `--seconds` on its own (side by side in one run,
one after another, same machine): headless `anubis record --no-model`, the
app `anubis run --no-model --no-record` in tmux at 120x40, and btop (Debian
package, default 2 s refresh) in tmux at 120x40 when installed. The CPU
time of the measured process (all its threads) is read with psutil between
second 2 (after start-up) and the end, as % of one core.

    python bench/ui_cost.py [--seconds 20] [--model] [--repeats N] [--json] [--check]

With --model both run inference on the default model with every core busy
(--threads = CPU count), and the decode tok/s of the two recordings is
compared. --repeats alternates headless and app N times (these machines are
noisy: a pair is measured back to back) and reports every pair and the median.
--check fails when the UI adds more than 10 % of a core (a generous CI bound;
the goal, measured by hand, is 2 %).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHECK_BOUND_PCT = 10.0
SOCKET = "anubis-bench"


def cpu_pct(proc: psutil.Process, seconds: float) -> float:
    time.sleep(2.0)
    t0 = time.monotonic()
    c0 = sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    c1 = sum(proc.cpu_times()[:2])
    return 100 * (c1 - c0) / (time.monotonic() - t0)


def headless(seconds: float, env: dict[str, str], model: list[str], out: str) -> float:
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anubis_tui",
            "record",
            *(model or ["--no-model"]),
            "--duration",
            str(seconds + 4),
            "-o",
            out,
            "--force",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        return cpu_pct(psutil.Process(p.pid), seconds)
    finally:
        p.wait(60)


def decode_tps(path: str) -> float | None:
    """Decode tok/s of a recording, as `anubis report` computes it."""
    from anubis_tui.analysis.report import report
    from anubis_tui.recording.reader import load

    return report(load(path))["tokens"]["decode_tps"]


def in_tmux(cmd: str, match: str, seconds: float, env: dict[str, str]) -> float:
    # A tmux server of its own per contender: a server still shutting down from the
    # previous one refuses new sessions on the same socket.
    sock = f"{SOCKET}-{match}-{os.getpid()}"
    subprocess.run(
        ["tmux", "-L", sock, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40", cmd],
        env=env,
        check=True,
    )
    try:
        time.sleep(1.0)
        pane = int(
            subprocess.run(
                ["tmux", "-L", sock, "display", "-p", "-t", "b", "#{pane_pid}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        root = psutil.Process(pane)
        cands = [root, *root.children(recursive=True)]
        proc = next(p for p in cands if match in " ".join(p.cmdline()))
        return cpu_pct(proc, seconds)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--model", action="store_true", help="with inference (threads = CPU count)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    runs = [measure(a) for _ in range(max(1, a.repeats))]
    res: dict[str, object] = dict(runs[0]) if len(runs) == 1 else {"runs": runs}
    if len(runs) > 1:
        for key in ("headless_record_pct", "app_pct", "ui_adds_pct", "app_tps_ratio"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            res[f"median_{key}"] = statistics.median(vals) if vals else None
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for i, r in enumerate(runs):
            for k, v in r.items():
                unit = " % of one core" if k.endswith("_pct") else ""
                print(f"{i} {k:<22} {'—' if v is None else f'{v:8.3f}{unit}'}")
        for k, v in res.items():
            if k.startswith("median_"):
                print(f"  {k:<28} {'—' if v is None else f'{v:8.3f}'}")
    adds = res.get("median_ui_adds_pct", res.get("ui_adds_pct"))
    if a.check and isinstance(adds, float) and adds > CHECK_BOUND_PCT:
        print(f"FAIL: the UI adds more than {CHECK_BOUND_PCT} % of a core", file=sys.stderr)
        return 1
    return 0


def measure(a: argparse.Namespace) -> dict[str, float | None]:
    env = {**os.environ, "TERM": "xterm-256color", "ANUBIS_CONFIG": "/nonexistent.toml"}
    res: dict[str, float | None] = {}
    tmp = tempfile.mkdtemp(prefix="anubis-uicost-")
    model = ["--threads", str(os.cpu_count() or 2)] if a.model else []
    rec_h, rec_a = f"{tmp}/headless.msgpack", f"{tmp}/app.msgpack"
    res["headless_record_pct"] = headless(a.seconds, env, model, rec_h if a.model else os.devnull)
    run = f"{sys.executable} -m anubis_tui run " + (
        " ".join([*model, "--record", rec_a]) if a.model else "--no-model --no-record"
    )
    res["app_pct"] = in_tmux(run, "anubis_tui", a.seconds, env)
    res["ui_adds_pct"] = res["app_pct"] - res["headless_record_pct"]
    if a.model:
        h, u = decode_tps(rec_h), decode_tps(rec_a)
        res["headless_decode_tps"], res["app_decode_tps"] = h, u
        res["app_tps_ratio"] = (u / h) if h and u else None
    res["btop_pct"] = in_tmux("btop", "btop", a.seconds, env) if shutil.which("btop") else None
    return res


if __name__ == "__main__":
    raise SystemExit(main())
