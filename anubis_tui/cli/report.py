"""`anubis report`: the summary of a recording and its segments, as text or JSON."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Any

from anubis_tui.cli.common import CliError, jsonable, load_recording, positive_float
from anubis_tui.cli.export import PLOT_FORMATS
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``report`` subcommand and its flags on `sub` (argparse's subparsers)."""
    p = sub.add_parser("report", help="summary and profiler segments of a recording")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--budget",
        type=lambda s: positive_float(s, 100.0),
        default=2.0,
        metavar="PCT",
        help="a sweep's overhead budget: tok/s and J/token, in %% (default 2)",
    )
    p.add_argument("--plot", metavar="OUT.png", help="a sweep's overhead and settings figure")
    p.add_argument("--force", action="store_true", help="overwrite the --plot or --rows file")
    p.add_argument(
        "--rows", metavar="OUT.jsonl", help="result rows, one per setting (- for stdout: no report)"
    )
    p.add_argument(
        "--max-ppl-increase", type=lambda s: positive_float(s, 1000.0), default=5.0, metavar="PCT",
        help="the quality budget of a sweep --quality: perplexity above the baseline's, in %% "
        "(default 5)",
    )  # fmt: skip
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    """Print a recording's report (text or ``--json``), and write ``--plot``/``--rows``;
    returns 0.
    """
    from anubis_tui.analysis.report import render, report_file

    if args.plot and os.path.splitext(args.plot)[1].lower() not in PLOT_FORMATS:
        raise CliError(f"--plot {args.plot}: the name must end in {', '.join(PLOT_FORMATS)}")
    if args.rows and args.path == "-":
        raise CliError("--rows needs a recording file (its sha256 names the rows), not -")
    # One pass, a chunk at a time: a day-long recording reports in bounded memory (issue 20).
    # A ReaderError is an AnubisError: the CLI prints its one line.
    fold = report_file(sys.stdin.buffer if args.path == "-" else args.path)
    r = fold.result(fold.recovery, budget_pct=args.budget)
    qs = [e.payload for e in fold.kept if e.kind == "quality"]  # sweep --quality (issue 26)
    if qs:  # before --plot, which draws its front
        from anubis_tui.analysis.quality import quality_table

        r["quality"] = quality_table(r.get("settings") or [], qs, args.max_ppl_increase)
    if args.plot:
        from anubis_tui.analysis.export import plot_sweep
        from anubis_tui.cli.export import write_new

        img = io.BytesIO()
        plot_sweep(r, img, os.path.splitext(args.plot)[1][1:].lower())
        write_new(args.plot, img.getvalue(), args.force)
    if args.rows:
        from anubis_tui.cli.db import write_rows

        # result rows need every record (identity, chunks): loaded whole
        write_rows(load_recording(args.path), args.path, r, args.rows, args.force)
        if args.rows == "-":
            return 0
    print(json.dumps(jsonable(r), indent=1, allow_nan=False) if args.json else render(r))
    if qs and not args.json:
        from anubis_tui.analysis.quality import render_quality

        print("\n".join(render_quality(r["quality"])))
    return 0
