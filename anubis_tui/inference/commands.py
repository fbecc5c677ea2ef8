"""`anubis bench`: the inference workload alone, the baseline for every overhead figure."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anubis_tui.config import Config
from anubis_tui.errors import CliError
from anubis_tui.inference.client import WorkerClient
from anubis_tui.inference.models import ModelError, ModelFacts, read_gguf, resolve_model
from anubis_tui.inference.worker import Spec
from anubis_tui.inference.workload import TokenStats, WorkloadError, load_prompts
from anubis_tui.records import Event, Record

LOAD_TIMEOUT_S = 180.0


class BenchError(Exception):
    """Printed by the CLI as one line."""


def add_parsers(sub: Any, positive_int: Any, positive_float: Any) -> None:
    b = sub.add_parser("bench", help="the inference workload alone: tok/s, TTFT, llama timers")
    b.add_argument("--duration", type=positive_float, default=20.0, help="seconds (default 20)")
    add_model_args(b, positive_int)
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")


def add_model_args(p: argparse.ArgumentParser, positive_int: Any) -> None:
    p.add_argument("--model", help="a GGUF file (default: the packaged Gemma 3 270M Q4_K_M)")
    p.add_argument("--threads", type=positive_int, help="llama.cpp threads")
    p.add_argument("--gpu-layers", type=int, help="layers offloaded to the GPU (-1: all)")
    p.add_argument("--ctx", type=positive_int, dest="n_ctx", help="context size")
    p.add_argument("--max-tokens", type=positive_int, help="tokens per request")
    p.add_argument("--prompt-file", help="one prompt a line, or JSONL with a prompt key")
    p.add_argument("--flash-attn", action="store_true", default=None)


def spec_from(args: argparse.Namespace, config: Config, t0_ns: int) -> tuple[Spec, ModelFacts]:
    """Validate model, prompts and numbers; raise BenchError with one line on bad input."""
    cfg = config.replace(
        model=args.model,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        n_ctx=args.n_ctx,
        max_tokens=args.max_tokens,
        prompt_file=args.prompt_file,
        flash_attn=args.flash_attn,
    )
    if cfg.threads is not None and cfg.threads <= 0:
        raise BenchError(f"threads must be a positive integer, got {cfg.threads}")
    try:
        path = resolve_model(cfg.model)
        facts = read_gguf(path)
        prompts = load_prompts(cfg.prompt_file)
    except (ModelError, WorkloadError) as e:
        raise BenchError(str(e)) from None
    spec = Spec(
        model=str(path),
        t0_ns=t0_ns,
        prompts=prompts,
        threads=cfg.threads,
        gpu_layers=cfg.gpu_layers,
        n_ctx=cfg.n_ctx,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
        flash_attn=cfg.flash_attn,
    )
    return spec, facts


def run_bench(spec: Spec, duration_s: float, log_path: Path) -> dict[str, Any]:
    """Run the worker for `duration_s` after its model loads; return the figures."""
    stats = TokenStats()
    records: list[Record] = []
    lock = threading.Lock()
    loaded_at: list[int] = []
    model_info: dict[str, Any] = {}

    def emit(rec: Record) -> None:
        with lock:
            records.append(rec)
            if isinstance(rec, Event) and rec.kind == "model_loaded":
                loaded_at.append(time.monotonic_ns())
                model_info.update(rec.payload)

    client = WorkerClient(spec, emit, log_path)
    client.start()
    try:
        if not client.loaded.wait(LOAD_TIMEOUT_S):
            raise BenchError(f"model did not load within {LOAD_TIMEOUT_S:.0f} s (log: {log_path})")
        if client.load_error or client.exited.is_set():
            raise BenchError(f"model failed to load: {client.load_error or client.log_tail(1)}")
        end = time.monotonic() + duration_s
        while time.monotonic() < end and not client.exited.is_set():
            time.sleep(0.05)
        if client.exited.is_set():
            died = next(
                (r for r in records if isinstance(r, Event) and r.kind == "worker_died"), None
            )
            reason = died.payload if died else {"returncode": client.returncode}
            raise BenchError(f"worker died during the bench: {reason}")
    finally:
        client.stop()
    with lock:
        for r in records:
            stats.add(r)
    return {
        "decode_tps": stats.decode_tps,
        "prompt_tps": stats.prompt_tps,
        "ttft_s": stats.ttft_s,
        "tokens_generated": stats.generated,
        "prompt_tokens": stats.prompt_tokens,
        "requests": stats.requests,
        "threads": model_info.get("threads", spec.threads),
        "gpu_layers": spec.gpu_layers,
        "load_s": model_info.get("load_s"),
        "duration_s": duration_s,
        "llama": {
            "decode_tps": stats.llama_decode_tps,
            "prompt_tps": stats.llama_prompt_tps,
            "n_eval": stats.llama_n_eval,
            "t_eval_ms": stats.llama_t_eval_ms,
            "n_p_eval": stats.llama_n_p_eval,
            "t_p_eval_ms": stats.llama_t_p_eval_ms,
        },
        "system_info": model_info.get("system_info"),
    }


def cmd_bench(args: argparse.Namespace, config: Config) -> int:
    t0 = time.monotonic_ns()
    try:
        spec, facts = spec_from(args, config, t0)
        log = Path(tempfile.gettempdir()) / f"anubis-bench-{os.getpid()}.log"
        result = run_bench(spec, args.duration, log)
    except BenchError as e:
        raise CliError(str(e)) from None
    result["model"] = facts.plain()
    if result["tokens_generated"] == 0:
        raise CliError(f"no token was generated in {args.duration:g} s (log: {log})")
    log.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    m = facts
    ll = result["llama"]
    print(
        f"model      {m.name} ({m.architecture}, {m.parameters / 1e6:.0f} M params, "
        f"{m.quantization}, {m.file_size / 2**20:.0f} MiB)"
    )
    print(
        f"threads    {result['threads']}   gpu layers {spec.gpu_layers}   "
        f"load {result['load_s']:.2f} s"
    )
    print(
        f"requests   {result['requests']}   tokens generated {result['tokens_generated']}   "
        f"prompt tokens {result['prompt_tokens']}"
    )
    print(
        f"decode     {_f(result['decode_tps'])} tok/s   (llama.cpp timers "
        f"{_f(ll['decode_tps'])} tok/s over {ll['n_eval']} evals)"
    )
    print(
        f"prompt     {_f(result['prompt_tps'])} tok/s   (llama.cpp timers "
        f"{_f(ll['prompt_tps'])} tok/s)"
    )
    print(f"TTFT       {_f(result['ttft_s'] and result['ttft_s'] * 1e3)} ms (median)")
    return 0


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


HANDLERS: dict[str, Callable[[argparse.Namespace, Any], int]] = {"bench": cmd_bench}
