"""`anubis run` and `anubis replay`: the two ways into the app (textual is imported here only)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from anubis_tui.config import Config


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.errors import CliError
    from anubis_tui.inference.commands import BenchError, spec_from
    from anubis_tui.recording.format import default_path
    from anubis_tui.sampler import clamp_rate
    from anubis_tui.ui.app import LiveOptions, make_app

    if getattr(args, "rate", None) is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    spec = facts = None
    if not getattr(args, "no_model", False):
        try:
            spec, facts = spec_from(args, config, time.monotonic_ns())
        except BenchError as e:
            raise CliError(str(e)) from None
    record = None
    if not getattr(args, "no_record", False):
        record = getattr(args, "record", None) or default_path(config.record_dir)
        if os.path.lexists(record):
            raise CliError(f"{record} exists; choose another --record path")
        Path(record).parent.mkdir(parents=True, exist_ok=True)
    log = Path(record + ".log") if record else Path(os.devnull)
    app = make_app(
        config, live=LiveOptions(spec=spec, model=facts, record_path=record, log_path=log)
    )
    app.run()
    if record:
        print(f"anubis: session recorded to {record}", file=sys.stderr)
    return app.return_code or 0


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.errors import CliError
    from anubis_tui.recording.reader import ReaderError
    from anubis_tui.recording.replay import Replay
    from anubis_tui.ui.app import make_app

    try:
        if args.path == "-":
            if sys.stdin.isatty():
                raise CliError("replay - reads a recording from stdin; pipe one in")
            # The terminal is the UI's: take the stream's fd and give stdin back to the tty.
            stream = os.fdopen(os.dup(0), "rb", buffering=0)
            tty = os.open("/dev/tty", os.O_RDONLY)
            os.dup2(tty, 0)
            os.close(tty)
            replay = Replay.from_stream(stream)
        else:
            replay = Replay.from_file(args.path)
    except ReaderError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot open the terminal for replay: {e.strerror}") from None
    app = make_app(config, replay=replay)
    app.run()
    return app.return_code or 0
