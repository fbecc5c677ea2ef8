"""Decode tok/s of the anubis worker against a bare llama-cpp-python loop, side by side.

Alternates bare and worker runs of `--seconds` each, `--rounds` times, with
the same model, threads and settings, and reports the medians and their
ratio (target: worker ≥ 97 % of bare). Both measure decode tok/s the same
way, from token stamps.

    python bench/worker_vs_bare.py [--seconds 15] [--rounds 3] [--threads N] [--gpu-layers L]
    python bench/worker_vs_bare.py --check   # CI: fails below 90 % (generous bound)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anubis_tui.inference.bench import run_bench  # noqa: E402
from anubis_tui.inference.models import resolve_model  # noqa: E402
from anubis_tui.inference.worker import Spec  # noqa: E402

CHECK_BOUND = 0.90


def bare(model: str, seconds: float, threads: int | None, gpu_layers: int) -> float:
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_loop.py"),
            model,
            str(seconds),
            str(threads) if threads else "-",
            str(gpu_layers),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(json.loads(p.stdout.strip().splitlines()[-1])["decode_tps"])


def worker(model: str, seconds: float, threads: int | None, gpu_layers: int) -> float:
    spec = Spec(model=model, t0_ns=time.monotonic_ns(), threads=threads, gpu_layers=gpu_layers)
    log = Path(tempfile.gettempdir()) / "anubis-worker-vs-bare.log"
    r = run_bench(spec, seconds, log)
    return float(r["decode_tps"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--model")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    model = str(resolve_model(a.model))
    b_runs: list[float] = []
    w_runs: list[float] = []
    for _ in range(a.rounds):
        b_runs.append(bare(model, a.seconds, a.threads, a.gpu_layers))
        w_runs.append(worker(model, a.seconds, a.threads, a.gpu_layers))
    b, w = statistics.median(b_runs), statistics.median(w_runs)
    print(
        json.dumps(
            {
                "bare_decode_tps": b_runs,
                "worker_decode_tps": w_runs,
                "bare_median": b,
                "worker_median": w,
                "ratio": w / b,
            },
            indent=1,
        )
    )
    if a.check and w / b < CHECK_BOUND:
        print(
            f"FAIL: worker at {w / b:.1%} of the bare loop (< {CHECK_BOUND:.0%})", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
