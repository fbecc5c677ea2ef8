"""The same model through anubis's own worker and through an attached llama_cpp.server (issue 23).

    python3 bench/attach_vs_worker.py [--rounds 1] [--seconds 30] [--gpu-layers -1]
        [--threads N] [--dir DIR] [--json]

Alternates, round by round: ``anubis record`` with the worker, then ``python -m
llama_cpp.server`` started with the same model, context, threads, GPU layers and flash
attention, and ``anubis record --attach`` against it (the server started and loaded before
the recording begins, stopped after it). Prints, per run: decode tok/s and J/token over
active decode time (the report's headline), the median J per request and its method, and
the recording. Run it under ``flock /tmp/anubis-cpu.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ANUBIS = [sys.executable, "-m", "anubis_tui"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def figures(path: Path) -> dict[str, Any]:
    out = subprocess.run([*ANUBIS, "report", "--json", str(path)], capture_output=True, check=True)
    r = json.loads(out.stdout)
    h = r.get("headline") or {}
    q = r.get("requests_energy") or {}
    return {
        "decode_tps": h.get("decode_tps", r["tokens"]["decode_tps"]),
        # the measured meters' J/token where there are some, else the total (estimate included)
        "j_per_token": h.get("j_per_token_measured") or h.get("j_per_token"),
        "j_per_token_kind": "measured" if h.get("j_per_token_measured") else h.get("method"),
        "requests": r["tokens"]["requests"],
        "generated": r["tokens"]["generated"],
        "median_j_request": q.get("median_j"),
        "median_j_per_token_request": q.get("median_j_per_token"),
        "request_method": q.get("method"),
        "power_w": r["power_w"]["mean"],
    }


def start_server(
    model: str, args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "1024", "--n_gpu_layers", str(args.gpu_layers)]
    cmd += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    if args.gpu_layers != 0:  # the worker's default: flash attention where layers run on a GPU
        cmd += ["--flash_attn", "true"]
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=f, start_new_session=True)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if p.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log.read_text()[-800:]}")
        with contextlib.suppress(OSError):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/models")
            if c.getresponse().status == 200:
                return p, f"http://127.0.0.1:{port}"
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)
    raise SystemExit("llama_cpp.server did not answer within 300 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--dir", default="/tmp/attach-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from anubis_tui.inference.models import resolve_model

    model = str(resolve_model(os.environ.get("ANUBIS_MODEL")))
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    common = ["--duration", str(args.seconds), "--force"]
    for r in range(args.rounds):
        w = d / f"worker-{r}.msgpack"
        subprocess.run(
            [
                *ANUBIS,
                "record",
                "--threads",
                str(args.threads),
                "--gpu-layers",
                str(args.gpu_layers),
                "-o",
                str(w),
                *common,
            ],
            check=True,
        )
        rows.append({"run": "worker", "round": r, "file": str(w), **figures(w)})
        srv, url = start_server(model, args, d / f"server-{r}.log")
        try:
            a = d / f"attach-{r}.msgpack"
            subprocess.run([*ANUBIS, "record", "--attach", url, "-o", str(a), *common], check=True)
            rows.append({"run": "attach", "round": r, "file": str(a), **figures(a)})
        finally:
            os.killpg(srv.pid, signal.SIGTERM)
            srv.wait(30)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0

    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    head = f"{'run':<8}{'round':>6}{'tok/s':>9}{'J/token':>10}{'J/request':>11}{'W':>8}"
    print(head + "  requests  J kind")
    for x in rows:
        print(
            f"{x['run']:<8}{x['round']:>6}{f(x['decode_tps'], '.1f'):>9}"
            f"{f(x['j_per_token'], '.4f'):>10}{f(x['median_j_request'], '.2f'):>11}"
            f"{f(x['power_w'], '.1f'):>8}  {x['requests']:>8}  {x['j_per_token_kind']}, "
            f"per request: {x['request_method']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
