"""`anubis sensors`: every source, available or not with the reason, and each channel's value."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``sensors`` subcommand and its flags on `sub` (argparse's subparsers)."""
    s = sub.add_parser("sensors", help="list every power, thermal and throttle source")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    s.set_defaults(handler=cmd_sensors)


def sensors_snapshot(config: Config) -> dict[str, Any]:
    """Discover every source, read each twice (so counters yield power) and describe them."""
    from anubis_tui.records import decode_flags
    from anubis_tui.session.sampler import Sampler
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
        missing = [m for src in sources for m in src.missing]
        out["system_power"] = {
            "channel": None,
            "reason": "no power source at all",
            "uncovered": ["the whole machine", *missing],
            "meters": [],
        }
    else:
        out["system_power"] = {
            "channel": " + ".join(sp.channels),
            "channels": list(sp.channels),
            "tier": sp.tier,
            "method": sp.method,
            "reason": sp.reason,
            "value": latest.get("system.power"),
            "uncovered": list(sp.uncovered),
            "meters": [m.to_plain() for m in sp.meters],
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
    meters = sp.get("meters") or []
    if meters:
        print("power meters (outermost measured meter of each branch is chosen):")
        ids = {m["channel"] for m in meters}
        tops = [m for m in meters if m["parent"] not in ids]
        for m in sorted(tops, key=lambda m: m["role"] != "chosen"):
            _print_meter(m, meters, "  ")
    print(f"system power: {sp['channel'] or '—'} — {sp['reason']}")
    for part in sp.get("uncovered") or []:
        print(f"  not covered: {part}")


MARKS = {
    "chosen": "●",
    "inside": "└",
    "same-domain": "=",
    "alternative": "~",
    "not-placed": "?",
    "unused": "○",
}


def _print_meter(m: dict[str, Any], meters: list[dict[str, Any]], indent: str) -> None:
    mark = MARKS.get(m["role"], "-")
    print(f"{indent}{mark} {m['channel']} [{m['scope']}, {m['method']}]: {m['why']}")
    for child in meters:
        if child["parent"] == m["channel"]:
            _print_meter(child, meters, indent + "  ")


def cmd_sensors(args: argparse.Namespace, config: Config) -> int:
    """Print every source and channel (``--json``, ``--watch`` each second); returns 0."""
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
