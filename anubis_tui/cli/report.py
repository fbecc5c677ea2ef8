"""`anubis report`: the summary of a recording and its segments, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from anubis_tui.cli.common import jsonable, load_recording
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="summary and profiler segments of a recording")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.analysis.report import render, report

    r = report(load_recording(args.path))
    print(json.dumps(jsonable(r), indent=1, allow_nan=False) if args.json else render(r))
    return 0
