"""`anubis compare A B`: an energy gate; exits 1 when B regresses beyond threshold and noise."""

from __future__ import annotations

import argparse
import json
from typing import Any

from anubis_tui.cli.common import jsonable, load_recording, positive_float
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "compare",
        help="two recordings' decode tok/s, J/token and power; exit 1 when B regresses",
    )
    c.add_argument("a", help="the reference recording (or sweep)")
    c.add_argument("b", help="the recording that must not be worse")
    c.add_argument(
        "--max-regression",
        type=lambda s: positive_float(s, 1000.0),
        default=5.0,
        metavar="PCT",
        help="how much worse B may be, in %% (default 5), beyond the noise",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.analysis.compare import compare, render_compare

    ra, rb = load_recording(args.a), load_recording(args.b)
    r = compare(ra.records, rb.records, args.max_regression)
    if args.json:
        print(json.dumps(jsonable(r), indent=1, allow_nan=False))
    else:
        print(render_compare(r, args.a, args.b))
    return 0 if r["ok"] else 1
