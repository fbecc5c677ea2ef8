"""The command line: run, record, replay, report, sensors, export, bench.

Bad input ends in one clear line on stderr and a non-zero exit, never a
traceback: every command raises `CliError` for what the user can fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from anubis_tui import __version__
from anubis_tui.config import Config, ConfigError, load_config
from anubis_tui.errors import CliError


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"anubis: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="anubis", description=__doc__)
    p.add_argument("--version", action="version", version=f"anubis {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    s = sub.add_parser("sensors", help="list every power, thermal and throttle source")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")

    from anubis_tui.inference import commands as inference_commands
    from anubis_tui.recording import commands as recording_commands

    inference_commands.add_parsers(sub, _positive_int, _positive_float)
    recording_commands.add_parsers(sub, _positive_int, _positive_float)

    r = sub.add_parser("run", help="the live monitor (the default command)")
    r.add_argument("--rate", type=_positive_float, help="sampling rate in Hz (1-1000)")
    rec = r.add_mutually_exclusive_group()
    rec.add_argument("--record", metavar="PATH", help="record to PATH (default: recordings/)")
    rec.add_argument("--no-record", action="store_true", help="do not record")
    r.add_argument("--no-model", action="store_true", help="sensors only, no inference")
    r.add_argument(
        "--scalene-ready",
        action="store_true",
        help="run the worker under scalene (profiling off) so s toggles at once",
    )
    r.add_argument(
        "--pyspy-native",
        action="store_true",
        help="py-spy with --native (C frames too; stops the worker to sample)",
    )
    inference_commands.add_model_args(r, _positive_int)

    rp = sub.add_parser("replay", help="open a recording (or - for a stream on stdin)")
    rp.add_argument("path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config()
        if args.command is None:
            args = parser.parse_args(["run", *(argv or [])])
        return command_handlers()[args.command](args, config)
    except (CliError, ConfigError) as e:
        print(f"anubis: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


# -- sensors ---------------------------------------------------------------------


def sensors_snapshot(config: Config) -> dict[str, Any]:
    """Discover every source, read each twice (so counters yield power) and describe them."""
    from anubis_tui.records import decode_flags
    from anubis_tui.sampler import Sampler
    from anubis_tui.sources.registry import discover

    sources = discover(config={"cpu_tdp_w": config.cpu_tdp_w} if config.cpu_tdp_w else {})
    try:
        sampler = Sampler(sources, emit=lambda r: None, rate_hz=10)
        sampler.tick(force=True)
        time.sleep(0.3)
        sampler.tick(force=True)
        latest = dict(zip((c.id for c in sampler.channels), sampler.latest(), strict=True))
    finally:
        for s in sources:
            s.close()
    out: dict[str, Any] = {"sources": []}
    for src in sources:
        chans = []
        for c in src.channels:
            d: dict[str, Any] = {
                "id": c.id,
                "label": c.label,
                "kind": c.kind,
                "unit": c.unit,
                "scope": c.scope,
                "method": c.method,
                "update_period_s": c.update_period_s,
                "value": latest.get(c.id),
            }
            if c.kind == "throttle":
                v = latest.get(c.id)
                active, occurred = decode_flags(c, None if v is None else int(v))
                d["flags_active"], d["flags_occurred"] = active, occurred
            for k in ("critical_c", "trip_c", "max_hz", "note"):
                if k in c.meta:
                    d[k] = c.meta[k]
            chans.append(d)
        out["sources"].append(
            {"name": src.name, "available": src.available, "reason": src.reason, "channels": chans}
        )
    sp = sampler.system
    if sp is None:
        out["system_power"] = {"channel": None, "reason": "no power source at all"}
    else:
        out["system_power"] = {
            "channel": " + ".join(sp.channels),
            "channels": list(sp.channels),
            "tier": sp.tier,
            "method": sp.method,
            "reason": sp.reason,
            "value": latest.get("system.power"),
        }
    return out


def _fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "flags":
        return f"0x{int(v):x}"
    if unit == "Hz" and abs(v) >= 1e6:
        return f"{v / 1e6:.0f} MHz"
    if unit == "bytes":
        return f"{v / 2**20:.0f} MiB"
    if unit == "ratio":
        return f"{v * 100:.1f} %"
    return f"{v:.3f} {unit}" if isinstance(v, float) else f"{v} {unit}"


def _print_sensors(snap: dict[str, Any]) -> None:
    for src in snap["sources"]:
        mark = "✓" if src["available"] else "✗"
        print(f"{mark} {src['name']}: {src['reason']}")
        for c in src["channels"]:
            extra = ""
            if c.get("flags_active") or c.get("flags_occurred"):
                extra = f"  now: {','.join(c['flags_active']) or '-'}"
                if c.get("flags_occurred"):
                    extra += f"  since boot: {','.join(c['flags_occurred'])}"
            est = "  (estimated)" if c["method"] == "estimated" else ""
            print(
                f"    {c['id']:<34} {_fmt_value(c['value'], c['unit']):>14}  "
                f"[{c['method']}, {c['scope']}]{est}{extra}"
            )
    sp = snap["system_power"]
    print(f"system power: {sp['channel'] or '—'} — {sp['reason']}")


def cmd_sensors(args: argparse.Namespace, config: Config) -> int:
    if args.watch:
        try:
            while True:
                snap = sensors_snapshot(config)
                print("\x1b[2J\x1b[H", end="")
                if args.json:
                    print(json.dumps(snap))
                else:
                    _print_sensors(snap)
                sys.stdout.flush()
                time.sleep(0.7)
        except KeyboardInterrupt:
            return 0
    snap = sensors_snapshot(config)
    if args.json:
        print(json.dumps(snap, indent=1))
    else:
        _print_sensors(snap)
    return 0


def command_handlers() -> dict[str, Callable[[argparse.Namespace, Config], int]]:
    from anubis_tui.inference import commands as inference_commands
    from anubis_tui.recording import commands as recording_commands

    return {
        "sensors": cmd_sensors,
        "run": _ui("cmd_run"),
        "replay": _ui("cmd_replay"),
        **inference_commands.HANDLERS,
        **recording_commands.HANDLERS,
    }


def _ui(name: str) -> Callable[[argparse.Namespace, Config], int]:
    def handler(args: argparse.Namespace, config: Config) -> int:
        from anubis_tui.ui import commands  # textual is imported only here

        fn: Callable[[argparse.Namespace, Config], int] = getattr(commands, name)
        return fn(args, config)

    return handler
