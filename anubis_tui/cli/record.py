"""`anubis record`: a headless session recorded to msgpack, optionally running a profiler plan.

The flags are parsed here; the session is built by `session.factory.make_session`
and run by `session.headless.Headless`: the plan runs in a thread and acts
only through the session's control surface, the main thread waits for the
plan, the duration or a signal, whichever comes first. SIGINT and SIGTERM
always end the session cleanly, with a Footer, even while a profiler
relaunches the worker.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_export_args,
    add_model_args,
    open_recording,
    positive_float,
    rate_hz,
    workload_from,
)
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``record`` subcommand and its flags on `sub` (argparse's subparsers)."""
    r = sub.add_parser("record", help="a headless session recorded to msgpack")
    r.add_argument("--duration", type=positive_float, help="seconds (default: until Ctrl-C)")
    r.add_argument(
        "-o",
        "--output",
        help="a file, or - for stdout (default: a new file in $XDG_DATA_HOME/anubis/recordings)",
    )
    r.add_argument("--rate", type=rate_hz, help="sampling rate in Hz (up to 1000)")
    r.add_argument("--force", action="store_true", help="overwrite an existing file")
    r.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    r.add_argument(
        "--plan",
        help="steps of profiler states and knob settings, e.g. off:10,py-spy@100:10,"
        "py-spy@1000n:10,scalene@100:10,threads=1:10,gpu_layers=all+power_limit_w=300:20 "
        "(n: py-spy --native; + joins); the recording ends with the plan",
    )
    add_model_args(r)
    add_attach_args(r)
    add_export_args(r)
    r.set_defaults(handler=cmd_record)


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    """Record a headless session (and its ``--plan``) until ``--duration`` or Ctrl-C;
    returns the exit status.
    """
    from anubis_tui.recording.format import default_path
    from anubis_tui.session.factory import make_session
    from anubis_tui.session.headless import Headless

    t0 = time.monotonic_ns()
    plan = _plan(args)
    spec, facts, attach = workload_from(args, config, t0)
    path = args.output or default_path(config.record_dir)
    out, log = open_recording(path, args.force)
    session = make_session(
        config, spec, model=facts, attach=attach, rate_hz=args.rate, t0_ns=t0,
        log_path=log, log_replace=args.force, exports=args.export,
        on_export_drop=lambda m: print(f"anubis: {m}", file=sys.stderr),
    )  # fmt: skip
    # (PluginError, HeadlessError: one line each, from cli.main)
    session.start_recording(path, out=out)
    with Headless(session) as run:
        if plan is not None:
            run.wait(run.plan(plan), "plan")
        else:  # the worker's death ends a run without a plan (a plan watches it itself)
            run.wait(duration_s=args.duration, watch_worker=spec is not None)
    return _said(session, run.footer, path)


def _plan(args: argparse.Namespace) -> Any:
    """The parsed ``--plan`` (None without one); CliError (one line) for a bad one."""
    from anubis_tui.session.plan import parse_plan

    if args.plan is None:
        return None
    if args.no_model:
        raise CliError("--plan profiles the inference: it cannot go with --no-model")
    try:
        return parse_plan(args.plan)
    except ValueError as e:
        raise CliError(f"bad --plan: {e}") from None


def _said(session: Any, footer: Any, path: str) -> int:
    """The closing line on stderr: what reached the file, and why it failed if it did."""
    w = session.writer
    where = "stdout" if path == "-" else path
    kept = w.samples_flushed if w is not None else 0  # what reached the file, not what was sent
    tokens = footer.totals["tokens_decode"] if footer is not None else 0
    msg = f"anubis: recorded {kept} samples, {tokens} tokens to {where}"
    failed = False
    if w is not None and w.error:
        msg += f" — {w.error}"
        failed = True
    if session.worker_error:
        msg += f" — {session.worker_error}"
        failed = True
    print(msg, file=sys.stderr)
    return 1 if failed else 0
