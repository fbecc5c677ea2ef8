"""`anubis record`: a headless session recorded to msgpack, optionally running a profiler plan.

The plan runs in a thread and acts only through the session's control
surface; the main thread waits for the plan, the duration or a signal,
whichever comes first. SIGINT and SIGTERM always end the session cleanly,
with a Footer, even while a profiler relaunches the worker.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_export_args,
    add_model_args,
    attach_exports,
    attach_from,
    open_recording,
    positive_float,
    rate_hz,
    spec_from,
)
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
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
    from anubis_tui.recording.format import default_path
    from anubis_tui.session import Session
    from anubis_tui.session.plan import parse_plan
    from anubis_tui.session.sampler import clamp_rate

    t0 = time.monotonic_ns()
    plan = None
    if args.plan is not None:
        if args.no_model:
            raise CliError("--plan profiles the inference: it cannot go with --no-model")
        try:
            plan = parse_plan(args.plan)
        except ValueError as e:
            raise CliError(f"bad --plan: {e}") from None
    if args.rate is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    spec = facts = attach = None
    if args.attach is not None:  # a server people run instead of our worker
        if args.no_model:
            raise CliError("--attach drives a server's model: it cannot go with --no-model")
        spec, facts, attach = attach_from(args, config, t0)
    elif not args.no_model:
        spec, facts = spec_from(args, config, t0)
    path = args.output or default_path(config.record_dir)
    out, log = open_recording(path, args.force)
    session = Session(
        config,
        spec=spec,
        model=facts,
        t0_ns=t0,
        log_path=log,
        log_replace=args.force,
        attach=attach,
    )
    exports = attach_exports(session, args.export)
    session.start_recording(path, out=out)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    reason = "duration"
    try:
        try:
            session.start()
        except OSError as e:
            stop.set()
            reason = "start failed"
            raise CliError(str(e) if not e.strerror else f"cannot start: {e.strerror}") from None
        done = None
        if plan is not None:
            done = threading.Event()
            threading.Thread(
                target=_run_plan, args=(session, plan, stop, done), name="plan", daemon=True
            ).start()
        end = time.monotonic() + args.duration if args.duration and plan is None else None
        # One wait, whatever ends it first: a signal, the plan, the duration, the worker
        # or the recording failing.
        while not stop.wait(0.2):
            if done is not None and done.is_set():
                reason = "plan"
                break
            # (A plan watches the worker itself: a scalene relaunch may bring it back.)
            dead = spec is not None and not session.worker_alive() and session.worker_error
            if done is None and dead:
                reason = "worker"
                break
            if session.writer is not None and session.writer.error:
                reason = "recording error"
                break
            if end is not None and time.monotonic() >= end:
                break
        else:
            reason = "signal"
        stop.set()  # a plan still running stops at its next step
    finally:
        footer = session.stop(reason)
        for sink in exports:
            sink.close()
        for s, h in old.items():
            signal.signal(s, h)
    w = session.writer
    where = "stdout" if path == "-" else path
    kept = w.samples_flushed if w is not None else 0  # what reached the file, not what was sent
    msg = f"anubis: recorded {kept} samples, {footer.totals['tokens_decode']} tokens to {where}"
    failed = False
    if w is not None and w.error:
        msg += f" — {w.error}"
        failed = True
    if session.worker_error:
        msg += f" — {session.worker_error}"
        failed = True
    print(msg, file=sys.stderr)
    return 1 if failed else 0


def _run_plan(session: Any, plan: list[Any], stop: threading.Event, done: threading.Event) -> None:
    """Each step in turn once the model is loaded; a worker that dies ends the plan."""
    try:
        err = session.wait_loaded()
        if err:
            print(f"anubis: plan not run: {err}", file=sys.stderr)
            return
        for step in plan:
            if stop.is_set():
                return
            said = []
            for name, value in step.knobs.items():
                said.append(session.set_knob(name, value).message)
            if step.profiler is not None:
                said.append(session.profiler_apply(step.profiler).message)
            print(
                f"anubis: plan {step.describe()} for {step.seconds:g} s: {'; '.join(said)}",
                file=sys.stderr,
            )
            end = time.monotonic() + step.seconds
            while not stop.wait(0.2) and time.monotonic() < end:
                if not session.worker_alive() and session.worker_error:
                    print(f"anubis: plan ended: {session.worker_error}", file=sys.stderr)
                    return
    finally:
        done.set()
