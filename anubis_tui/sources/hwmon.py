"""hwmon chips of any kind: coretemp, k10temp, amdgpu, nvme, acpitz, amd_energy, …

Chips are found by their ``name`` file under ``/sys/class/hwmon`` (never by
index; the same chip reached through two symlinks counts once). Units per the
kernel's sysfs-interface: temperatures m°C, voltages mV, currents mA, power
µW, energy µJ; everything is converted to SI here.

INA3221 (Jetson) and rpi_volt (Raspberry Pi) chips belong to their own
sources and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    read_int,
    read_label,
    read_text,
    temperature_limit_c,
    unique_dirs,
)

OWNED_ELSEWHERE = {"ina3221", "rpi_volt", "amdgpu", "i915", "xe"}  # GPUs: amdgpu.py, intel_gpu.py
ATTR_RE = re.compile(r"^(temp|in|curr|power|energy)(\d+)_(input|average)$")
# Not documented per chip; a conservative default (design.md), overridden by update_interval.
MAX_CHIPS = 64  # a large server has a dozen or two
MAX_ATTRS_PER_CHIP = 64  # real chips have a few dozen at most (a 64-core k10temp: ~20)
DEFAULT_PERIOD_S = {"temp": 0.5, "in": 0.1, "curr": 0.1, "power": 0.1, "energy": 0.1}
SCALE = {"temp": 1e-3, "in": 1e-3, "curr": 1e-3, "power": 1e-6, "energy": 1e-6}
KIND = {
    "temp": ("temperature", "°C"),
    "in": ("voltage", "V"),
    "curr": ("current", "A"),
    "power": ("power", "W"),
    "energy": ("energy", "J"),
}
CPU_PACKAGE_LABELS = re.compile(r"^(Package id \d+|Tctl|Tdie|Esocket\d+)$")
CPU_CORE_LABELS = re.compile(r"^(Core \d+|Tccd\d+|Ecore\d+)$")
SOCKET_ENERGY = re.compile(r"^Esocket(\d+)$")
# Power monitors on a board's supply (Documentation/hwmon/ina2xx.rst, ina238.rst, ina3221.rst,
# lm25066.rst, ltc4282.rst …): what they measure is named only by a label, from the device tree.
POWER_MONITORS = re.compile(
    r"^(ina2\d\d|ina2\d\d\w*|ina3221|ina7\d\d|ina23\d|ina260|lm25056|lm25066|ltc294\d"
    r"|ltc428\d|adm1275|adm1293|max5970|tps25990)$"
)
INPUT_LABELS = re.compile(
    r"^(VIN|V_IN|VDD_IN|VIN_TOTAL|SYS_VIN|BOARD_IN|POWER_IN|DC_IN|12V_IN|INPUT|TOTAL_INPUT|"
    r"VBUS_IN|POM_5V_IN|PSU_IN)$",
    re.I,
)


def chip_scope(chip: str, label: str) -> str:
    if POWER_MONITORS.match(chip):
        # A monitor on the board's input is the machine's input (Jetson AGX Thor's INA238 "VIN",
        # jetson_stats#900); any other rail it measures has no known place in the tree.
        return "board-input" if INPUT_LABELS.match(label) else "board-rail"
    if chip == "power_meter":
        return "board-input"  # ACPI 4.0 power meter: the server's input (acpi_power_meter.rst)
    if chip == "fam15h_power":
        return "cpu-package"  # AMD family 15h/16h processor power (fam15h_power.rst)
    if CPU_PACKAGE_LABELS.match(label):
        return "cpu-package"
    if CPU_CORE_LABELS.match(label):
        return "cpu-core"
    if chip in ("coretemp", "k10temp", "zenpower", "amd_energy"):
        return "cpu"
    if chip in ("amdgpu", "radeon", "nouveau", "i915", "xe"):
        return "gpu"
    if chip == "nvme" or chip.startswith("drivetemp"):
        return "storage"
    if chip in ("spd5118", "jc42"):
        return "dram"
    if chip in ("acpitz",):
        return "system"
    return "board"


@dataclass
class _Attr:
    """One attribute file read by a group; a `derived` attr turns the counter before it into W."""

    path: str
    scale: float
    role: str = "value"  # value | counter | derived
    counter: EnergyCounter | None = None  # for a counter: unwraps it, spots resets


@dataclass
class HwmonSource(Source):
    order: ClassVar[int] = 30
    attrs: list[_Attr] = field(default_factory=list)
    chip: str = ""

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        dirs = ctx.root.glob("/sys/class/hwmon", "hwmon*")
        if not dirs:
            return [cls(name="hwmon", reason="no /sys/class/hwmon chips")]
        out: list[Source] = []
        seen_names: dict[str, int] = {}
        for k, d in enumerate(unique_dirs(dirs)):
            if k >= MAX_CHIPS:
                out.append(
                    cls(name="hwmon", reason=f"{len(dirs)} hwmon chips: the first {MAX_CHIPS} read")
                )
                break
            try:
                chip = read_text(d / "name")
            except PermissionError:
                continue
            if not chip or chip in OWNED_ELSEWHERE:
                continue
            n = seen_names.get(chip, 0)
            seen_names[chip] = n + 1
            ident = chip if n == 0 else f"{chip}-{n}"
            src = cls(name=f"hwmon:{ident}", chip=chip)
            src._build(d, ident)
            if src.groups:
                out.append(src)
        return out or [cls(name="hwmon", reason="hwmon chips have no temp/in/curr/power/energy")]

    def _build(self, d: Path, ident: str) -> None:
        # Some drivers keep attributes under device/ (psutil looks in both).
        files: dict[str, Path] = {}
        for base in (d / "device", d):
            try:
                for f in base.iterdir():
                    if ATTR_RE.match(f.name):
                        files[f.name] = f
            except OSError:
                continue
        chip_label = read_label(d / "label") or read_label(d / "device" / "label") or ""
        interval = read_int(d / "update_interval")
        groups: dict[float, tuple[list[Channel], list[_Attr]]] = {}
        labels: dict[str, str] = {}
        for fname in files:
            m = ATTR_RE.match(fname)
            assert m is not None
            typ, num, _ = m.groups()
            labels[fname] = (
                read_label(files[fname].with_name(f"{typ}{num}_label"))
                or (chip_label if chip_label and typ in ("power", "energy", "in", "curr") else "")
                or f"{typ}{num}"
            )
        names = sorted(files, key=_natural)
        if len(names) > MAX_ATTRS_PER_CHIP:
            # A chip with thousands of attributes would cost the sampler a syscall each. What
            # the cap drops are per-core readings, never a socket's energy or a power meter
            # (a 64-core EPYC's amd_energy lists Esocket0 after 64 Ecore counters).
            names.sort(key=lambda f: _priority(f, labels[f], self.chip))
            kept = sorted(names[:MAX_ATTRS_PER_CHIP], key=_natural)
            self.reason = (
                self.reason
                + f" {len(names)} attributes, {MAX_ATTRS_PER_CHIP} read (per-core ones dropped);"
            ).strip()
            names = kept
        for fname in names:
            m = ATTR_RE.match(fname)
            assert m is not None
            typ, num, item = m.groups()
            f = files[fname]
            label = labels[fname]
            kind, unit = KIND[typ]
            if typ == "energy":
                method = "counter"
            elif item == "average":
                avg_ms = read_int(f.with_name(f"{typ}{num}_average_interval"))
                method = f"average:{avg_ms / 1000:g}s" if avg_ms else "average:driver"
            else:
                method = "instant"
            period = interval / 1000 if interval else DEFAULT_PERIOD_S[typ]
            meta: dict[str, object] = {"chip": self.chip}
            if typ == "temp":
                for key, suffix in (("critical_c", "crit"), ("max_c", "max")):
                    try:
                        limit = temperature_limit_c(read_int(f.with_name(f"temp{num}_{suffix}")))
                    except PermissionError:
                        limit = None
                    if limit is not None:  # -273150 and 65261850 mean "no limit set"
                        meta[key] = limit
            if self.chip == "amdgpu" and typ == "power":
                meta["note"] = "SoC power; on APUs it includes the CPU"
            suffix = "" if item == "input" else "_avg"
            cid = f"hwmon.{ident}.{typ}{num}{suffix}"
            scope = chip_scope(self.chip, label)
            if typ in ("power", "energy"):
                sock = SOCKET_ENERGY.match(label)
                # amd_energy's Esocket N and RAPL's package-N read the same MSR
                # (amd/amd_energy README): one domain, counted once.
                meta["domain"] = f"cpu-package:{sock.group(1)}" if sock else f"{ident}:{typ}{num}"
            ch = Channel(
                id=cid,
                label=f"{ident} {label}",
                source=self.name,
                kind=kind,
                unit=unit,
                scope=scope,
                method=method,
                update_period_s=period,
                meta=meta,
            )
            try:
                ok = read_int(f) is not None
            except PermissionError:
                ok = False
                self.reason = (self.reason + f" {fname} not readable;").strip()
            if not ok and typ == "energy":
                continue  # e.g. amd_energy restricted to root (CVE-2020-12912)
            chans, attrs = groups.setdefault(period, ([], []))
            chans.append(ch)
            if typ == "energy":
                # hwmon energy counters are 64-bit µJ: a drop is a reset, never a wrap.
                attrs.append(_Attr(str(f), SCALE[typ], "counter", EnergyCounter(cid, None)))
            else:
                attrs.append(_Attr(str(f), SCALE[typ]))
            if typ == "energy":
                chans.append(
                    Channel(
                        id=f"{cid}.power",
                        label=f"{ident} {label} power",
                        source=self.name,
                        kind="power",
                        unit="W",
                        scope=scope,
                        method="derived",
                        update_period_s=period,
                        meta={**meta, "energy_channel": cid},
                    )
                )
                attrs.append(_Attr(str(f), SCALE[typ], "derived"))
        for period, (chans, attrs) in sorted(groups.items()):
            notes: list[tuple[str, dict[str, Any]]] = []
            self.groups.append(
                ReadGroup(chans, self._reader(attrs, notes), period, cost_s=1e-5, notes=notes)
            )
        if self.groups:
            self.available = True
            self.reason = (self.reason + f" {self.chip}").strip()

    @staticmethod
    def _reader(
        attrs: list[_Attr], notes: list[tuple[str, dict[str, Any]]]
    ) -> Callable[[int], list[Value]]:
        def read(t_ns: int) -> list[Value]:
            out: list[Value] = []
            power: float | None = None
            for a in attrs:
                if a.role == "derived":
                    out.append(power)  # from the counter just before it
                    continue
                raw = read_int(a.path)
                v = None if raw is None else raw * a.scale
                power = None
                if v is not None and a.counter is not None:
                    v, power = a.counter.update(v, t_ns, notes)
                out.append(v)
            return out

        return read


def _priority(fname: str, label: str, chip: str) -> tuple[int, list[object]]:
    """Sort key for the attribute cap: meters first, package-level before per-core."""
    core = chip_scope(chip, label) == "cpu-core"
    meter = fname.startswith(("power", "energy"))
    return (int(core) * 2 + int(not meter), _natural(fname))


def _natural(s: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
