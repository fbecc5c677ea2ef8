"""`anubis replay PATH|-`: a recording, or a stream still being written, in the same app."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from anubis_tui.cli import encoding
from anubis_tui.cli.common import CliError
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``replay`` subcommand and its flags on `sub` (argparse's subparsers)."""
    rp = sub.add_parser("replay", help="open a recording (or - for a stream on stdin)")
    rp.add_argument("path")
    rp.set_defaults(handler=cmd_replay)


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    """Open a recording (or ``-``: a stream on stdin) in the app; returns the app's exit status."""
    from anubis_tui.analysis.replay import Replay
    from anubis_tui.ui.app import make_app  # textual is imported here only

    if why := encoding.terminal_problem():
        raise CliError(why)

    try:
        if args.path == "-":
            if sys.stdin.isatty():
                raise CliError("replay - reads a recording from stdin; pipe one in")
            # The terminal is the UI's: take the stream's fd and give stdin back to the tty,
            # once the stream has shown it is a recording.
            stream = os.fdopen(os.dup(0), "rb", buffering=0)
            replay = Replay.from_stream(stream)
            why = replay.wait_header()
            if why is not None:
                raise CliError(f"replay -: not an anubis recording ({why})")
            tty = os.open("/dev/tty", os.O_RDONLY)
            os.dup2(tty, 0)
            os.close(tty)
        else:
            replay = Replay.from_file(args.path)
    except OSError as e:
        raise CliError(f"cannot open the terminal for replay: {e.strerror}") from None
    app = make_app(config, replay=replay)
    app.run()
    return app.return_code or 0
