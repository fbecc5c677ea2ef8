"""`anubis sweep`: profilers at rising rates and knob settings against interleaved baselines.

One recording holds the whole sweep (profiler artifacts beside it); the
sweep's report is printed at the end and by `anubis report` at any time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import (
    CliError,
    add_attach_args,
    add_model_args,
    attach_from,
    open_recording,
    positive_float,
    positive_int,
    rate_hz,
    spec_from,
)
from anubis_tui.config import Config

DEFAULT_PROFILERS = "py-spy,py-spy-native,scalene"
DEFAULT_RATES = "10,100,1000"


def add_parser(sub: Any) -> None:
    """Register the ``sweep`` subcommand and its flags on `sub` (argparse's subparsers)."""
    s = sub.add_parser(
        "sweep",
        help="profilers at rising rates and knob settings, each against the baseline beside it",
    )
    s.add_argument(
        "--profilers",
        help=f"comma-separated, or none (default {DEFAULT_PROFILERS}; none when only --knob)",
    )
    s.add_argument("--rates", default=DEFAULT_RATES, help=f"Hz (default {DEFAULT_RATES})")
    s.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a knob and its values (repeatable; every combination is a setting), "
        "e.g. threads=1,2 gpu_layers=0,-1 power_limit_w=300,450 model=A.gguf,B.gguf",
    )
    s.add_argument("--segment-s", type=positive_float, default=20.0, help="seconds a segment")
    s.add_argument("--repeats", type=positive_int, default=3)
    s.add_argument(
        "--warmup-s", type=lambda v: positive_float(v, 86400), default=60.0,
        help="longest warm-up, seconds (it ends sooner once temperature and power settle)",
    )  # fmt: skip
    s.add_argument(
        "--cooldown-s", type=float, default=10.0,
        help="longest wait before a segment for the temperature to come back (0: none)",
    )  # fmt: skip
    s.add_argument("--seed", type=seed, default=1, help=f"the order's random seed, 0 to {SEED_MAX}")
    s.add_argument("--rate", type=rate_hz, help="sampling rate in Hz")
    s.add_argument("-o", "--output", help="the recording (default: recordings/)")
    s.add_argument("--force", action="store_true", help="overwrite an existing recording")
    s.add_argument("--budget", type=lambda v: positive_float(v, 100.0), default=2.0, metavar="PCT")
    s.add_argument(
        "--max-s", type=positive_float, metavar="S",
        help="time limit of the whole sweep: extra repeats, up to it, for rates still "
        "inconclusive after --repeats (default: none)",
    )  # fmt: skip
    s.add_argument(
        "--quality", action="store_true",
        help="perplexity of every model and KV type on the shipped text (before the sweep, "
        "cached), and the Pareto front of J/token against it (docs/quality.md)",
    )  # fmt: skip
    s.add_argument(
        "--max-ppl-increase", type=lambda v: positive_float(v, 1000.0), default=5.0,
        metavar="PCT", help="the quality budget: perplexity at most this much above the "
        "baseline's (default 5)",
    )  # fmt: skip
    add_model_args(s)
    add_attach_args(s)
    s.set_defaults(handler=cmd_sweep)


SEED_MAX = 2**63 - 1  # what the recording (msgpack) holds as an integer


def seed(text: str) -> int:
    """A seed in 0..2^63-1: refused before anything starts (a larger one cannot be recorded)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {text}")
    return v


def parse_rates(text: str) -> list[float]:
    """``--rates`` (comma-separated Hz) as floats, each one of `RATES_HZ`; CliError otherwise."""
    from anubis_tui.profilers.base import RATES_HZ

    out = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise CliError(f"--rates: {part!r} is not a number") from None
        if v not in RATES_HZ:
            raise CliError(f"--rates: {part} Hz is not one of {', '.join(map(str, RATES_HZ))}")
        out.append(v)
    return out


def parse_knobs(items: list[str]) -> dict[str, list[Any]]:
    """``--knob NAME=V1,V2`` items as {name: [values]}; CliError for a bad form, a repeat
    or a bad value.
    """
    from anubis_tui.session.knobs import parse_knob_value

    out: dict[str, list[Any]] = {}
    for item in items:
        name, eq, values = item.partition("=")
        if not eq or not values:
            raise CliError(f"--knob {item!r}: NAME=V1,V2 expected")
        if name in out:
            raise CliError(f"--knob {name} given twice")
        try:
            out[name] = [parse_knob_value(name, v) for v in values.split(",")]
        except ValueError as e:
            raise CliError(f"--knob {item}: {e}") from None
    return out


def cmd_sweep(args: argparse.Namespace, config: Config) -> int:
    """Run the sweep's segments against interleaved baselines into one recording, then
    report; returns the exit status.
    """
    from anubis_tui.recording.format import default_path
    from anubis_tui.session.factory import make_session
    from anubis_tui.session.headless import JOB_JOIN_S, Headless

    t0 = time.monotonic_ns()
    knobs = parse_knobs(args.knob)
    profilers, rates = _profilers(args, knobs)
    if args.cooldown_s < 0:
        raise CliError("--cooldown-s must be 0 or more")
    spec, facts, attach = _workload(args, config, knobs, t0)
    qualities = _qualities(args, spec, knobs)
    path = args.output or default_path(config.record_dir).replace(".msgpack", "-sweep.msgpack")
    out, log = open_recording(path, args.force)
    session = make_session(
        config, spec, model=facts, attach=attach, rate_hz=args.rate, t0_ns=t0, log_path=log,
        log_replace=args.force,
    )  # fmt: skip
    session.start_recording(path, out=out)
    with Headless(session, say=_say) as run:  # HeadlessError: one line, from cli.main
        for q in qualities:
            session.emit_event("quality", **q)
        sweep = _make_sweep(session, args, profilers, rates, knobs)
        ended = run.wait(sweep.run, "sweep", watch_worker=False, join_s=JOB_JOIN_S)
    return _finish(session, args, path, ended)


def _say(msg: str) -> None:
    print(f"anubis: sweep {msg}", file=sys.stderr)


def _profilers(
    args: argparse.Namespace, knobs: dict[str, list[Any]]
) -> tuple[list[str], list[float]]:
    """The profilers and rates asked for (none by default when only knobs are swept)."""
    from anubis_tui.session.sweep import PROFILERS

    text = (
        args.profilers if args.profilers is not None else ("none" if knobs else DEFAULT_PROFILERS)
    )
    profilers = [] if text == "none" else [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in profilers if p not in PROFILERS]
    if bad:  # before the model loads
        raise CliError(f"--profilers: unknown profiler {bad[0]!r}; one of {', '.join(PROFILERS)}")
    return profilers, parse_rates(args.rates) if profilers else []


def _workload(
    args: argparse.Namespace, config: Config, knobs: dict[str, list[Any]], t0: int
) -> tuple[Any, Any, Any]:
    """(spec, facts, attach); a server swept with --attach takes profilers and device knobs."""
    if args.attach is not None:
        from anubis_tui.session.knobs import KNOB_BY_NAME

        served = [k for k in knobs if KNOB_BY_NAME[k].group != "device"]
        if served or args.quality:
            what = f"--knob {served[0]}" if served else "--quality"
            raise CliError(f"{what} is set by the server: it cannot go with --attach")
        return attach_from(args, config, t0)
    spec, facts = spec_from(args, config, t0)
    return spec, facts, None


def _qualities(args: argparse.Namespace, spec: Any, knobs: dict[str, list[Any]]) -> list[Any]:
    """Perplexities before the session (--quality): their time and energy are in no segment."""
    if not args.quality:
        return []
    from anubis_tui.cli.models import sweep_quality

    return sweep_quality(spec, knobs, _say)


def _make_sweep(
    session: Any,
    args: argparse.Namespace,
    profilers: list[str],
    rates: list[float],
    knobs: dict[str, list[Any]],
) -> Any:
    """The `Sweep` of what differs from the session's starting setting; CliError if nothing."""
    from anubis_tui.session.sweep import Sweep, SweepOptions, treatments

    try:
        items, notes = treatments(profilers, rates, knobs, session.knob_values())
    except ValueError as e:
        raise CliError(str(e)) from None
    for n in notes:
        _say(n)
    if not items:
        raise CliError("nothing to sweep: every setting asked for is the starting one")
    opts = SweepOptions(
        segment_s=args.segment_s,
        repeats=args.repeats,
        warmup_s=args.warmup_s,
        cooldown_s=args.cooldown_s,
        seed=args.seed,
        max_s=args.max_s,
        budget_pct=args.budget,
    )
    n_seg = 2 * len(items) * opts.repeats + 1
    _say(
        f"{len(items)} treatments × {opts.repeats} repeats: "
        f"{n_seg} segments of {opts.segment_s:g} s"
    )
    return Sweep(session, items, opts, say=_say)


def _finish(session: Any, args: argparse.Namespace, path: str, ended: Any) -> int:
    """Say how the sweep ended; report it (and write its rows) unless its file failed."""
    err = session.recording_error
    # Not done: a signal or a failed recording ended the wait before the sweep saw it.
    early = ended.job_error if ended.job_done else ended.reason
    if err and (early is None or ended.reason == "recording error"):
        early = err  # the recording failed (at the very end, the Footer, too)
    if early is not None:
        _say(f"ended early: {early}")
    if err:
        # What really reached the file, not what was sent; no report of a broken file.
        kept = session.writer.samples_flushed if session.writer is not None else 0
        raise CliError(f"sweep: {err}; {kept} samples in {path}")
    if path != "-":
        _report(args, path)
    return 0 if early is None else 1


def _report(args: argparse.Namespace, path: str) -> None:
    """The sweep's report on stdout, and its rows in the results database (issue 24)."""
    from anubis_tui.analysis.report import render, report
    from anubis_tui.cli.db import write_rows
    from anubis_tui.recording.reader import load

    rec = load(path)  # ReaderError: one line, from cli.main
    summary = report(rec, budget_pct=args.budget)
    print(render(summary))
    if args.quality:
        from anubis_tui.cli.models import quality_lines

        print("\n".join(quality_lines(rec.events, summary, args.max_ppl_increase)))
    write_rows(rec, path, summary, str(Path(path).with_suffix(".rows.jsonl")), force=True)
    _say(f"recorded to {path}; profiles in {Path(path).with_suffix('.profiles')}")
