"""`anubis agent`: a headless session speaking msgpack on stdin/stdout (no UI, no textual).

Records go out on stdout in exactly the recording format; commands come in
on stdin (see `anubis_tui.session.agent`), each acknowledged by an ``ack``
Event. The agent ends, with a Footer, on a ``stop`` command, on stdin's end,
when its consumer stops reading (a broken pipe), or on SIGINT/SIGTERM; a
local copy (``--record PATH``) is closed cleanly in every case.
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
    add_export_args,
    add_model_args,
    attach_exports,
    rate_hz,
    spec_from,
)
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "agent",
        help="a headless session on stdin/stdout: records out (the recording format), "
        "commands in (msgpack maps), for `anubis run --remote` and scripts",
    )
    a.add_argument("--rate", type=rate_hz, help="sampling rate in Hz (up to 1000)")
    a.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    a.add_argument("--record", metavar="PATH", help="also keep a local recording here")
    add_model_args(a)
    add_export_args(a)
    a.set_defaults(handler=cmd_agent)


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    import msgpack

    from anubis_tui.recording.writer import RecordingError, RecordingWriter, open_output
    from anubis_tui.session import Session
    from anubis_tui.session.agent import MAX_COMMAND_BYTES, run_command
    from anubis_tui.session.sampler import clamp_rate

    t0 = time.monotonic_ns()
    if args.rate is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    spec = facts = None
    if not args.no_model:
        spec, facts = spec_from(args, config, t0)
    local = None
    if args.record:
        try:
            local = open_output(args.record)
        except RecordingError as e:
            raise CliError(str(e)) from None
        except OSError as e:
            raise CliError(f"cannot create {args.record}: {e.strerror}") from None
    # The stream owns stdout; whatever a library prints goes to stderr instead.
    stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    log = Path(tempfile.mkdtemp(prefix="anubis-agent-")) / "llama.log"
    session = Session(config, spec=spec, model=facts, t0_ns=t0, log_path=log)
    exports = attach_exports(session, args.export)
    session.start_recording("-", out=stream)
    copy = None
    if local is not None:
        copy = RecordingWriter(local, session.header, fsync_s=config.fsync_interval_s)
        session.add_sink(copy.submit)
    stop = threading.Event()
    why = ["stdin closed"]

    def end(reason: str) -> None:
        if not stop.is_set():
            why[0] = reason
            stop.set()

    commands: queue.Queue[Any] = queue.Queue()

    def read_commands() -> None:
        u = msgpack.Unpacker(
            max_buffer_size=4 * MAX_COMMAND_BYTES,
            max_str_len=MAX_COMMAND_BYTES,
            max_bin_len=MAX_COMMAND_BYTES,
            max_array_len=1024,
            max_map_len=64,
        )
        while not stop.is_set():
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                end("stdin closed")
                return
            u.feed(chunk)
            try:
                for msg in u:
                    commands.put(msg)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
                session.emit_event("ack", id=None, cmd="?", ok=False, message=f"bad command: {e}")
                u = msgpack.Unpacker(max_buffer_size=4 * MAX_COMMAND_BYTES)

    def run_commands() -> None:
        """One command at a time, in order (a knob may reload the model): acks keep order."""
        while not stop.is_set():
            try:
                msg = commands.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(msg, dict) and msg.get("cmd") == "stop":
                session.emit_event("ack", id=msg.get("id"), cmd="stop", ok=True, message="stopping")
                end("stop command")
                return
            cid, cmd, out = run_command(session, msg)
            session.emit_event("ack", id=cid, cmd=cmd, ok=out.ok, message=out.message)

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
        while not stop.wait(0.2):
            w = session.writer
            if w is not None and w.error:
                end("the consumer went away")
    finally:
        session.stop(f"agent: {why[0]}")
        if copy is not None:
            copy.close(session.stop("agent"))
        for sink in exports:
            sink.close()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"anubis: agent stopped ({why[0]})", file=sys.stderr)
    return 0
