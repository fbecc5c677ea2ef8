"""Intel/AMD RAPL through powercap (``/sys/class/powercap/intel-rapl*``).

Energy comes from ``energy_uj`` counters, unwrapped against
``max_energy_range_uj``; power is derived from them (ΔE/Δt). Zones are found
by their ``name`` file (package-N, package-N-die-D, core, uncore, dram, psys),
never by index; ``intel-rapl`` and ``intel-rapl-mmio`` zones with the same
name are one domain (MMIO preferred when readable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    derived_power,
    read_int,
    read_text,
    unique_dirs,
)

RAPL_PERIOD_S = 0.001  # AMD documents 1 ms; Intel is commonly the same
ZONE_RE = re.compile(r"^intel-rapl(-mmio)?:\d+(:\d+)?$")

PERMISSION_FIX = (
    "energy_uj is readable by root only (CVE-2020-8694); to allow it until reboot run "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl*/energy_uj "
    "/sys/class/powercap/intel-rapl*/*/energy_uj`, or persist it with a line "
    "`mode class/powercap/intel-rapl:0/energy_uj = 0444` in /etc/sysfs.conf (sysfsutils)"
)


def rapl_domain(qualified: str) -> str:
    """The metered domain of a zone: ``package-0`` → ``cpu-package:0``, the id that amd_energy's
    ``Esocket0`` shares (one MSR read two ways), ``package-0/core`` → ``cpu-core:package-0``."""
    m = re.fullmatch(r"package-(\d+)", qualified)
    if m:
        return f"cpu-package:{int(m.group(1))}"
    if qualified == "psys":
        return "platform"
    return "rapl:" + qualified


def zone_scope(name: str) -> str:
    """The meter-tree scope of a RAPL zone's leaf name (``package-0`` → ``cpu-package``,
    ``core``, ``uncore``, ``dram``, ``psys`` → ``platform``); other names as they are.
    """
    if name.startswith("package"):
        return "cpu-package"
    return {"core": "cpu-core", "uncore": "uncore", "dram": "dram", "psys": "platform"}.get(
        name, name
    )


# The counter behind energy_uj is the 32-bit MSR_PKG_ENERGY_STATUS in energy status units
# (ESU) of MSR_RAPL_POWER_UNIT: Intel's usual ESU is 2^-14 J (61 µJ), AMD's 2^-16 J
# (15.3 µJ), so the counter wraps at 2^32 ESU. These are the max_energy_range_uj values the
# kernel reports on such machines (262143328850 and 65532610987), used only when that file
# cannot be read; the EnergyCounter still refuses a wrap that would imply an impossible power.
ASSUMED_RANGE_UJ = {"GenuineIntel": 262_143_328_850, "AuthenticAMD": 65_532_610_987}


def vendor_range_uj(ctx: DiscoveryContext) -> int | None:
    """The usual RAPL wrap range of this CPU vendor (``/proc/cpuinfo`` vendor_id), or None."""
    try:
        text = read_text(ctx.root.path("/proc/cpuinfo")) or ""
    except OSError:
        return None
    m = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    return ASSUMED_RANGE_UJ.get(m.group(1)) if m else None


@dataclass
class Zone:
    """One powercap RAPL zone: its directory, qualified name, provider (MMIO or MSR), the
    wrap range of its ``energy_uj`` counter (µJ) and the EnergyCounter that unwraps it.
    """

    path: Path
    name: str  # qualified: package-0, package-0/core, psys
    mmio: bool
    max_range_uj: int | None  # None: max_energy_range_uj absent or not readable
    assumed_range_uj: int | None = None  # the vendor's usual range, used when the above is None
    energy_file: str = ""  # str(path / "energy_uj"), built once: this is read every tick
    counter: EnergyCounter | None = None

    @property
    def range_uj(self) -> int | None:
        """The counter's wrap range in µJ: ``max_energy_range_uj``, else the vendor's usual one."""
        return self.max_range_uj or self.assumed_range_uj

    def __post_init__(self) -> None:
        self.energy_file = str(self.path / "energy_uj")
        rng = self.range_uj / 1e6 if self.range_uj else None
        self.counter = EnergyCounter(f"rapl.{self.name}", rng)


@dataclass
class RaplSource(Source):
    """Every readable RAPL zone: its energy counter (``energy_uj``, µJ → J, unwrapped at
    ``max_energy_range_uj``) and the power derived from it (W), read every millisecond.

    Unavailable, with the reason (and the chmod / sysfs.conf fix when
    ``energy_uj`` is root-only, CVE-2020-8694), when no zone reads. A zone
    whose ``max_energy_range_uj`` cannot be read wraps at this vendor's usual
    range (`ASSUMED_RANGE_UJ`), said in the reason.
    """

    order: ClassVar[int] = 20
    zones: list[Zone] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source for every zone under ``/sys/class/powercap`` (`ZONE_RE`, a zone and its
        subzones), or one unavailable source with the reason."""
        base = ctx.root.path("/sys/class/powercap")
        if not base.is_dir():
            return [cls(name="rapl", reason="no /sys/class/powercap (no RAPL, or not exposed)")]
        found: dict[str, Zone] = {}
        denied: list[str] = []
        range_denied: list[str] = []
        for p in unique_dirs(_candidates(base)):
            zone = _zone(p, ctx, denied, range_denied)
            prev = found.get(zone.name) if zone is not None else None
            if zone is not None and (prev is None or (zone.mmio and not prev.mmio)):
                found[zone.name] = zone
        if not found:
            if denied:
                return [
                    cls(name="rapl", reason=f"{', '.join(sorted(set(denied)))}: {PERMISSION_FIX}")
                ]
            return [cls(name="rapl", reason="powercap has no readable RAPL zone")]
        src = cls(name="rapl", available=True, zones=list(found.values()))
        src._explain(denied, range_denied)
        src._build()
        return [src]

    def _explain(self, denied: list[str], range_denied: list[str]) -> None:
        """The reason: the zones read, those denied (also in `missing`), and the wrap range
        assumed where ``max_energy_range_uj`` was not readable."""
        self.reason = "powercap " + ", ".join(z.name for z in self.zones)
        if denied:
            self.reason += f" (not readable: {', '.join(sorted(set(denied)))})"
            self.missing += [f"RAPL {d} energy not readable: {PERMISSION_FIX}" for d in denied]
        assumed = [z for z in self.zones if z.name in range_denied]
        if assumed:
            rng = assumed[0].range_uj
            self.reason += (
                f"; max_energy_range_uj not readable ({', '.join(z.name for z in assumed)}): "
                + (
                    f"wraps assumed at {rng / 1e6:,.0f} J (2^32 energy units of this vendor)"
                    if rng
                    else "a drop in the counter counts as a reset"
                )
            )

    def _build(self) -> None:
        chans: list[Channel] = []
        for z in self.zones:
            leaf = z.name.split("/")[-1]
            cid = "rapl." + z.name.replace("/", ".")
            meta: dict[str, object] = {
                "path": str(z.path.name),
                "provider": "mmio" if z.mmio else "msr",
                "domain": rapl_domain(z.name),
            }
            if z.max_range_uj is None:
                meta["wrap_range"] = "assumed" if z.assumed_range_uj else "unknown"
            if leaf == "psys":
                meta["note"] = "platform power; contains the packages, never summed with them"
            energy = Channel(
                id=f"{cid}.energy",
                label=f"RAPL {z.name} energy",
                source=self.name,
                kind="energy",
                unit="J",
                scope=zone_scope(leaf),
                method="counter",
                update_period_s=RAPL_PERIOD_S,
                meta=meta,
            )
            chans += [energy, derived_power(energy, f"{cid}.power", f"RAPL {z.name} power")]
        self.groups = [ReadGroup(chans, self._read, RAPL_PERIOD_S, cost_s=2e-5)]

    def _read(self, t_ns: int) -> list[Value]:
        out: list[Value] = []
        notes = self.groups[0].notes
        for z in self.zones:
            uj = read_int(z.energy_file)
            if uj is None or z.counter is None:
                out += [None, None]
                continue
            total, power = z.counter.update(uj / 1e6, t_ns, notes)
            out += [total, power]
        return out


def _read_name(p: Path) -> str | None:
    try:
        return read_text(p / "name")
    except OSError:
        return None


def _candidates(base: Path) -> list[Path]:
    """Zone directories under powercap: each top zone, then its subzones."""
    candidates: list[Path] = []
    for p in sorted(base.iterdir()):
        if ZONE_RE.match(p.name) and p.is_dir():
            candidates.append(p)
            candidates.extend(
                sorted(c for c in p.iterdir() if ZONE_RE.match(c.name) and c.is_dir())
            )
    return candidates


def _zone(
    p: Path, ctx: DiscoveryContext, denied: list[str], range_denied: list[str]
) -> Zone | None:
    """The Zone at `p`, named ``<parent>/<name>`` for a subzone; None if it has no name or
    its ``energy_uj`` does not read (root-only ones are added to `denied`; a zone whose
    ``max_energy_range_uj`` is root-only is added to `range_denied`)."""
    name = _read_name(p)
    if name is None:
        return None
    if p.name.count(":") == 2:
        # /sys/class/powercap/intel-rapl:0:0 is a symlink: its zone parent is in devices/.
        real_parent = p.resolve().parent
        name = f"{_read_name(real_parent) or real_parent.name}/{name}"
    try:
        first = read_int(p / "energy_uj")
    except PermissionError:
        denied.append(name)
        return None
    if first is None:
        return None
    try:
        max_range = read_int(p / "max_energy_range_uj")
    except PermissionError:
        # Only energy_uj was made readable (the usual sysfs.conf workaround after
        # CVE-2020-8694): this costs the wrap range, not the zone.
        max_range = None
        range_denied.append(name)
    return Zone(p, name, "mmio" in p.name, max_range or None, vendor_range_uj(ctx))
