"""`anubis export`: a recording as CSV and/or a PNG (or SVG, PDF) plot.

Outputs are new files: an existing one is refused unless --force, and a
symlink is never written through. A write that fails (disk full) is an
error, never a silent success.
"""

from __future__ import annotations

import argparse
import io
import os
from typing import Any

from anubis_tui.cli.common import CliError, load_recording
from anubis_tui.config import Config

PLOT_FORMATS = (".png", ".svg", ".pdf")


def add_parser(sub: Any) -> None:
    """Register the ``export`` subcommand and its flags on `sub` (argparse's subparsers)."""
    e = sub.add_parser("export", help="a recording as CSV or a PNG plot")
    e.add_argument("path")
    e.add_argument("--csv", metavar="OUT")
    e.add_argument("--plot", metavar="OUT_PNG", help=f"a plot ({', '.join(PLOT_FORMATS)})")
    e.add_argument(
        "--requests-csv", metavar="OUT", help="one row per request: its window, tokens, J, J/token"
    )
    e.add_argument("--force", action="store_true", help="overwrite existing output files")
    e.set_defaults(handler=cmd_export)


def write_new(path: str, data: bytes, force: bool) -> None:
    """`data` to a new file at `path` (refusing symlinks, and existing files without force)."""
    from anubis_tui.recording.writer import open_output

    if path == "-":
        raise CliError("export writes files, not stdout")
    f = open_output(path, force=force)
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    """Write a recording's CSV and/or plot as new files (``--force`` to overwrite); returns 0."""
    from anubis_tui.analysis.export import plot, write_csv
    from anubis_tui.analysis.windows import write_requests_csv

    if not args.csv and not args.plot and not args.requests_csv:
        raise CliError("export needs --csv OUT, --requests-csv OUT and/or --plot OUT.png")
    if args.plot and os.path.splitext(args.plot)[1].lower() not in PLOT_FORMATS:
        raise CliError(f"--plot {args.plot}: the name must end in {', '.join(PLOT_FORMATS)}")
    rec = load_recording(args.path)
    if args.csv:
        buf = io.StringIO(newline="")
        write_csv(rec, buf)
        write_new(args.csv, buf.getvalue().encode(), args.force)
    if args.requests_csv:
        buf = io.StringIO(newline="")
        write_requests_csv(rec, buf)
        write_new(args.requests_csv, buf.getvalue().encode(), args.force)
    if args.plot:
        img = io.BytesIO()
        plot(rec, img, os.path.splitext(args.plot)[1][1:].lower())
        write_new(args.plot, img.getvalue(), args.force)
    return 0
