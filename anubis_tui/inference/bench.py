"""The inference workload alone (no sampler, no UI): the baseline for every overhead figure."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from anubis_tui.inference.client import WorkerClient
from anubis_tui.inference.setup import InferenceError
from anubis_tui.inference.worker import Spec
from anubis_tui.inference.workload import TokenStats
from anubis_tui.records import Event, Record

LOAD_TIMEOUT_S = 180.0


def run_bench(spec: Spec, duration_s: float, log_path: Path) -> dict[str, Any]:
    """Run the worker alone for `duration_s` s after its model loads; return the figures.

    Returns a JSON-ready dict: ``decode_tps`` and ``prompt_tps`` (tok/s, the
    worker's stamps, `TokenStats`), ``ttft_s`` (median, s), token and request
    counts, the settings used, ``load_s``, and ``llama`` (llama.cpp's own timers
    and their ratio to the worker's tok/s). Raises InferenceError when the model
    does not load within `LOAD_TIMEOUT_S`, fails to load, or the worker dies.
    """
    stats = TokenStats()
    records: list[Record] = []
    lock = threading.Lock()
    loaded_at: list[int] = []
    model_info: dict[str, Any] = {}
    sampling: dict[str, Any] = {}

    def emit(rec: Record) -> None:
        with lock:
            records.append(rec)
            if isinstance(rec, Event) and rec.kind == "model_loaded":
                loaded_at.append(time.monotonic_ns())
                model_info.update(rec.payload)
            elif isinstance(rec, Event) and rec.kind == "sampling":
                sampling.update(rec.payload)

    client = WorkerClient(spec, emit, log_path)
    client.start()
    try:
        if not client.loaded.wait(LOAD_TIMEOUT_S):
            raise InferenceError(
                f"model did not load within {LOAD_TIMEOUT_S:.0f} s (log: {log_path})"
            )
        if client.load_error or client.exited.is_set():
            raise InferenceError(f"model failed to load: {client.load_error or client.log_tail(1)}")
        end = time.monotonic() + duration_s
        while time.monotonic() < end and not client.exited.is_set():
            time.sleep(0.05)
        if client.exited.is_set():
            died = next(
                (r for r in records if isinstance(r, Event) and r.kind == "worker_died"), None
            )
            reason = died.payload if died else {"returncode": client.returncode}
            raise InferenceError(f"worker died during the bench: {reason}")
    finally:
        client.stop()
    with lock:
        for r in records:
            stats.add(r)
    ratio = (
        stats.decode_tps / stats.llama_decode_tps
        if stats.decode_tps and stats.llama_decode_tps
        else None
    )
    return {
        "decode_tps": stats.decode_tps,
        "prompt_tps": stats.prompt_tps,
        "ttft_s": stats.ttft_s,
        "tokens_generated": stats.generated,
        "prompt_tokens": stats.prompt_tokens,
        "requests": stats.requests,
        "threads": model_info.get("threads", spec.threads),
        "gpu_layers": spec.gpu_layers,
        "flash_attn": spec.flash_attn,
        "sampling": sampling.get("mode"),
        "n_batch": sampling.get("n_batch"),
        "n_ubatch": sampling.get("n_ubatch"),
        "load_s": model_info.get("load_s"),
        "duration_s": duration_s,
        "llama": {
            "decode_tps": stats.llama_decode_tps,
            "prompt_tps": stats.llama_prompt_tps,
            "n_eval": stats.llama_n_eval,
            "t_eval_ms": stats.llama_t_eval_ms,
            "n_p_eval": stats.llama_n_p_eval,
            "t_p_eval_ms": stats.llama_t_p_eval_ms,
            # worker decode tok/s ÷ llama.cpp's eval timer: what the worker loses on the way
            "ratio": ratio,
        },
        "system_info": model_info.get("system_info"),
    }
