"""Finds every source: built-ins and plugins through the ``anubis.sources`` entry points.

Built-ins register exactly as a third party would (pyproject's entry points).
A plugin that fails to import or to discover is reported on stderr and
skipped; it never stops the monitor.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from anubis_tui.plugins import load_plugins
from anubis_tui.records import Channel
from anubis_tui.sources.base import DiscoveryContext, Source, SysfsRoot

BUILTINS = {
    "nvml": "anubis_tui.sources.nvml:NvmlSource",
    "amdgpu": "anubis_tui.sources.amdgpu:AmdgpuSource",
    "intel-gpu": "anubis_tui.sources.intel_gpu:IntelGpuSource",
    "rapl": "anubis_tui.sources.rapl:RaplSource",
    "hwmon": "anubis_tui.sources.hwmon:HwmonSource",
    "thermal": "anubis_tui.sources.thermal:ThermalZoneSource",
    "cpufreq": "anubis_tui.sources.cpufreq:CpufreqSource",
    "intel-throttle": "anubis_tui.sources.cpufreq:IntelThrottleSource",
    "jetson": "anubis_tui.sources.jetson:JetsonRailSource",
    "rpi": "anubis_tui.sources.rpi:RaspberryPiSource",
    "battery": "anubis_tui.sources.battery:BatterySource",
    "process": "anubis_tui.sources.process:ProcessSource",
    "estimate": "anubis_tui.sources.estimate:CpuEstimateSource",
}


def source_classes(warn: Callable[[str], None] | None = None) -> list[type[Source]]:
    """Every registered Source class, in discovery order."""
    classes = list(dict.fromkeys(load_plugins("anubis.sources", BUILTINS, Source, warn).values()))
    classes.sort(key=lambda c: getattr(c, "order", 70))
    return classes


def discover(
    root: SysfsRoot | None = None,
    config: dict[str, object] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Source]:
    """Discover every source (available or not, with reasons)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    ctx = DiscoveryContext(root=root or SysfsRoot(), config=dict(config or {}))
    for cls in source_classes(warn):
        try:
            found = cls.discover(ctx)
        except Exception as e:
            warn(
                f"anubis: source {cls.__name__} failed during discovery and is skipped: "
                f"{type(e).__name__}: {e}"
            )
            continue
        ctx.found.extend(found)
    return ctx.found


@dataclass(frozen=True)
class SystemPower:
    """The one "system power" figure of a machine: which channels add up to it, and why."""

    channels: tuple[str, ...]
    energy_channels: tuple[str, ...]  # counters covering the same scope, when all exist
    tier: str
    method: str
    reason: str


def choose_system_power(channels: list[Channel]) -> SystemPower | None:
    """Board input > platform (psys) > GPU + CPU package + DRAM > battery > estimate.

    Nested domains are never summed: psys contains the packages, a package
    contains its cores and uncore, and board input contains everything.
    Among channels of one quantity the counter-derived one is preferred
    (exact energy), then an averaged one, then an instant one.
    """
    power = [c for c in channels if c.kind == "power"]
    energy = {c.id: c for c in channels if c.kind == "energy" and c.method == "counter"}

    def best(cands: list[Channel]) -> list[Channel]:
        # One channel per physical quantity (source, scope); counter-derived first.
        rank = {"derived": 0, "average": 1, "instant": 2, "estimated": 3}
        groups: dict[tuple[str, str], list[Channel]] = {}
        for c in cands:
            if c.meta.get("is_limit"):
                continue
            groups.setdefault((c.source, c.scope), []).append(c)
        out = []
        for cs in groups.values():
            cs.sort(
                key=lambda c: (
                    not c.meta.get("energy_channel"),
                    rank.get(c.method.split(":")[0], 1),
                )
            )
            out.append(cs[0])
        return out

    def counters_for(chosen: list[Channel]) -> tuple[str, ...]:
        ids = [c.meta.get("energy_channel") for c in chosen]
        if all(isinstance(i, str) and i in energy for i in ids):
            return tuple(str(i) for i in ids)
        return ()

    def make(tier: str, chosen: list[Channel], why: str) -> SystemPower:
        methods = {c.method for c in chosen}
        method = (
            "estimated"
            if "estimated" in methods
            else ("counter" if counters_for(chosen) else "derived")
        )
        return SystemPower(tuple(c.id for c in chosen), counters_for(chosen), tier, method, why)

    board = [c for c in power if c.scope == "board-input"]
    if board:
        b = best(board)[:1]
        return make("board-input", b, f"{b[0].label}: power into the board, the widest scope")
    psys = [c for c in power if c.scope == "platform"]
    if psys:
        p = best(psys)[:1]
        return make("platform", p, "RAPL psys: platform power (contains the CPU packages)")
    gpus = best([c for c in power if c.scope == "gpu" and c.method != "estimated"])
    pkgs = best([c for c in power if c.scope == "cpu-package" and c.method != "estimated"])
    drams = best([c for c in power if c.scope == "dram" and c.method != "estimated"])
    socs = best([c for c in power if c.id == "rpi.pmic.total"])
    if gpus or pkgs or socs:
        parts = gpus + pkgs + drams + socs
        names = []
        if gpus:
            names.append(f"{len(gpus)} GPU")
        if pkgs:
            names.append("CPU package")
        if drams:
            names.append("DRAM")
        if socs:
            names.append("PMIC rails (internal only)")
        why = " + ".join(names) + " (measured)"
        if not pkgs and not socs:
            est = [c for c in power if c.method == "estimated" and c.scope == "cpu-package"]
            if est:
                parts += est[:1]
                why += " + CPU package (estimated: no RAPL here)"
        return make("components", parts, why)
    batt = [c for c in power if c.scope == "battery"]
    if batt:
        return make("battery", best(batt)[:1], "battery discharge (only while on battery)")
    est = [c for c in power if c.method == "estimated"]
    if est:
        return make("estimate", est[:1], "no power sensor: estimated from CPU load")
    return None
