"""`anubis bench`: the inference workload alone, the baseline for every overhead figure."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import CliError, add_model_args, positive_float, spec_from
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``bench`` subcommand and its flags on `sub` (argparse's subparsers)."""
    b = sub.add_parser("bench", help="the inference workload alone: tok/s, TTFT, llama timers")
    b.add_argument("--duration", type=positive_float, default=20.0, help="seconds (default 20)")
    add_model_args(b)
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, config: Config) -> int:
    """Run the workload alone for ``--duration`` s and print tok/s, TTFT and llama.cpp's
    timers; returns 0.
    """
    from anubis_tui.inference.bench import run_bench

    t0 = time.monotonic_ns()
    spec, facts = spec_from(args, config, t0)
    log = Path(tempfile.mkdtemp(prefix="anubis-bench-")) / "llama.log"
    result = run_bench(spec, args.duration, log)
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
