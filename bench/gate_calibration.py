"""How often `anubis compare` cries wolf, and how often it catches a real 10 % slowdown, here.

Records `--runs` plain recordings and as many slowed ones, alternating
(plain, slowed, plain, …) so that drift spreads over both, each `--seconds`
long, with the real model and the real `anubis record`. The slowdown is
real and external: the inference worker process is stopped (SIGSTOP) for
`--stop-ms` of every `--period-ms` and continued (SIGCONT), as a noisy
neighbour or a throttle would; 10 ms of 100 ms takes 10 % of its wall time,
so about 10 % of its decode tok/s. The realised slowdown is measured and
printed beside the rates.

Then, for run lengths from `--lengths` (each recording cut after that many
seconds past its first token), it runs `compare` on

* every ordered pair of plain runs (A/A): a REGRESSION is a false positive;
* every (plain, slowed) pair: a REGRESSION is a detection;
* with `--group 3`: disjoint groups of 3 runs a side (runs as the unit),

and prints the false-positive rate (goal ≤ 5 %), the detection rate (goal
≥ 90 %) and the shortest run length that meets both.

    flock /tmp/anubis-cpu.lock python bench/gate_calibration.py --runs 6 --seconds 40
    python bench/gate_calibration.py --gpu-layers -1 --runs 6 --seconds 40    # a GPU host
    python bench/gate_calibration.py --reuse DIR      # evaluate recordings made before
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anubis_tui.analysis.compare import (  # noqa: E402
    REGRESSION,
    baseline_chunks,
    compare_chunks,
)
from anubis_tui.analysis.segments import Figures  # noqa: E402
from anubis_tui.recording.reader import load  # noqa: E402
from anubis_tui.records import Record, Tokens  # noqa: E402

FPR_GOAL, DETECT_GOAL = 0.05, 0.90


def worker_pid(parent: int, timeout_s: float = 120.0) -> int | None:
    """The inference worker under `parent` (its cmdline names anubis_tui.inference.worker)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            for p in psutil.Process(parent).children(recursive=True):
                if any("anubis_tui.inference.worker" in a for a in p.cmdline()):
                    return p.pid
        except psutil.Error:
            return None
        time.sleep(0.05)
    return None


def throttle(pid: int, stop_s: float, period_s: float, done: threading.Event) -> None:
    """SIGSTOP `pid` for `stop_s` of every `period_s` until `done`; always SIGCONT at the end."""
    nxt = time.monotonic()
    try:
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(stop_s)
            os.kill(pid, signal.SIGCONT)
            nxt += period_s
            time.sleep(max(0.0, nxt - time.monotonic()))
    except ProcessLookupError:
        return
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def record(path: Path, args: argparse.Namespace, slowed: bool) -> None:
    cmd = [sys.executable, "-m", "anubis_tui", "record", "--duration", str(args.seconds)]
    cmd += ["-o", str(path), "--force"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.gpu_layers is not None:
        cmd += ["--gpu-layers", str(args.gpu_layers)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()
    t = None
    if slowed:
        pid = worker_pid(proc.pid)
        if pid is not None:
            t = threading.Thread(
                target=throttle,
                args=(pid, args.stop_ms / 1000, args.period_ms / 1000, done),
                daemon=True,
            )
            t.start()
    _, err = proc.communicate()
    done.set()
    if t is not None:
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"anubis record failed ({proc.returncode}): {err.strip()[-300:]}")


def cut(records: list[Record], seconds: float) -> list[Record]:
    """The records up to `seconds` after the first decode token (the Header always)."""
    first = next((r.t for r in records if isinstance(r, Tokens) and r.phase == "decode"), 0)
    end = first + int(seconds * 1e9)
    return [r for r in records if not isinstance(getattr(r, "t", None), int) or r.t <= end]


def rate(outcomes: list[str]) -> float:
    return sum(o == REGRESSION for o in outcomes) / len(outcomes) if outcomes else float("nan")


def evaluate(
    plain: list[list[Record]], slowed: list[list[Record]], length: float, thr: float, group: int
) -> dict[str, Any]:
    p = [baseline_chunks(cut(r, length)) for r in plain]
    s = [baseline_chunks(cut(r, length)) for r in slowed]

    def outcome(a: list[list[Figures]], b: list[list[Figures]]) -> str:
        return str(compare_chunks(a, b, thr)["outcome"])

    aa = [outcome([p[i]], [p[j]]) for i, j in itertools.permutations(range(len(p)), 2)]
    det = [outcome([a], [b]) for a in p for b in s]
    out: dict[str, Any] = {
        "length_s": length,
        "pairs": {"aa": len(aa), "slowed": len(det)},
        "fpr": rate(aa),
        "detect": rate(det),
        "aa_inconclusive": aa.count("inconclusive") / len(aa) if aa else None,
        "slowed_inconclusive": det.count("inconclusive") / len(det) if det else None,
    }
    if group and len(p) >= 2 * group:
        g_aa = []
        for c in itertools.combinations(range(len(p)), group):
            if 0 not in c:
                continue
            rest = [i for i in range(len(p)) if i not in c][:group]
            g_aa.append(outcome([p[i] for i in c], [p[i] for i in rest]))
            g_aa.append(outcome([p[i] for i in rest], [p[i] for i in c]))
        g_det = [
            outcome([p[i] for i in c], [s[i] for i in d])
            for c in itertools.combinations(range(len(p)), group)
            for d in itertools.combinations(range(len(s)), group)
        ]
        out["groups"] = {"size": group, "fpr": rate(g_aa), "detect": rate(g_det)}
    return out


def mean_tps(runs: list[list[Record]], length: float) -> list[float]:
    """Each run's decode tok/s over its baseline chunks (mean of chunks)."""
    out = []
    for r in runs:
        xs = [f.decode_tps for f in baseline_chunks(cut(r, length)) if f.decode_tps is not None]
        if xs:
            out.append(sum(xs) / len(xs))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=6, help="plain runs (and as many slowed)")
    ap.add_argument("--seconds", type=float, default=40.0, help="each recording's length")
    ap.add_argument("--lengths", default="10,20,30", help="run lengths to evaluate, s")
    ap.add_argument("--max-regression", type=float, default=5.0, help="compare's threshold, %%")
    ap.add_argument("--stop-ms", type=float, default=10.0)
    ap.add_argument("--period-ms", type=float, default=100.0)
    ap.add_argument("--group", type=int, default=3, help="runs a side for the runs-unit rows")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--gpu-layers", type=int)
    ap.add_argument("--model")
    ap.add_argument("--dir", help="where the recordings go (default: a temporary folder)")
    ap.add_argument("--reuse", help="a --dir of an earlier run: evaluate only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    d = Path(args.reuse or args.dir or tempfile.mkdtemp(prefix="anubis-gate-"))
    d.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        t0 = time.monotonic()
        for i in range(args.runs):
            for kind in ("plain", "slowed"):
                path = d / f"{kind}-{i}.msgpack"
                record(path, args, kind == "slowed")
                print(f"recorded {path.name} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    plain = [load(str(p)).records for p in sorted(d.glob("plain-*.msgpack"))]
    slowed = [load(str(p)).records for p in sorted(d.glob("slowed-*.msgpack"))]
    lengths = [float(x) for x in args.lengths.split(",")]
    full = max(lengths)

    tp, ts = mean_tps(plain, full), mean_tps(slowed, full)
    realised = 100 * (sum(ts) / len(ts) / (sum(tp) / len(tp)) - 1) if tp and ts else None
    rows = [evaluate(plain, slowed, x, args.max_regression, args.group) for x in lengths]
    ok = [r for r in rows if r["fpr"] <= FPR_GOAL and r["detect"] >= DETECT_GOAL]
    result = {
        "dir": str(d),
        "runs": {"plain": len(plain), "slowed": len(slowed)},
        "max_regression_pct": args.max_regression,
        "slowdown": f"SIGSTOP {args.stop_ms:g} ms every {args.period_ms:g} ms",
        "tps_plain": tp,
        "tps_slowed": ts,
        "realised_slowdown_pct": realised,
        "rows": rows,
        "shortest_ok_s": ok[0]["length_s"] if ok else None,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"recordings: {d} ({len(plain)} plain, {len(slowed)} slowed: {result['slowdown']})")
    if realised is not None:
        print(
            f"decode tok/s: plain {min(tp):.1f}–{max(tp):.1f}, slowed {min(ts):.1f}–{max(ts):.1f}; "
            f"realised slowdown {realised:+.1f} %"
        )
    print(f"compare --max-regression {args.max_regression:g}, one run a side (chunks):")
    for r in rows:
        line = (
            f"  {r['length_s']:>4g} s: false positives {100 * r['fpr']:.1f} % of "
            f"{r['pairs']['aa']} A/A pairs (inconclusive {100 * r['aa_inconclusive']:.0f} %), "
            "detected "
            f"{100 * r['detect']:.1f} % of {r['pairs']['slowed']} slowed pairs "
            f"(inconclusive {100 * r['slowed_inconclusive']:.0f} %)"
        )
        g = r.get("groups")
        if g:
            line += (
                f"; {g['size']} runs a side: FP {100 * g['fpr']:.1f} %, "
                f"detected {100 * g['detect']:.1f} %"
            )
        print(line)
    s = result["shortest_ok_s"]
    print(
        f"shortest run length meeting FP ≤ {100 * FPR_GOAL:.0f} % and detection ≥ "
        f"{100 * DETECT_GOAL:.0f} %: " + (f"{s:g} s" if s is not None else "none of those tried")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
