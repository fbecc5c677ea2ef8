"""`anubis record`, `anubis report`, `anubis export`: headless sessions and their files."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from anubis_tui.config import Config
from anubis_tui.errors import CliError


def add_parsers(sub: Any, positive_int: Any, positive_float: Any) -> None:
    from anubis_tui.inference.commands import add_model_args

    r = sub.add_parser("record", help="a headless session recorded to msgpack")
    r.add_argument("--duration", type=positive_float, help="seconds (default: until Ctrl-C)")
    r.add_argument("-o", "--output", help="file path, or - for stdout (default: recordings/)")
    r.add_argument("--rate", type=positive_float, help="sampling rate in Hz (1-1000)")
    r.add_argument("--force", action="store_true", help="overwrite an existing file")
    r.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    r.add_argument(
        "--plan",
        help="profiler sweep, e.g. off:10,py-spy@100:10,py-spy@1000n:10,"
        "scalene@100:10 (n: py-spy --native); the recording ends with the plan",
    )
    add_model_args(r, positive_int)

    p = sub.add_parser("report", help="summary and profiler segments of a recording")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")

    e = sub.add_parser("export", help="a recording as CSV or a PNG plot")
    e.add_argument("path")
    e.add_argument("--csv", metavar="OUT")
    e.add_argument("--plot", metavar="OUT_PNG")


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.inference.commands import BenchError, spec_from
    from anubis_tui.recording.format import default_path
    from anubis_tui.recording.writer import RecordingError, open_output
    from anubis_tui.sampler import clamp_rate
    from anubis_tui.session import Session

    t0 = time.monotonic_ns()
    plan = None
    if args.plan:
        from anubis_tui.profilers.controller import parse_plan

        if args.no_model:
            raise CliError("--plan profiles the inference: it cannot go with --no-model")
        try:
            plan = parse_plan(args.plan)
        except ValueError as e:
            raise CliError(f"bad --plan: {e}") from None
    if args.rate is not None:
        config = config.replace(rate_hz=clamp_rate(args.rate))
    spec = facts = None
    if not args.no_model:
        try:
            spec, facts = spec_from(args, config, t0)
        except BenchError as e:
            raise CliError(str(e)) from None
    path = args.output or default_path(config.record_dir)
    if path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        out = open_output(path, force=args.force)
    except RecordingError as e:
        raise CliError(str(e)) from None
    log = (
        Path(tempfile.gettempdir()) / f"anubis-record-{os.getpid()}.log"
        if path == "-"
        else Path(path + ".log")
    )
    session = Session(config, spec=spec, model=facts, t0_ns=t0, log_path=log)
    session.record_to(out, path=path)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    controller = None
    try:
        session.start()
        if plan is not None:
            from anubis_tui.profilers.controller import ProfilerController

            controller = ProfilerController(session)
            run_plan(session, controller, plan, stop)
        else:
            stop.wait(args.duration)
    finally:
        if controller is not None:
            controller.shutdown()
        footer = session.stop()
        for s, h in old.items():
            signal.signal(s, h)
    w = session.writer
    where = "stdout" if path == "-" else path
    msg = (
        f"anubis: recorded {footer.totals['samples']} samples, "
        f"{footer.totals['tokens_decode']} tokens to {where}"
    )
    if w is not None and w.error:
        msg += f" — {w.error}"
    print(msg, file=sys.stderr)
    return 1 if w is not None and w.error else 0


def run_plan(session: Any, controller: Any, plan: list[Any], stop: threading.Event) -> None:
    """Each step in turn once the model is loaded; a worker that dies ends the plan."""
    w = session.worker
    if w is None or not w.loaded.wait(180) or w.load_error:
        return
    for step in plan:
        msg = controller.apply(step)
        print(
            f"anubis: plan {step.profiler or 'off'}"
            f"{f'@{step.rate_hz:g}' if step.profiler else ''}"
            f"{'n' if step.native else ''} for {step.seconds:g} s: {msg}",
            file=sys.stderr,
        )
        if stop.wait(step.seconds):
            return


def _load(path: str) -> Any:
    from anubis_tui.recording.reader import ReaderError, load

    try:
        return load(sys.stdin.buffer if path == "-" else path)
    except ReaderError as e:
        raise CliError(str(e)) from None


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.analysis.report import render, report

    rec = _load(args.path)
    r = report(rec)
    print(json.dumps(r, indent=1, default=_json_default) if args.json else render(r))
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rolling_tps(rec: Any, decode: bool, window_ns: int = 1_000_000_000) -> np.ndarray:
    """Tokens per second over the trailing window at every sample time."""
    m = rec.tok_decode if decode else ~rec.tok_decode
    tt = rec.tok_t[m]
    cum = np.concatenate([[0], np.cumsum(rec.tok_count[m])])
    hi = np.searchsorted(tt, rec.t, side="right")
    lo = np.searchsorted(tt, rec.t - window_ns, side="right")
    return (cum[hi] - cum[lo]) / (window_ns / 1e9)


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    if not args.csv and not args.plot:
        raise CliError("export needs --csv OUT and/or --plot OUT.png")
    rec = _load(args.path)
    if args.csv:
        try:
            f = open(args.csv, "w", newline="")  # noqa: SIM115 - closed below
        except OSError as e:
            raise CliError(f"cannot write {args.csv}: {e.strerror}") from None
        with f:
            w = csv.writer(f)
            w.writerow(
                [
                    "t_s",
                    *(f"{c.id} [{c.unit}]" for c in rec.channels),
                    "decode_tps_1s",
                    "prompt_tps_1s",
                ]
            )
            dec, pro = rolling_tps(rec, True), rolling_tps(rec, False)
            for i in range(len(rec.t)):
                row = [f"{rec.t[i] / 1e9:.6f}"]
                row += ["" if math.isnan(v) else repr(float(v)) for v in rec.values[i]]
                row += [f"{dec[i]:.3f}", f"{pro[i]:.3f}"]
                w.writerow(row)
    if args.plot:
        plot(rec, args.plot)
    return 0


def plot(rec: Any, out: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'anubis-tui[plot]'") from None
    from anubis_tui.analysis.overhead import segments
    from anubis_tui.records import decode_flags

    t = rec.t / 1e9
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(11, 9))
    ax = axes[0]
    for c in rec.channels:
        if c.kind == "power" and not c.meta.get("is_limit"):
            col = rec.values[:, rec.index[c.id]]
            ok = ~np.isnan(col)
            if ok.any():
                ax.plot(
                    t[ok],
                    col[ok],
                    label=f"{c.id} ({c.method})",
                    lw=1.4 if c.id == "system.power" else 0.8,
                )
    ax.set_ylabel("W")
    ax.legend(fontsize=6, loc="upper right")
    ax = axes[1]
    for c in rec.channels:
        if c.kind == "temperature":
            col = rec.values[:, rec.index[c.id]]
            ok = ~np.isnan(col)
            if ok.any():
                ax.plot(t[ok], col[ok], label=c.id, lw=0.8)
    ax.set_ylabel("°C")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper right")
    axes[2].plot(t, rolling_tps(rec, True), lw=0.8, label="decode tok/s (1 s)")
    axes[2].set_ylabel("tok/s")
    ax = axes[3]
    k = 0
    for c in rec.channels:
        if c.kind != "throttle":
            continue
        col = rec.values[:, rec.index[c.id]]
        ok = ~np.isnan(col)
        act = [1 if decode_flags(c, int(v))[0] else 0 for v in col[ok]]
        ax.step(t[ok], np.array(act) + 1.2 * k, where="post", lw=0.8, label=c.id)
        k += 1
    ax.set_ylabel("throttled")
    ax.set_xlabel("s")
    if k:
        ax.legend(fontsize=6, loc="upper right")
    for s in segments(rec):
        if s.profiler is not None:
            for a in axes:
                a.axvspan(s.window.start_s, s.window.end_s, color="orange", alpha=0.15)
    fig.suptitle(f"anubis — {rec.header.host.get('hostname')} {rec.header.created_utc}")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror}") from None


HANDLERS = {"record": cmd_record, "report": cmd_report, "export": cmd_export}
