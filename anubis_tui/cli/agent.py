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
import queue
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_export_args,
    add_model_args,
    attach_exports,
    attach_from,
    rate_hz,
    spec_from,
)
from anubis_tui.config import Config

COMMAND_QUEUE = 256  # commands waiting to run; more are refused (one ack a chunk)
HEARTBEAT_S = 1.0  # the stream carries something at least this often (remote stall display)
CLOSE_S = 5.0  # the longest wait for a stalled consumer at the end


def add_parser(sub: Any) -> None:
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
    from anubis_tui.recording.writer import PipeOut, RecordingWriter, open_output
    from anubis_tui.records import Event
    from anubis_tui.session import Session
    from anubis_tui.session.agent import Intake, run_command
    from anubis_tui.session.core import Outcome
    from anubis_tui.session.sampler import clamp_rate

    t0 = time.monotonic_ns()
    if args.rate is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    spec = facts = attach = None
    if args.attach is not None:  # a server on the agent's machine (inference/attach.py)
        if args.no_model:
            raise CliError("--attach drives a server's model: it cannot go with --no-model")
        spec, facts, attach = attach_from(args, config, t0)
    elif not args.no_model:
        spec, facts = spec_from(args, config, t0)
    local = None
    if args.record:
        if args.record == "-":
            raise CliError("--record -: stdout is the agent's stream; name a file")
        try:
            local = open_output(args.record, force=args.force)
        except OSError as e:
            raise CliError(f"cannot create {args.record}: {e.strerror}") from None
    # The stream owns stdout; whatever a library prints goes to stderr instead.
    pipe = PipeOut(os.dup(1))
    os.dup2(2, 1)
    log = Path(tempfile.mkdtemp(prefix="anubis-agent-")) / "llama.log"
    session = Session(config, spec=spec, model=facts, t0_ns=t0, log_path=log, attach=attach)
    stop = threading.Event()
    why = ["stdin closed"]

    def end(reason: str) -> None:
        if not stop.is_set():
            why[0] = reason
            stop.set()

    exports = attach_exports(session, args.export)
    # The stream is the agent's own writer, not the session's recording: `record` and
    # `record_stop` act on a file beside it and never touch it.
    stream = RecordingWriter(
        pipe,  # type: ignore[arg-type]
        session.header,
        fsync_s=config.fsync_interval_s,
        on_error=lambda msg: end("the consumer went away"),
    )
    session.add_sink(stream.submit)
    copy = None
    copy_error: list[str] = []
    if local is not None:

        def copy_failed(msg: str) -> None:
            copy_error.append(msg)
            session.emit_event("recording_error", reason=msg, path=args.record)
            end("recording error")

        copy = RecordingWriter(
            local, session.header, fsync_s=config.fsync_interval_s, on_error=copy_failed
        )
        session.add_sink(copy.submit)

    def ack(cid: Any, cmd: str, out: Outcome) -> None:
        """The ack after the command's own Events, written and flushed now (not in 0.5 s)."""
        session.emit_event("ack", id=cid, cmd=cmd, ok=out.ok, message=out.message)
        session.bus.flush(0.5)
        stream.flush_soon()

    commands: queue.Queue[Any] = queue.Queue(COMMAND_QUEUE)

    def read_commands() -> None:
        intake = Intake()  # one set of limits for the whole session, also after a refusal
        while not stop.is_set():
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                end("stdin closed")
                return
            # Invalid input is answered once a read, not once an object: 2 MB of zero
            # bytes is 2 million msgpack integers, and must not become 2 million acks.
            maps, said = intake.feed(chunk)
            refused = 0
            for msg in maps:
                if msg.get("cmd") == "stop":
                    # Out of band: a command that hangs (a model reload) must not hold `stop`.
                    cid, cmd, out = run_command(session, msg)
                    ack(cid, cmd, out)
                    if out.ok:
                        end("stop command")
                        return
                    continue
                try:
                    commands.put_nowait(msg)
                except queue.Full:
                    refused += 1
            if refused:
                said.append(f"{refused} commands refused: {COMMAND_QUEUE} are waiting")
            if said:
                ack(None, "?", Outcome(False, "; ".join(said)))

    def run_commands() -> None:
        """One command at a time, in order (a knob may reload the model): acks keep order."""
        while not stop.is_set():
            try:
                msg = commands.get(timeout=0.2)
            except queue.Empty:
                continue
            cid, cmd, out = run_command(session, msg)
            try:
                ack(cid, cmd, out)
            except Exception as e:  # never the end of the loop
                print(f"anubis: agent: cannot acknowledge {cmd}: {e}", file=sys.stderr)

    def on_signal(signum: int, frame: Any) -> None:
        end(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            session.start()
        except OSError as e:
            raise CliError(str(e) if not e.strerror else f"cannot start: {e.strerror}") from None
        threading.Thread(target=read_commands, name="agent-in", daemon=True).start()
        threading.Thread(target=run_commands, name="agent-commands", daemon=True).start()
        beat = time.monotonic()
        while not stop.wait(0.2):
            if stream.error:
                end("the consumer went away")
            elif time.monotonic() - beat >= HEARTBEAT_S:
                # Straight to the stream (not the bus, not the copy): a link that carries
                # nothing for 2 s is stalled, whatever the sampling rate.
                beat = time.monotonic()
                stream.submit(Event(session.bus.now(), "heartbeat", {}))
    finally:
        footer = session.stop(f"agent: {why[0]}")
        stream.close(footer, timeout=CLOSE_S)
        if copy is not None:
            copy.close(footer)
        for sink in exports:
            sink.close()
        for s, h in old.items():
            signal.signal(s, h)
    msg = f"anubis: agent stopped ({why[0]})"
    if stream.error and why[0] != "the consumer went away":
        msg += f"; the stream: {stream.error}"  # a consumer that stopped reading
    if copy is not None and copy.error:
        print(f"{msg} — {args.record}: {copy.error}", file=sys.stderr)
        return 1
    print(msg, file=sys.stderr)
    return 0
