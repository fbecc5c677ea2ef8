"""`anubis models`: quantized variants (llama.cpp's quantizer), their list, their perplexity.

* ``anubis models quantize [SRC] --types q8_0,q5_k_m,q4_0,q2_k [--out-dir DIR]``
  makes one variant per type, into the model cache by default
  (``$XDG_CACHE_HOME/anubis/models``). A source that is already quantized is
  requantized and every view says so ("requantized from Q4_K_M").
* ``anubis models list [--models-dir DIR]``: each GGUF's size, quantization,
  source and cached perplexity.
* ``anubis models perplexity [--model M] [--kv-type T]``: the figure on the
  shipped text (computed once, then cached); docs/quality.md.

Errors are one line and exit status 2; nothing half-written stays behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import CliError, positive_int
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``models`` subcommand and its flags on `sub` (argparse's subparsers)."""
    m = sub.add_parser("models", help="quantized variants of a model, their size and perplexity")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(m))
    msub.required = True
    q = msub.add_parser("quantize", help="make quantized variants with llama.cpp's quantizer")
    q.add_argument("src", nargs="?", help="a GGUF file (default: the packaged model)")
    q.add_argument("--types", required=True, help="comma-separated, e.g. q8_0,q5_k_m,q4_0,q2_k")
    q.add_argument("--out-dir", help="where the variants go (default: the model cache)")
    q.add_argument("--threads", type=positive_int, help="quantizer threads (default: all)")
    q.add_argument("--force", action="store_true", help="make a variant again if it exists")
    q.set_defaults(handler=cmd_quantize)
    ls = msub.add_parser("list", help="GGUF files: size, quantization, source, cached perplexity")
    ls.add_argument(
        "--models-dir", action="append", default=[], metavar="DIR",
        help="a folder of GGUF files (repeatable; default: the model cache)",
    )  # fmt: skip
    ls.set_defaults(handler=cmd_list)
    p = msub.add_parser("perplexity", help="perplexity on the shipped text (cached)")
    p.add_argument("--model", action="append", default=[], help="a GGUF (repeatable)")
    p.add_argument("--kv-type", default="f16", help="f16, q8_0 or q4_0, or a comma list")
    p.add_argument("--ctx", type=positive_int, default=512, help="tokens a chunk (default 512)")
    p.add_argument("--chunks", type=positive_int, help="at most this many chunks")
    p.add_argument("--threads", type=positive_int, help="llama.cpp threads")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers on the GPU (-1: all)")
    p.add_argument(
        "--flash-attn", action="store_true", help="flash attention (a q8_0/q4_0 KV cache needs it)"
    )
    p.set_defaults(handler=cmd_perplexity)


def _model_cache() -> Path:
    from anubis_tui.inference.models import cache_dir

    return cache_dir()


def _source(path: str | None) -> Path:
    from anubis_tui.inference.models import resolve_model

    return resolve_model(path)


def cmd_quantize(args: argparse.Namespace, config: Config) -> int:
    """Make the ``--types`` variants of a GGUF file with llama.cpp's quantizer, printing
    one line each; returns 0.
    """
    from anubis_tui.inference.variants import VariantError, parse_types, quantize

    try:
        types = parse_types(args.types)
    except VariantError as e:
        raise CliError(f"--types: {e}") from None
    from anubis_tui.inference.models import read_gguf

    src = _source(args.src)
    read_gguf(src)  # a corrupt source is refused before any progress line
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else _model_cache()
    for t in types:
        print(f"anubis: quantizing {src.name} to {t} …", file=sys.stderr)
        v = quantize(src, t, out_dir, threads=args.threads, force=args.force)
        print(f"{v.path}\t{v.quantization}\t{v.size / 2**20:.1f} MiB\t{v.label}")
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def model_rows(dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per GGUF in `dirs`: file, size, quantization, variant label, cached perplexity."""
    from anubis_tui.inference.models import ModelError, read_gguf
    from anubis_tui.inference.quality import cached_any
    from anubis_tui.inference.variants import variant_label

    rows: list[dict[str, Any]] = []
    for d in dirs:
        if not d.is_dir():
            raise CliError(f"--models-dir {d}: not a folder")
        for f in sorted(d.glob("*.gguf")):
            try:
                facts = read_gguf(f)
            except ModelError as e:
                rows.append({"path": str(f), "error": str(e)})
                continue
            q = cached_any(f)
            rows.append(
                {
                    "path": str(f),
                    "size": facts.file_size,
                    "quantization": facts.quantization,
                    "variant": variant_label(f),
                    "ppl": q.ppl if q else None,
                    "ppl_se": q.ppl_se if q else None,
                    "ppl_setting": f"kv {q.kv_type}{' fa' if q.flash_attn else ''}" if q else None,
                }
            )
    return rows


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    """Print each GGUF file in the model directories: size, quantization, perplexity; returns 0."""
    dirs = [Path(d).expanduser() for d in args.models_dir] or [_model_cache()]
    for r in model_rows(dirs):
        name = Path(r["path"]).name
        if "error" in r:
            print(f"{name}\tunreadable: {r['error']}")
            continue
        ppl = (
            f"PPL {r['ppl']:.3f} ± {r['ppl_se']:.3f} ({r['ppl_setting']})"
            if r["ppl"] is not None
            else "PPL not yet"
        )
        tag = f"\t{r['variant']}" if r["variant"] else ""
        print(f"{name}\t{_size(r['size'])}\t{r['quantization']}\t{ppl}{tag}")
    return 0


def cmd_perplexity(args: argparse.Namespace, config: Config) -> int:
    """Perplexity of each model × ``--kv-type`` on the shipped text (cached); returns 0."""
    from anubis_tui.inference.quality import KV_TYPES, Setting, run_child

    kvs = [k.strip() for k in args.kv_type.split(",") if k.strip()]
    for k in kvs:
        if k not in KV_TYPES:
            raise CliError(f"--kv-type: {k!r} is not one of {', '.join(KV_TYPES)}")
    if args.ctx < 16 or args.ctx % 2:
        raise CliError("--ctx must be even and at least 16")
    models = [_source(m) for m in args.model] or [_source(None)]
    for m in models:
        for k in kvs:
            s = Setting(
                kv_type=k,
                n_ctx=args.ctx,
                gpu_layers=args.gpu_layers,
                flash_attn=args.flash_attn,
                threads=args.threads or config_threads(config),
                max_chunks=args.chunks,
            )
            r = run_child(m, s)
            how = "cached" if r.cached else f"{r.compute_s:.1f} s"
            print(f"{r.line()} [{how}]")
    return 0


def config_threads(config: Config) -> int | None:
    """The config's ``threads`` when a positive int, else None (llama.cpp's default)."""
    t = getattr(config, "threads", None)
    return t if isinstance(t, int) and t > 0 else None


def sweep_quality(spec: Any, knobs: dict[str, list[Any]], say: Any) -> list[dict[str, Any]]:
    """``sweep --quality``: the perplexity of every model × KV type the sweep will try.

    Computed (or read from the cache) in child processes before the session
    starts, so no segment and no energy figure contains it. Returns the
    ``quality`` Event payloads; CliError (one line) when one fails.
    """
    from anubis_tui.inference.quality import Setting, run_child

    models = [Path(spec.model)] + [Path(str(m)) for m in knobs.get("model", [])]
    kvs = [spec.kv_type] + [str(k) for k in knobs.get("kv_type", [])]
    fas = [bool(spec.flash_attn)] + [bool(f) for f in knobs.get("flash_attn", [])]
    out = []
    seen: set[tuple[str, str, bool]] = set()
    for m in models:
        for k in kvs:
            for fa in fas:
                key = (str(m.resolve()), k, fa)
                if key in seen or (k != "f16" and not fa):  # a setting the sweep cannot run
                    continue
                seen.add(key)
                s = Setting(
                    kv_type=k, gpu_layers=spec.gpu_layers, flash_attn=fa, threads=spec.threads
                )
                r = run_child(m, s)
                done = " [cached]" if r.cached else f" [{r.compute_s:.0f} s]"
                say(f"quality: {r.line()}{done}")
                out.append(r.payload())
    return out


def quality_lines(events: list[Any], summary: dict[str, Any], max_increase_pct: float) -> list[str]:
    """The sweep's quality table from a recording's ``quality`` Events and its report."""
    from anubis_tui.analysis.quality import EVENT, quality_table, render_quality

    qs = [e.payload for e in events if e.kind == EVENT]
    if not qs:
        return ["quality    no quality Event in this recording (sweep --quality records them)"]
    return render_quality(quality_table(summary.get("settings") or [], qs, max_increase_pct))
