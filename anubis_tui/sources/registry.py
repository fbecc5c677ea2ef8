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
class Meter:
    """One power meter of the machine and what system power made of it (for `anubis sensors`)."""

    channel: str
    label: str
    scope: str
    method: str
    role: str  # chosen | inside | same-domain | alternative | not-placed | unused
    parent: str | None  # the channel it is inside or duplicates
    why: str

    def to_plain(self) -> dict[str, object]:
        """The meter as a JSON-ready dict (``anubis sensors --json``)."""
        return {
            "channel": self.channel,
            "label": self.label,
            "scope": self.scope,
            "method": self.method,
            "role": self.role,
            "parent": self.parent,
            "why": self.why,
        }


@dataclass(frozen=True)
class SystemPower:
    """The one "system power" figure of a machine: which channels add up to it, and why.

    `meters` is every power meter with the role it plays (the tree `anubis
    sensors` prints); `uncovered` names each part of the machine the figure
    leaves out or only estimates, with the reason and fix where there is one.
    """

    channels: tuple[str, ...]
    energy_channels: tuple[str, ...]  # counters covering the same scope, when all exist
    tier: str
    method: str
    reason: str
    meters: tuple[Meter, ...] = ()
    uncovered: tuple[str, ...] = ()


# scope → the scopes of meters that contain it. The tree (ARCHITECTURE.md, "Meters form a
# tree"): board input ⊇ platform (RAPL psys) ⊇ APU package (PPT/socket) ⊇ CPU package ⊇
# cores, uncore and an integrated GPU; DRAM sits under the platform; a discrete GPU is its
# own branch, with its memory rail inside it.
_OUTER = ("board-input",)
CONTAINED_BY: dict[str, frozenset[str]] = {
    "board-input": frozenset(),
    "platform": frozenset(_OUTER),
    "apu-package": frozenset({*_OUTER, "platform"}),
    "cpu-package": frozenset({*_OUTER, "platform", "apu-package"}),
    "cpu-core": frozenset({*_OUTER, "platform", "apu-package", "cpu-package"}),
    "uncore": frozenset({*_OUTER, "platform", "apu-package", "cpu-package"}),
    "gpu-integrated": frozenset({*_OUTER, "platform", "apu-package", "cpu-package"}),
    "dram": frozenset({*_OUTER, "platform"}),
    "gpu": frozenset({*_OUTER, "platform"}),
    "gpu-memory": frozenset({*_OUTER, "platform", "gpu"}),
    "soc": frozenset(_OUTER),
    "soc-rail": frozenset({*_OUTER, "soc"}),
    "board-rail": frozenset(_OUTER),
    "battery": frozenset(),
}
SAME_SOURCE = {"gpu-memory", "soc-rail"}  # inside a meter of their own device only
BRANCHES = ("apu-package", "cpu-package", "dram", "gpu", "soc")
"""Scopes whose outermost meters add up to system power when no input meter exists."""
CPU_BRANCHES = ("apu-package", "cpu-package", "soc")
_RANK = {"derived": 0, "average": 1, "instant": 2, "estimated": 3}


def _quantity(c: Channel) -> tuple[str, ...]:
    domain = c.meta.get("domain")
    return ("domain", domain) if isinstance(domain, str) else ("source", c.source, c.scope)


def _pick_order(c: Channel) -> tuple[bool, int]:
    # Counter-derived first (exact energy), then averaged, then instant.
    return (not c.meta.get("energy_channel"), _RANK.get(c.method.split(":")[0], 1))


def choose_system_power(
    channels: list[Channel], missing: list[str] | tuple[str, ...] = ()
) -> SystemPower | None:
    """The outermost measured meter of each branch of the meter tree, and what it leaves out.

    Board input > platform (psys) > GPU + APU or CPU package + DRAM > module
    rails (a Jetson without VDD_IN) > battery discharge > estimate. A meter
    inside another measured meter is never added to it (psys contains the
    packages, an APU's PPT contains its CPU and GPU, VDD_IN contains the
    module's rails), and two meters of one domain (amd_energy's Esocket0 and
    RAPL package-0) count once. Among meters of one quantity the
    counter-derived one is preferred (exact energy), then an averaged one,
    then an instant one. `missing` lists meters the sources found but cannot
    read ("GPU0 power not measured: NVML Not Supported"); they, and every part
    that is estimated, go into `uncovered`. None when there is no power
    channel at all (not even an estimate).
    """
    tree = _MeterTree(channels, missing)
    for tier in (_board_input, _platform, _module_rails, _components, _battery, _estimate):
        sp = tier(tree)
        if sp is not None:
            return sp
    return None


class _MeterTree:
    """The power channels placed in the meter tree: one representative per quantity
    (`reps`), the outermost ones (`roots`), and the role noted for each meter."""

    def __init__(self, channels: list[Channel], missing: list[str] | tuple[str, ...]) -> None:
        self.power = [c for c in channels if c.kind == "power" and not c.meta.get("is_limit")]
        self.energy = {c.id: c for c in channels if c.kind == "energy" and c.method == "counter"}
        self.missing = missing
        self.uncovered = list(missing)
        self.meters: dict[str, Meter] = {}
        self.reps = self._representatives()
        self.ids = {c.id for c in self.reps}
        self.roots = self._roots()

    def note(self, c: Channel, role: str, parent: str | None, why: str) -> None:
        """Record the role `c` plays (the last word on a channel wins)."""
        self.meters[c.id] = Meter(c.id, c.label, c.scope, c.method, role, parent, why)

    def _representatives(self) -> list[Channel]:
        """One channel per quantity: the same meter read several ways, or two drivers of
        one domain, count once (`_pick_order` chooses)."""
        reps: list[Channel] = []
        by_q: dict[tuple[str, ...], list[Channel]] = {}
        for c in self.power:
            if c.method != "estimated":
                by_q.setdefault(_quantity(c), []).append(c)
        for cs in by_q.values():
            cs.sort(key=_pick_order)
            first = cs[0]
            reps.append(first)
            for other in cs[1:]:
                if other.source == first.source:
                    why = f"the same meter as {first.id}, read another way"
                    self.note(other, "alternative", first.id, why)
                else:
                    self.note(
                        other, "same-domain", first.id, f"measures the same domain as {first.id}"
                    )
        return reps

    def _container(self, c: Channel) -> Channel | None:
        """The measured meter `c` is inside: its ``within``, else the nearest by scope."""
        within = c.meta.get("within")
        if isinstance(within, str) and within in self.ids:
            return next(p for p in self.reps if p.id == within)
        outer = CONTAINED_BY.get(c.scope)
        if outer is None:
            return None
        cands = [
            p
            for p in self.reps
            if p is not c
            and p.scope in outer
            and (c.scope not in SAME_SOURCE or p.source == c.source)
        ]
        cands.sort(key=lambda p: (p.source != c.source, p.scope != "board-input"))
        return cands[0] if cands else None

    def _roots(self) -> list[Channel]:
        roots: list[Channel] = []
        for c in self.reps:
            parent = self._container(c)
            if parent is not None:
                self.note(c, "inside", parent.id, f"inside {parent.id}: never added to it")
            elif c.scope in CONTAINED_BY or c.meta.get("module_rail"):
                roots.append(c)
            else:
                why = f"scope {c.scope!r}: its place in the machine is unknown"
                self.note(c, "not-placed", None, why)
        return roots

    def counters_for(self, chosen: list[Channel]) -> tuple[str, ...]:
        """The energy counters of `chosen`, when every one of them has one; else ()."""
        cids = [c.meta.get("energy_channel") for c in chosen]
        if all(isinstance(i, str) and i in self.energy for i in cids):
            return tuple(str(i) for i in cids)
        return ()

    def make(self, tier: str, chosen: list[Channel], why: str) -> SystemPower:
        """The SystemPower of `tier` summing `chosen`; every other meter noted as unused."""
        for c in chosen:
            self.note(c, "chosen", None, f"counted in system power ({tier})")
        for c in self.roots:
            if c.id not in self.meters:
                self.note(c, "unused", None, f"not needed: system power is {tier}")
        for c in self.power:
            if c.id not in self.meters:
                self.note(c, "unused", None, "estimate not needed: measured meters cover this")
        counters = self.counters_for(chosen)
        methods = {c.method for c in chosen}
        method = "estimated" if "estimated" in methods else ("counter" if counters else "derived")
        order = {c.id: k for k, c in enumerate(self.power)}
        if self.missing:  # a meter that exists but cannot be read is named in the reason itself
            why = why + "; " + "; ".join(dict.fromkeys(self.missing))
        return SystemPower(
            channels=tuple(c.id for c in chosen),
            energy_channels=counters,
            tier=tier,
            method=method,
            reason=why,
            meters=tuple(sorted(self.meters.values(), key=lambda m: order.get(m.channel, 0))),
            uncovered=tuple(dict.fromkeys(self.uncovered)),
        )

    def branches(self) -> list[Channel]:
        """The outermost meters whose scope is one of `BRANCHES`."""
        return [c for c in self.roots if c.scope in BRANCHES]


def _board_input(t: _MeterTree) -> SystemPower | None:
    board = [c for c in t.roots if c.scope == "board-input"]
    if not board:
        return None
    b = board[0]
    note_ = b.meta.get("note")
    if isinstance(note_, str) and "excludes" in note_:
        t.uncovered.append(f"{b.label}: {note_}")
    return t.make("board-input", [b], f"{b.label}: power into the board, the widest scope")


def _platform(t: _MeterTree) -> SystemPower | None:
    psys = [c for c in t.roots if c.scope == "platform"]
    if not psys:
        return None
    return t.make("platform", psys[:1], "RAPL psys: platform power (contains the CPU packages)")


def _module_rails(t: _MeterTree) -> SystemPower | None:
    rails = [c for c in t.roots if c.meta.get("module_rail")]
    if not rails:
        return None
    rail_names = " + ".join(str(c.meta.get("rail", c.label)) for c in rails)
    t.uncovered.append("the carrier board: no VDD_IN rail on this module")
    return t.make(
        "module-rails",
        rails + [c for c in t.branches() if c.scope == "gpu"],
        f"sum of the module's rails {rail_names} (measured; no VDD_IN on this module)",
    )


_BRANCH_NAMES = (
    ("apu-package", "APU package"),
    ("cpu-package", "CPU package"),
    ("dram", "DRAM"),
    ("soc", "PMIC rails (internal only)"),
)


def _components(t: _MeterTree) -> SystemPower | None:
    branch = t.branches()
    if not branch:
        return None
    parts = sorted(branch, key=lambda c: BRANCHES.index(c.scope))
    gpus = [c for c in parts if c.scope == "gpu"]
    names = [f"{len(gpus)} GPU"] if gpus else []
    names += [name for scope, name in _BRANCH_NAMES if any(c.scope == scope for c in parts)]
    why = " + ".join(names) + " (measured)"
    if not any(c.scope in CPU_BRANCHES for c in parts):
        est = [c for c in t.power if c.method == "estimated" and c.scope == "cpu-package"]
        if est:
            parts += est[:1]
            why += " + CPU package (estimated: no RAPL here)"
            t.uncovered.append("the CPU: estimated from CPU load, not measured (no RAPL here)")
    t.uncovered.append("the rest of the board (fans, disks, PSU losses): no input meter")
    return t.make("components", parts, why)


def _battery(t: _MeterTree) -> SystemPower | None:
    batt = [c for c in t.power if c.scope == "battery" and c.method != "estimated"]
    if not batt:
        return None
    t.uncovered.append("everything while on AC power: battery discharge is the only meter")
    return t.make("battery", batt[:1], "battery discharge (only while on battery)")


def _estimate(t: _MeterTree) -> SystemPower | None:
    est = [c for c in t.power if c.method == "estimated"]
    if not est:
        return None
    t.uncovered.append("the whole machine: no power meter, estimated from CPU load")
    return t.make("estimate", est[:1], "no power sensor: estimated from CPU load")
