"""`anubis agent`: a headless session speaking msgpack on stdin/stdout (no UI, no textual).

Records go out on stdout in exactly the recording format; commands come in
on stdin (docs/agent-protocol.md, `anubis_tui.session.agent`), each
acknowledged by an ``ack`` Event that is flushed at once. The agent ends,
with a Footer, on a ``stop`` command, on stdin's end, when its consumer
goes away (a broken pipe), or on SIGINT/SIGTERM, also while its consumer has
stopped reading (the stream is written through a bounded, non-blocking
buffer). A local copy (``--record PATH``) is closed with a Footer in every
case; a copy that cannot be written (a full disk) ends the agent with an
``recording_error`` Event and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_export_args,
    add_model_args,
    rate_hz,
    workload_from,
)
from anubis_tui.config import Config

CLOSE_S = 5.0  # the longest wait for a stalled consumer at the end


def add_parser(sub: Any) -> None:
    """Register the ``agent`` subcommand and its flags on `sub` (argparse's subparsers)."""
    a = sub.add_parser(
        "agent",
        help="a headless session on stdin/stdout: records out (the recording format), "
        "commands in (msgpack maps, docs/agent-protocol.md), for `anubis run --remote`",
    )
    a.add_argument("--rate", type=rate_hz, help="sampling rate in Hz (up to 1000)")
    a.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    a.add_argument("--record", metavar="PATH", help="also keep a local recording here")
    a.add_argument("--force", action="store_true", help="overwrite an existing --record file")
    add_model_args(a)
    add_attach_args(a)
    add_export_args(a)
    a.set_defaults(handler=cmd_agent)


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    """Run a headless session on stdin/stdout until stdin closes or ``stop``; returns the
    exit status.
    """
    from anubis_tui.recording.writer import PipeOut, RecordingWriter
    from anubis_tui.session.agent import AgentLoop
    from anubis_tui.session.factory import make_session
    from anubis_tui.session.headless import Headless

    t0 = time.monotonic_ns()
    spec, facts, attach = workload_from(args, config, t0)
    local = _open_copy(args)
    # The stream owns stdout; whatever a library prints goes to stderr instead.
    pipe = PipeOut(os.dup(1))
    os.dup2(2, 1)
    log = Path(tempfile.mkdtemp(prefix="anubis-agent-")) / "llama.log"
    session = make_session(
        config, spec, model=facts, attach=attach, rate_hz=args.rate, t0_ns=t0, log_path=log,
        exports=args.export, on_export_drop=lambda m: print(f"anubis: {m}", file=sys.stderr),
    )  # fmt: skip
    run = Headless(session, label="agent", signal_names=True)
    # The stream is the agent's own writer, not the session's recording: `record` and
    # `record_stop` act on a file beside it and never touch it.
    stream = RecordingWriter(
        pipe,  # type: ignore[arg-type]
        session.header,
        fsync_s=config.fsync_interval_s,
        on_error=lambda msg: run.end("the consumer went away"),
    )
    session.add_sink(stream.submit)
    copy = None
    if local is not None:

        def copy_failed(msg: str) -> None:
            session.emit_event("recording_error", reason=msg, path=args.record)
            run.end("recording error")

        copy = RecordingWriter(
            local, session.header, fsync_s=config.fsync_interval_s, on_error=copy_failed
        )
        session.add_sink(copy.submit)
    try:
        with run:  # HeadlessError: one line, from cli.main
            loop = AgentLoop(session, stream, run.end, run.stop)
            loop.start()
            run.wait(watch_worker=False, watch_recording=False, tick=loop.beat)
    finally:
        stream.close(run.footer, timeout=CLOSE_S)
        if copy is not None:
            copy.close(run.footer)
    return _said(run.reason or "stdin closed", stream, copy, args.record)


def _open_copy(args: argparse.Namespace) -> Any:
    """The ``--record`` copy's file (None without one); CliError (one line) if it cannot be."""
    from anubis_tui.recording.writer import open_output

    if not args.record:
        return None
    if args.record == "-":
        raise CliError("--record -: stdout is the agent's stream; name a file")
    try:
        return open_output(args.record, force=args.force)  # RecordingError: one line
    except OSError as e:
        raise CliError(f"cannot create {args.record}: {e.strerror}") from None


def _said(why: str, stream: Any, copy: Any, path: str | None) -> int:
    """The closing line on stderr; 1 when the ``--record`` copy failed."""
    msg = f"anubis: agent stopped ({why})"
    if stream.error and why != "the consumer went away":
        msg += f"; the stream: {stream.error}"  # a consumer that stopped reading
    if copy is not None and copy.error:
        print(f"{msg} — {path}: {copy.error}", file=sys.stderr)
        return 1
    print(msg, file=sys.stderr)
    return 0
