"""`anubis export`: a recording as CSV and/or a PNG plot."""

from __future__ import annotations

import argparse
from typing import Any

from anubis_tui.cli.common import CliError, load_recording
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="a recording as CSV or a PNG plot")
    e.add_argument("path")
    e.add_argument("--csv", metavar="OUT")
    e.add_argument("--plot", metavar="OUT_PNG")
    e.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.analysis.export import ExportError, plot, write_csv

    if not args.csv and not args.plot:
        raise CliError("export needs --csv OUT and/or --plot OUT.png")
    rec = load_recording(args.path)
    try:
        if args.csv:
            try:
                f = open(args.csv, "w", newline="")  # noqa: SIM115 - closed below
            except OSError as e:
                raise CliError(f"cannot write {args.csv}: {e.strerror}") from None
            with f:
                write_csv(rec, f)
        if args.plot:
            plot(rec, args.plot)
    except ExportError as e:
        raise CliError(str(e)) from None
    return 0
