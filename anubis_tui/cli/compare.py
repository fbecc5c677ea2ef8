"""`anubis compare A… --vs B…`: a regression gate with three outcomes (docs/compare.md).

Exit status: 0 no regression, 1 regression, 3 inconclusive, 2 refused (the
recordings differ in identity, a side has no baseline time, or bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from anubis_tui.cli.common import CliError, jsonable, load_recording, positive_float
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``compare`` subcommand and its flags on `sub` (argparse's subparsers)."""
    c = sub.add_parser(
        "compare",
        help="is B worse than A (decode tok/s, J/token)? exit 0 no, 1 yes, 3 inconclusive, "
        "2 refused",
        description="Compare recordings' baseline time. `anubis compare A B` compares one run "
        "a side (chunks with an autocorrelation-aware interval); `anubis compare A1 A2 … --vs "
        "B1 B2 …` makes runs the unit. Recordings must match in identity (hardware, runtime, "
        "model, workload, setting, measurement) unless --allow-different names the field. "
        "Exit status: 0 no regression, 1 regression, 3 inconclusive, 2 refused.",
    )
    c.add_argument("a", nargs="+", help="the reference recording(s) (or sweeps)")
    c.add_argument(
        "--vs",
        nargs="+",
        metavar="B",
        help="the recording(s) that must not be worse (without --vs: the last positional)",
    )
    c.add_argument(
        "--max-regression",
        type=lambda s: positive_float(s, 1000.0),
        default=5.0,
        metavar="PCT",
        help="how much worse B may be, in %% (default 5); the interval decides against it",
    )
    c.add_argument(
        "--allow-different",
        action="append",
        default=[],
        metavar="FIELD",
        help="an identity field (e.g. runtime.llama_cpp) or group (e.g. runtime) that may "
        "differ; repeatable",
    )
    c.add_argument(
        "--chunk-s",
        type=lambda s: positive_float(s, 600.0),
        default=5.0,
        metavar="S",
        help="chunk length in seconds for one-run-a-side comparisons (default 5)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace, config: Config) -> int:
    """Compare recordings A and B (docs/compare.md); returns 0 no regression, 1 regression,
    3 inconclusive, 2 refused.
    """
    from anubis_tui.analysis.compare import EXIT, compare, render_compare
    from anubis_tui.analysis.identity import GROUPS, differences, flat, identity, unchecked

    names_a, names_b = list(args.a), list(args.vs or [])
    if not names_b:
        if len(names_a) != 2:
            raise CliError("compare needs A B, or A1 A2 … --vs B1 B2 …")
        names_a, names_b = names_a[:1], names_a[1:]
    fields = set(flat(identity_of_nothing()))
    for f in args.allow_different:
        if f not in fields and f not in GROUPS:
            raise CliError(
                f"--allow-different {f}: not an identity field or group "
                f"(groups: {', '.join(GROUPS)}; fields like runtime.llama_cpp)"
            )
    recs = {n: load_recording(n) for n in dict.fromkeys(names_a + names_b)}
    idents = {n: identity(r.header, r.records) for n, r in recs.items()}
    ref = names_a[0]
    refusals: list[str] = []
    notes: list[str] = []
    for n in idents:
        if n == ref:
            continue
        pair = len(idents) > 2
        for d in differences(idents[ref], idents[n], args.allow_different):
            refusals.append(f"{n} differs from {ref}: {d}" if pair else f"differs: {d}")
        for u in unchecked(idents[ref], idents[n]):
            if u not in notes:
                notes.append(u)
    if refusals:
        for line in refusals:
            print(f"anubis: compare: {line}", file=sys.stderr)
        print(
            "anubis: compare: refused: the recordings differ (name a field or group with "
            "--allow-different FIELD when the difference is the point)",
            file=sys.stderr,
        )
        return 2
    estimated_only = any(
        (r.header.config.get("system_power") or {}).get("tier") == "estimate" for r in recs.values()
    )
    r = compare(
        [recs[n].records for n in names_a],
        [recs[n].records for n in names_b],
        args.max_regression,
        chunk_s=args.chunk_s,
        gate_energy=not estimated_only,
    )
    r["unchecked"] = notes
    r["allowed_different"] = list(args.allow_different)
    if r["outcome"] == "no baseline":
        for side, names in (("a", names_a), ("b", names_b)):
            for i in r["no_baseline"][side]:
                print(
                    f"anubis: compare: no baseline: {names[i]} has no baseline time with enough "
                    "data (all of it under a profiler or a changed knob), so its cost cannot "
                    "be measured against anything",
                    file=sys.stderr,
                )
        return 2
    if args.json:
        print(json.dumps(jsonable(r), indent=1, allow_nan=False))
    else:
        print(render_compare(r, names_a, names_b))
        if estimated_only:
            print("J/token is not gated: system power is estimated, not measured")
        if notes:
            print("not checked (unknown in older recordings): " + ", ".join(notes))
    return EXIT[r["outcome"]]


def identity_of_nothing() -> dict[str, dict[str, Any]]:
    """Every identity field (all "unknown"), to check --allow-different names."""
    from anubis_tui.analysis.identity import identity
    from anubis_tui.recording.format import make_header

    return identity(make_header([], 0), [])
