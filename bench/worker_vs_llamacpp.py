"""Decode speed against llama.cpp's own eval timer: where the next token is chosen decides it.

For each way of choosing the greedy next token, a minimal loop (a fresh
process, the default model, the same prompt) decodes `--tokens` tokens and
is timed against llama.cpp's eval timer in the same process:

* ``chain``   — the C sampler chain, `llama_sampler_sample` (a candidate array over the vocabulary)
* ``argmax``  — numpy argmax over a zero-copy view of the logits row
* ``backend`` — a greedy sampler attached to the context (`llama_set_sampler`), run in the graph

Then the anubis worker itself (`anubis bench`): its decode tok/s ÷ the
eval timer is the figure the worker must keep (≥ 0.98 on CPU, ≥ 0.95 on a
GPU). Prints a table, or JSON with --json; --check fails under --min-ratio.

    python bench/worker_vs_llamacpp.py [--gpu-layers N] [--threads N] [--flash-attn]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("chain", "argmax", "backend")


def child(
    mode: str, model: str, tokens: int, threads: int | None, gpu_layers: int, fa: bool
) -> None:
    """One minimal loop; prints its JSON line."""
    import llama_cpp

    from anubis_tui.inference.worker import (
        BUILTIN_PROMPTS,
        DecodeLoop,
        chat,
        quiet_llama,
        use_extra_bufts,
    )

    quiet_llama(llama_cpp)
    use_extra_bufts(None)
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=2048,
        n_threads=threads,
        n_gpu_layers=gpu_layers,
        flash_attn=fa,
        verbose=False,
    )
    ctx = llm._ctx.ctx
    loop = DecodeLoop(llm, llama_cpp, mode)
    assert loop.sampling.mode == mode, f"this llama.cpp cannot sample by {mode}"
    prompt = llm.tokenize(chat(BUILTIN_PROMPTS[0]).encode(), add_bos=True, special=True)
    seq: list[int] = []
    llama_cpp.llama_perf_context_reset(ctx)
    first = last = 0
    for tok in loop.generate(prompt):
        last = time.perf_counter_ns()
        if not seq:
            first = last
        seq.append(tok)
        if len(seq) >= tokens:  # greedy to a fixed count, whatever the model says
            break
    perf = llama_cpp.llama_perf_context(ctx)
    tps = (len(seq) - 1) / ((last - first) / 1e9)
    eval_tps = perf.n_eval / (perf.t_eval_ms / 1e3)
    print(
        json.dumps(
            {
                "mode": mode,
                "tokens": len(seq),
                "loop_tps": tps,
                "eval_tps": eval_tps,
                "ratio": tps / eval_tps,
                "cost_ms": 1e3 / tps - 1e3 / eval_tps,
                "head": seq[:16],
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=MODES)
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--seconds", type=float, default=15.0, help="anubis bench duration")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--min-ratio", type=float, default=0.9, help="worker ÷ eval timer, for --check")
    ap.add_argument("--skip-modes", action="store_true", help="only the worker")
    a = ap.parse_args()
    from anubis_tui.inference.models import resolve_model

    model = str(resolve_model(a.model))
    if a.child:
        child(a.child, model, a.tokens, a.threads, a.gpu_layers, a.flash_attn)
        return 0
    rows = []
    common = ["--model", model, "--tokens", str(a.tokens), "--gpu-layers", str(a.gpu_layers)]
    if a.threads:
        common += ["--threads", str(a.threads)]
    if a.flash_attn:
        common.append("--flash-attn")
    for mode in () if a.skip_modes else MODES:
        p = subprocess.run(
            [sys.executable, __file__, "--child", mode, *common],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if p.returncode != 0:
            rows.append({"mode": mode, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    from anubis_tui.inference.bench import run_bench
    from anubis_tui.inference.worker import Spec

    spec = Spec(
        model=model,
        t0_ns=time.monotonic_ns(),
        threads=a.threads,
        gpu_layers=a.gpu_layers,
        flash_attn=a.flash_attn,
    )
    log = Path(tempfile.mkdtemp()) / "bench.log"
    w = run_bench(spec, a.seconds, log)
    worker = {
        "mode": f"anubis worker ({w['sampling']})",
        "loop_tps": w["decode_tps"],
        "eval_tps": w["llama"]["decode_tps"],
        "ratio": w["llama"]["ratio"],
        "prompt_tps": w["prompt_tps"],
        "ttft_ms": w["ttft_s"] * 1e3 if w["ttft_s"] else None,
        "n_batch": w["n_batch"],
        "n_ubatch": w["n_ubatch"],
    }
    rows.append(worker)
    if a.json:
        print(json.dumps({"gpu_layers": a.gpu_layers, "flash_attn": a.flash_attn, "rows": rows}))
    else:
        where = f"gpu_layers={a.gpu_layers} flash_attn={a.flash_attn} threads={a.threads}"
        print(f"{where}, {a.tokens} tokens per minimal loop")
        print(
            f"{'next token by':<26} {'tok/s':>8} {'eval timer':>10} {'ratio':>6} {'cost/token':>11}"
        )
        for r in rows:
            if "error" in r:
                print(f"{r['mode']:<26} failed: {r['error']}")
                continue
            cost = f"{r['cost_ms']:.3f} ms" if "cost_ms" in r else ""
            print(
                f"{r['mode']:<26} {r['loop_tps']:>8.1f} {r['eval_tps']:>10.1f} "
                f"{r['ratio']:>6.3f} {cost:>11}"
            )
        heads = {r["mode"]: r["head"] for r in rows if "head" in r}
        if len({tuple(h) for h in heads.values()}) > 1:
            print(f"note: the modes chose different tokens: {heads}")
        print(
            f"worker: prompt {worker['prompt_tps']:.0f} tok/s, TTFT {worker['ttft_ms']:.1f} ms, "
            f"n_batch {worker['n_batch']}, n_ubatch {worker['n_ubatch']}"
        )
    if a.check and not (worker["ratio"] and worker["ratio"] >= a.min_ratio):
        print(f"FAIL: worker ÷ eval timer {worker['ratio']} < {a.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
