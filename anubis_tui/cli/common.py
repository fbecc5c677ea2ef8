"""What several commands share: the parser, number checks, model flags and loading a recording."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from anubis_tui.config import Config
from anubis_tui.errors import AnubisError
from anubis_tui.inference.models import ModelFacts
from anubis_tui.inference.setup import make_spec
from anubis_tui.inference.worker import Spec

if TYPE_CHECKING:
    from anubis_tui.recording.reader import Recording


class CliError(AnubisError):
    """A user-facing error found by the command line itself (a flag that does not fit).

    Like every `AnubisError`, `anubis_tui.cli.main` prints it as one line, exit status 2.
    """


class Parser(argparse.ArgumentParser):
    """argparse's parser with errors as ``anubis: <message>`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``anubis: <message>`` on stderr and exit with status 2 (no usage dump)."""
        self.exit(2, f"anubis: {message}\n")


def positive_float(s: str, most: float = 1e8) -> float:
    """A finite number in (0, most]: 'inf', 'nan' and 1e300 are refused, not clamped."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not (math.isfinite(v) and 0 < v <= most):
        raise argparse.ArgumentTypeError(f"must be a positive number up to {most:g}, got {s}")
    return v


def rate_hz(s: str) -> float:
    """A sampling rate in the sampler's range, 1 to 1000 Hz: refused outside, never clamped."""
    v = positive_float(s, 1000.0)
    if v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000 Hz, got {s}")
    return v


def positive_int(s: str) -> int:
    """An argparse type: `s` as an int > 0; ArgumentTypeError (one line) otherwise."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def knob_arg(name: str) -> Callable[[str], Any]:
    """An argparse type for a knob's flag: the knob's own check (`check_knob_value`)."""

    def parse(s: str) -> Any:
        from anubis_tui.session.knobs import parse_knob_value

        try:
            return parse_knob_value(name, s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model and llama.cpp flags shared by run, record, sweep, bench and agent."""
    p.add_argument("--model", help="a GGUF file (default: the packaged Gemma 3 270M Q4_K_M)")
    p.add_argument("--threads", type=knob_arg("threads"), help="llama.cpp threads")
    p.add_argument(
        "--gpu-layers", type=knob_arg("gpu_layers"), help="layers offloaded to the GPU (-1: all)"
    )
    p.add_argument("--ctx", type=positive_int, dest="n_ctx", help="context size")
    p.add_argument("--max-tokens", type=positive_int, help="tokens per request")
    p.add_argument("--prompt-file", help="one prompt a line, or JSONL with a prompt key")
    fa = p.add_mutually_exclusive_group()
    fa.add_argument(
        "--flash-attn",
        action="store_true",
        default=None,
        help="flash attention on (default: on where layers run on the GPU)",
    )
    fa.add_argument("--no-flash-attn", dest="flash_attn", action="store_false")


def model_config(args: argparse.Namespace, config: Config) -> Config:
    """`config` with the model flags the user gave (`add_model_args`) applied over it."""
    return config.replace(
        model=args.model,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        n_ctx=args.n_ctx,
        max_tokens=args.max_tokens,
        prompt_file=args.prompt_file,
        flash_attn=args.flash_attn,
    )


def spec_from(args: argparse.Namespace, config: Config, t0_ns: int) -> tuple[Spec, ModelFacts]:
    """The worker's spec and the model's facts; `InferenceError` when the model cannot run."""
    return make_spec(model_config(args, config), t0_ns)


def load_recording(path: str) -> Recording:
    """The recording at `path` (``-``: stdin); `ReaderError` when it is not one."""
    from anubis_tui.recording.reader import load

    return load(sys.stdin.buffer if path == "-" else path)


def jsonable(o: Any) -> Any:
    """`o` as strict JSON values: no NaN or infinity (null), bytes as hex, numpy as Python."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [jsonable(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, str | int):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, bytes):
        return o.hex()
    item = getattr(o, "item", None)  # numpy scalars
    if callable(item):
        return jsonable(item())
    return str(o)


def add_export_args(p: argparse.ArgumentParser) -> None:
    """``--export NAME[:OPTIONS]`` (repeatable): extra sinks from ``anubis.sinks`` plugins."""
    p.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="NAME[:OPTIONS]",
        help="also send every record to an anubis.sinks plugin, e.g. prometheus:127.0.0.1:9464",
    )


def open_recording(path: str, force: bool) -> tuple[Any, Path]:
    """A new recording at `path` (``-``: stdout) and where the worker's log goes beside it."""
    import tempfile

    from anubis_tui.recording.writer import open_output

    try:
        if path != "-":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        out = open_output(path, force=force)
    except OSError as e:
        raise CliError(f"cannot create {path}: {e.strerror}") from None
    log = (
        Path(tempfile.mkdtemp(prefix="anubis-")) / "llama.log"
        if path == "-"
        else Path(path + ".log")
    )
    return out, log


def add_attach_args(p: argparse.ArgumentParser) -> None:
    """``--attach URL`` and its options (inference/attach.py, docs/attach.md)."""
    g = p.add_argument_group("attach to a running inference server")
    g.add_argument("--attach", metavar="URL", help="drive and measure the server at URL")
    g.add_argument("--api", choices=("openai", "ollama"), help="its API (default: detected)")
    g.add_argument("--attach-model", metavar="NAME", help="the server's model (default: its first)")
    g.add_argument(
        "--attach-pid",
        type=positive_int,
        metavar="PID",
        help="the server's process (default: the one listening on the URL's port)",
    )
    g.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help="requests in flight (default 1; per-request energy is then apportioned by tokens)",
    )
    g.add_argument(
        "--observe", action="store_true", help="send no requests: tokens from /metrics, if any"
    )


def attach_from(
    args: argparse.Namespace, config: Config, t0_ns: int
) -> tuple[Spec, ModelFacts | None, Any]:
    """The workload spec, the model's facts (when the server names a local GGUF file) and the
    probed `AttachSpec`; `AttachError`, `WorkloadError` or `CliError` (one line) when the
    server cannot be attached to."""
    from anubis_tui.inference.attach import AttachSpec, probe
    from anubis_tui.inference.models import ModelError, read_gguf
    from anubis_tui.inference.workload import load_prompts

    cfg = model_config(args, config)
    for flag, v in (
        ("--model", args.model),
        ("--threads", args.threads),
        ("--gpu-layers", args.gpu_layers),
    ):
        if v is not None:
            raise CliError(f"{flag} is set by the server: it cannot go with --attach")
    prompts = load_prompts(cfg.prompt_file)
    a = AttachSpec(
        url=args.attach,
        api=args.api,
        model=args.attach_model,
        concurrency=args.concurrency,
        observe=args.observe,
        pid=args.attach_pid,
    )
    from anubis_tui.inference.worker import BUILTIN_PROMPTS

    probe(a, prompts or BUILTIN_PROMPTS)
    facts = None
    with contextlib.suppress(ModelError, OSError, ValueError):
        if a.model and a.model.endswith(".gguf") and Path(a.model).is_file():
            facts = read_gguf(Path(a.model))
    spec = Spec(
        model=str(facts.path) if facts else str(a.model),
        t0_ns=t0_ns,
        prompts=prompts,
        threads=None,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
    )
    return spec, facts, a


def workload_from(
    args: argparse.Namespace, config: Config, t0_ns: int, *, remote: bool = False
) -> tuple[Spec | None, ModelFacts | None, Any]:
    """(spec, model facts, AttachSpec) from ``--attach``, the model flags or ``--no-model``
    (then all None); CliError (one line) for flags that do not go together."""
    no_model = bool(getattr(args, "no_model", False))
    if args.attach is not None:  # a server people run instead of our worker
        if no_model or remote:
            what = "--no-model" if no_model else "--remote"
            raise CliError(f"--attach drives a server here: it cannot go with {what}")
        return attach_from(args, config, t0_ns)
    if no_model or remote:
        return None, None, None
    spec, facts = spec_from(args, config, t0_ns)
    return spec, facts, None
