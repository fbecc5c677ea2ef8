"""`anubis run` (the default command): the live monitor."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anubis_tui.cli import encoding
from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_export_args,
    add_model_args,
    rate_hz,
    workload_from,
)
from anubis_tui.config import Config
from anubis_tui.records import Event, Record


def add_parser(sub: Any) -> None:
    """Register the ``run`` subcommand and its flags on `sub` (argparse's subparsers)."""
    r = sub.add_parser("run", help="the live monitor (the default command)")
    r.add_argument("--rate", type=rate_hz, help="sampling rate in Hz (up to 1000)")
    rec = r.add_mutually_exclusive_group()
    rec.add_argument(
        "--record",
        metavar="PATH",
        help="record to PATH (default: a new file in $XDG_DATA_HOME/anubis/recordings)",
    )
    rec.add_argument("--no-record", action="store_true", help="do not record")
    r.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    r.add_argument(
        "--scalene-ready",
        action="store_true",
        help="run the worker under scalene (profiling off) so s toggles at once",
    )
    r.add_argument(
        "--pyspy-native",
        action="store_true",
        help="py-spy with --native (C frames too; stops the worker to sample)",
    )
    r.add_argument(
        "--remote",
        metavar="[USER@]HOST",
        help="run the session on HOST through ssh (your keys and config apply); "
        "every key acts there, and the session is recorded here",
    )
    r.add_argument(
        "--remote-cmd",
        default="anubis agent",
        help="what ssh runs there (default: anubis agent; add its flags here)",
    )
    r.add_argument("--ssh", default="ssh", help="the ssh command (default: ssh), e.g. 'ssh -F cfg'")
    r.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="GGUF files here join the model cache in the model picker (o); repeatable",
    )
    add_model_args(r)
    add_attach_args(r)
    add_export_args(r)
    r.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """Start the live monitor (recording unless ``--no-record``); returns the app's exit status."""
    if args.remote:  # before anything, the UI's import included
        from anubis_tui.session.remote import host_problem

        if why := host_problem(args.remote):
            raise CliError(f"--remote {args.remote!r}: {why}")
    from anubis_tui.session.sampler import clamp_rate
    from anubis_tui.ui.app import LiveOptions, make_app  # textual is imported here only

    if why := encoding.terminal_problem():
        raise CliError(why)
    if args.rate is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    dirs = [Path(d).expanduser() for d in args.models_dir]
    for d in dirs:
        if not d.is_dir():
            raise CliError(f"--models-dir {d}: not a directory")
    spec, facts, attach = workload_from(args, config, time.monotonic_ns(), remote=bool(args.remote))
    record = _record_path(args, config)
    failed: list[str] = []
    app = make_app(
        config,
        live=LiveOptions(
            spec=spec,
            model=facts,
            record_path=record,
            log_path=_log_path(record),
            scalene_ready=args.scalene_ready,
            pyspy_native=args.pyspy_native,
            models_dirs=dirs,
            exports=args.export,
            remote=args.remote,
            remote_cmd=args.remote_cmd,
            ssh=args.ssh,
            attach=attach,
            sinks=[_recording_errors(failed, record)],
        ),
    )
    app.run()
    # Only files that exist: a session that never started (or a remote one whose link
    # never came up) names nothing; recordings started with r are named too.
    for path in dict.fromkeys(app.recorded):
        if os.path.isfile(path):
            print(f"anubis: recorded to {path}", file=sys.stderr)
    if failed:  # like `record`: the error, and a non-zero exit (issue 20)
        print(f"anubis: {failed[0]}", file=sys.stderr)
        return app.return_code or 1
    return app.return_code or 0


def _record_path(args: argparse.Namespace, config: Config) -> str | None:
    """Where the session records (None with --no-record); a path that exists is refused."""
    from anubis_tui.recording.format import default_path

    if args.no_record:
        return None
    record: str = args.record or default_path(config.record_dir)
    if os.path.lexists(record):
        raise CliError(f"{record} exists; choose another --record path")
    try:
        Path(record).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create {Path(record).parent}: {e.strerror}") from None
    return record


def _log_path(record: str | None) -> Path:
    """The worker's llama.cpp log: beside the recording, or in a new temporary folder."""
    if record:
        return Path(record + ".log")
    return Path(tempfile.mkdtemp(prefix="anubis-run-")) / "llama.log"


def _recording_errors(failed: list[str], record: str | None) -> Callable[[Record], None]:
    """A sink keeping each ``recording_error`` Event's reason (local or remote session):
    the app shows it and goes on; the exit status says it at the end."""

    def sink(rec: Record) -> None:
        if isinstance(rec, Event) and rec.kind == "recording_error":
            where = rec.payload.get("path") or record
            reason = str(rec.payload.get("reason") or "the recording failed")
            failed.append(f"{where}: {reason}" if where else reason)

    return sink
