"""CPU of the app against a headless `anubis record` of the same length, and against btop.

Each contender runs for `--seconds` on its own (side by side in one run,
one after another, same machine): headless `anubis record`, the app
`anubis run` in tmux at 120x40, and btop (Debian package, default 2 s
refresh) in tmux at 120x40 when installed. The CPU time of the measured
process (all its threads; not the inference worker, a child) is read with
psutil between second 2 (after start-up) and the end, as % of one core.

    python bench/ui_cost.py [--seconds 20] [--model] [--repeats N] [--json] [--check]
    python bench/ui_cost.py --token-rate 1000,100 [--seconds 20] [--repeats N] [--goals]

Without --model or --token-rate both run sensors only (--no-model).

--model: both run inference on the default model with every core busy
(--threads = CPU count); the decode tok/s of the two recordings is compared.

--token-rate N[,N...]: no model. The session's inference worker is this
file's synthetic worker (through ``$ANUBIS_WORKER_CMD``): it speaks the
worker's protocol with the worker's own `Sender`, at N decode tok/s in
requests of --max-tokens tokens (a GPU's rate on a machine without one).
Headless and app run at each rate in turn, so the goals are measured side by
side in one run: the UI adds at most 1.5 % of a core at 1,000 and at 100
tok/s, and headless record stays at most 1 % at 1,000 tok/s (--goals fails
when one is missed).

Every run also reads the monitor panel's own-CPU figure (the recording's
``proc.self.cpu``, mean over the same seconds) beside the psutil figure.

A run whose own figures are implausible fails, whatever --check says: with
--model an app/headless decode ratio outside 0.5-2 (a ratio of 13 is a broken
measurement, not a fast UI); with --token-rate a recorded decode rate more
than 25 % from the rate asked for.

--repeats alternates headless and app N times (these machines are noisy: a
pair is measured back to back) and reports every pair and the median.
--check fails when the UI adds more than 10 % of a core (a generous CI bound).
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


def synthetic_worker(rate: float, spec_json: str) -> int:
    """The inference worker's protocol at `rate` decode tok/s, no model (``--synthetic-worker``).

    The real worker's `Sender` (records queued, one socket write per flush_s)
    and `Control` (stop, pause, threads from stdin); decode Tokens batched as
    the worker batches them: one record per `batch_s` within a request, and a
    request's last tokens in one record when it ends. A 40-token prompt takes
    4 ms (about a GPU's prefill of a short prompt).
    """
    from anubis_tui.inference.worker import Control, Sender, Spec

    spec = Spec(**json.loads(spec_json))
    sender = Sender(spec.socket, spec.t0_ns, spec.flush_s)
    sender.event("worker_started", pid=os.getpid())
    control = Control()
    sender.event(
        "model_loaded", load_s=0.0, threads=spec.threads, threads_batch=spec.threads,
        gpu_layers=spec.gpu_layers, gpu_offload=False, n_batch=spec.n_batch,
        kv_type=spec.kv_type, flash_attn=spec.flash_attn, model="synthetic",
        extra_bufts=False, system_info="synthetic", pid=os.getpid(), under_scalene=False,
    )  # fmt: skip
    sender.event("sampling", mode="synthetic", n_batch=spec.n_batch, n_ubatch=spec.n_ubatch,
                 flash_attn=spec.flash_attn)  # fmt: skip
    tick = 0.005  # the clock this loop wakes at; tokens due since the last wake are made
    batch_ns = spec.batch_s * 1e9
    per_tok = 1e9 / rate
    request = 0
    while not control.stop.is_set():
        if control.paused.is_set():
            sender.event("paused")
            control.resume.wait()
            sender.event("resumed")
        if control.threads is not None:  # as the worker: both thread counts, at once
            n, control.threads = control.threads, None
            sender.event("threads", n=n, threads_batch=n)
        request += 1
        t_start = sender.now()
        sender.queue_event("request_start", request=request)
        time.sleep(0.004)
        t_first = sender.now()
        sender.queue([2, t_first, 40, "prompt", request, t_start])
        made, pending, t_pend, t_last = 0, 0, t_first, t_first
        while made < spec.max_tokens and not control.stop.is_set():
            time.sleep(tick)
            now = sender.now()
            due = min(spec.max_tokens, 1 + int((now - t_first) / per_tok)) - made
            if due <= 0:
                continue
            if pending == 0:
                t_pend = now
            made, pending, t_last = made + due, pending + due, now
            if now - t_pend >= batch_ns or made >= spec.max_tokens:
                sender.queue([2, now, pending, "decode", request, t_pend])
                pending = 0
        if pending:
            sender.queue([2, t_last, pending, "decode", request, t_pend])
        sender.queue_event(
            "request_end", request=request, prompt_tokens=40, generated=made, stop="length",
            ttft_ns=t_first - t_start, decode_ns=t_last - t_first if made > 1 else None,
        )  # fmt: skip
    sender.event("worker_stopped", requests=request)
    sender.close()
    return 0


def self_cpu_pct(path: str, skip_s: float = 2.0) -> float | None:
    """The monitor panel's own-CPU figure: mean of ``proc.self.cpu`` after `skip_s`, % of a core."""
    import numpy as np

    from anubis_tui.recording.reader import load

    rec = load(path)
    col = rec.column("proc.self.cpu")
    if col is None:
        return None
    keep = (rec.t >= rec.t[0] + skip_s * 1e9) & ~np.isnan(col)
    return float(100 * col[keep].mean()) if keep.any() else None


def synthetic_gguf(path: str) -> str:
    """A GGUF of metadata only (no tensors) at `path`: what `anubis` reads of a model before
    the worker starts, so --token-rate needs no model download (GGUF v3 layout:
    ggml/docs/gguf.md; header, three string/u32 keys, padding to the 32-byte alignment)."""
    import struct

    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [
        ("general.architecture", 8, s("gemma3")),
        ("general.name", 8, s("synthetic")),
        ("gemma3.context_length", 4, struct.pack("<I", 1024)),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, typ, value in kv:
        out += s(key) + struct.pack("<I", typ) + value
    Path(path).write_bytes(out + b"\0" * (-len(out) % 32))
    return path


def synthetic_pair(
    rate: float, seconds: float, max_tokens: int, tmp: str
) -> dict[str, float | None]:
    """Headless, then the app, both fed by the synthetic worker at `rate` tok/s."""
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "ANUBIS_CONFIG": "/nonexistent.toml",
        "ANUBIS_WORKER_CMD": f"{sys.executable} {Path(__file__).resolve()} "
        f"--synthetic-worker {rate:g}",
        "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
        "ANUBIS_MODEL": synthetic_gguf(f"{tmp}/synthetic.gguf"),
    }
    model = ["--threads", "1", "--max-tokens", str(max_tokens)]
    tag = f"{rate:g}-{time.monotonic_ns()}"
    rec_h, rec_a = f"{tmp}/headless-{tag}.msgpack", f"{tmp}/app-{tag}.msgpack"
    r: dict[str, float | None] = {"token_rate": rate}
    r["headless_record_pct"] = headless(seconds, env, model, rec_h)
    run = f"{sys.executable} -m anubis_tui run {' '.join(model)} --record {rec_a}"
    r["app_pct"] = app_pct(run, seconds, env)
    r["ui_adds_pct"] = r["app_pct"] - r["headless_record_pct"]
    r["app_panel_pct"] = self_cpu_pct(rec_a)
    r["headless_decode_tps"], r["app_decode_tps"] = decode_tps(rec_h), decode_tps(rec_a)
    return r


GOAL_UI_PCT = 1.5  # the UI adds at most this much of a core, at 100 and at 1,000 tok/s
GOAL_HEADLESS_PCT = 1.0  # headless record at 1,000 tok/s


def implausible(r: dict[str, float | None]) -> str | None:
    """Why a run's own figures cannot be right (None when they can)."""
    rate = r.get("token_rate")
    if rate:
        for k in ("headless_decode_tps", "app_decode_tps"):
            v = r.get(k)
            if v is None or not 0.75 * rate <= v <= 1.25 * rate:
                return f"{k} {v} at a synthetic {rate:g} tok/s"
        return None
    ratio = r.get("app_tps_ratio", 1.0)
    if "app_tps_ratio" in r and (ratio is None or not 0.5 <= ratio <= 2.0):
        return f"app/headless decode ratio {ratio}: one of the two recordings is broken"
    return None


def in_pty(cmd: list[str], seconds: float, env: dict[str, str], cols: int = 120,
           rows: int = 40) -> float:  # fmt: skip
    """CPU of `cmd` run on a pseudo-terminal of `cols`×`rows` whose output is read and
    dropped (a terminal that draws nothing: no tmux needed, e.g. on a bare GPU machine);
    it is quit with q at the end, so its recording closes with a Footer."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios
    import threading

    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's size, then the app
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execvpe(cmd[0], cmd, env)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    if not os.read(fd, 1 << 16):
                        return
                except OSError:
                    return

    threading.Thread(target=drain, daemon=True).start()
    try:
        return cpu_pct(psutil.Process(pid), seconds)
    finally:
        os.write(fd, b"q")
        end = time.monotonic() + 30
        while time.monotonic() < end and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.2)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        stop.set()
        os.close(fd)


def app_pct(run: str, seconds: float, env: dict[str, str]) -> float:
    """The app's CPU: in tmux at 120x40 where tmux is installed, else on a bare pty."""
    if shutil.which("tmux"):
        return in_tmux(run, "anubis_tui", seconds, env)
    return in_pty(run.split(), seconds, env)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--synthetic-worker":
        return synthetic_worker(float(sys.argv[2]), sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--model", action="store_true", help="with inference (threads = CPU count)")
    ap.add_argument("--token-rate", help="synthetic decode tok/s, a comma list: 1000,100")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per synthetic request")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--goals", action="store_true", help="fail when a --token-rate goal is missed")
    a = ap.parse_args()
    if a.token_rate:
        rates = [float(x) for x in a.token_rate.split(",") if x.strip()]
        tmp = tempfile.mkdtemp(prefix="anubis-uicost-")
        runs = [
            synthetic_pair(rate, a.seconds, a.max_tokens, tmp)
            for _ in range(max(1, a.repeats))
            for rate in rates
        ]
    else:
        runs = [measure(a) for _ in range(max(1, a.repeats))]
    res: dict[str, object] = {"runs": runs}
    keys = ("headless_record_pct", "app_pct", "ui_adds_pct", "app_panel_pct", "app_tps_ratio")
    groups = sorted({r.get("token_rate") or 0 for r in runs})
    for g in groups:
        mine = [r for r in runs if (r.get("token_rate") or 0) == g]
        for key in keys:
            vals = [v for r in mine if isinstance(v := r.get(key), float)]
            if vals:
                res[f"median_{key}" + (f"@{g:g}" if g else "")] = statistics.median(vals)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for i, r in enumerate(runs):
            for k, v in r.items():
                unit = " % of one core" if k.endswith("_pct") else ""
                print(f"{i} {k:<22} {'—' if v is None else f'{v:8.3f}{unit}'}")
        for k, v in res.items():
            if k.startswith("median_"):
                print(f"  {k:<34} {'—' if v is None else f'{v:8.3f}'}")
    failed = False
    for r in runs:
        why = implausible(r)
        if why:
            print(f"FAIL: implausible figures: {why}", file=sys.stderr)
            failed = True
    adds = [v for k, v in res.items() if k.startswith("median_ui_adds_pct")]
    if a.check and any(isinstance(v, float) and v > CHECK_BOUND_PCT for v in adds):
        print(f"FAIL: the UI adds more than {CHECK_BOUND_PCT} % of a core", file=sys.stderr)
        failed = True
    if a.goals:
        for k, v in res.items():
            bound = (
                GOAL_UI_PCT
                if k.startswith("median_ui_adds_pct@")
                else GOAL_HEADLESS_PCT
                if k == "median_headless_record_pct@1000"
                else None
            )
            if bound is not None and isinstance(v, float):
                ok = v <= bound
                print(f"goal {k} <= {bound}: {v:.2f} {'met' if ok else 'MISSED'}")
                failed |= not ok
    return 1 if failed else 0


def measure(a: argparse.Namespace) -> dict[str, float | None]:
    env = {**os.environ, "TERM": "xterm-256color", "ANUBIS_CONFIG": "/nonexistent.toml"}
    res: dict[str, float | None] = {}
    tmp = tempfile.mkdtemp(prefix="anubis-uicost-")
    model = ["--threads", str(os.cpu_count() or 2)] if a.model else []
    rec_h, rec_a = f"{tmp}/headless.msgpack", f"{tmp}/app.msgpack"
    res["headless_record_pct"] = headless(a.seconds, env, model, rec_h)
    run = f"{sys.executable} -m anubis_tui run " + " ".join(
        [*(model or ["--no-model"]), "--record", rec_a]
    )
    res["app_pct"] = app_pct(run, a.seconds, env)
    res["ui_adds_pct"] = res["app_pct"] - res["headless_record_pct"]
    res["app_panel_pct"] = self_cpu_pct(rec_a)
    if a.model:
        h, u = decode_tps(rec_h), decode_tps(rec_a)
        res["headless_decode_tps"], res["app_decode_tps"] = h, u
        res["app_tps_ratio"] = (u / h) if h and u else None
    res["btop_pct"] = in_tmux("btop", "btop", a.seconds, env) if shutil.which("btop") else None
    return res


if __name__ == "__main__":
    raise SystemExit(main())
