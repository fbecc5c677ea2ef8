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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    derived_power,
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
    """The meter-tree scope of a hwmon reading from its chip name and label (kernel
    Documentation/hwmon/*.rst per chip): board input and rails for power monitors,
    ``cpu-package``/``cpu-core`` by label, ``gpu``, ``storage``, ``dram``, else ``board``.
    """
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
    """One hwmon chip: every ``temp|in|curr|power|energy<N>_{input,average}`` attribute
    as a channel in SI units (°C, V, A, W, J; module docstring), grouped by update period.

    Energy counters (µJ) get a derived power channel (W) beside them. The
    chip's ``update_interval`` (ms) sets the period where present, else
    `DEFAULT_PERIOD_S`. Scope per `chip_scope`. An attribute that answers
    EPERM is named in the reason; an unreadable energy counter is left out.
    """

    order: ClassVar[int] = 30
    chip: str = ""

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source per chip under ``/sys/class/hwmon`` with a readable attribute (at most
        `MAX_CHIPS`), chips of `OWNED_ELSEWHERE` skipped; a second chip of one name is
        ``<name>-1``. One unavailable source with the reason when there is none."""
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
        files = _attr_files(d)
        labels = _labels(d, files)
        interval = read_int(d / "update_interval")
        groups: dict[float, tuple[list[Channel], list[_Attr]]] = {}
        for fname in self._capped(sorted(files, key=_natural), labels):
            typ, num, item = _parts(fname)
            f = files[fname]
            label = labels[fname]
            period = interval / 1000 if interval else DEFAULT_PERIOD_S[typ]
            cid = f"hwmon.{ident}.{typ}{num}{'' if item == 'input' else '_avg'}"
            ch = self._channel(cid, f"{ident} {label}", typ, period, _method(f, typ, num, item),
                               self._meta(f, typ, num, label, ident), label)  # fmt: skip
            try:
                ok = read_int(f) is not None
            except PermissionError:
                ok = False
                self.reason = (self.reason + f" {fname} not readable;").strip()
            if not ok and typ == "energy":
                continue  # e.g. amd_energy restricted to root (CVE-2020-12912)
            chans, attrs = groups.setdefault(period, ([], []))
            chans.append(ch)
            if typ != "energy":
                attrs.append(_Attr(str(f), SCALE[typ]))
                continue
            # hwmon energy counters are 64-bit µJ: a drop is a reset, never a wrap.
            attrs.append(_Attr(str(f), SCALE[typ], "counter", EnergyCounter(cid, None)))
            chans.append(derived_power(ch, f"{cid}.power", f"{ident} {label} power"))
            attrs.append(_Attr(str(f), SCALE[typ], "derived"))
        for period, (chans, attrs) in sorted(groups.items()):
            notes: list[tuple[str, dict[str, Any]]] = []
            self.groups.append(
                ReadGroup(chans, self._reader(attrs, notes), period, cost_s=1e-5, notes=notes)
            )
        if self.groups:
            self.available = True
            self.reason = (self.reason + f" {self.chip}").strip()

    def _capped(self, names: list[str], labels: dict[str, str]) -> list[str]:
        """`names`, or the first `MAX_ATTRS_PER_CHIP` of them by `_priority` (said in the reason).

        A chip with thousands of attributes would cost the sampler a syscall each. What
        the cap drops are per-core readings, never a socket's energy or a power meter
        (a 64-core EPYC's amd_energy lists Esocket0 after 64 Ecore counters).
        """
        if len(names) <= MAX_ATTRS_PER_CHIP:
            return names
        ranked = sorted(names, key=lambda f: _priority(f, labels[f], self.chip))
        self.reason = (
            self.reason
            + f" {len(names)} attributes, {MAX_ATTRS_PER_CHIP} read (per-core ones dropped);"
        ).strip()
        return sorted(ranked[:MAX_ATTRS_PER_CHIP], key=_natural)

    def _meta(self, f: Path, typ: str, num: str, label: str, ident: str) -> dict[str, object]:
        """A channel's meta: ``chip``; temperature limits (``tempN_crit``/``_max``, m°C → °C);
        a power/energy ``domain`` (amd_energy's Esocket N is RAPL's package-N: one domain,
        counted once, per the kernel's amd_energy documentation)."""
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
        if typ in ("power", "energy"):
            sock = SOCKET_ENERGY.match(label)
            meta["domain"] = f"cpu-package:{sock.group(1)}" if sock else f"{ident}:{typ}{num}"
        return meta

    def _channel(self, cid: str, label: str, typ: str, period: float, method: str,
                 meta: dict[str, object], own_label: str) -> Channel:  # fmt: skip
        kind, unit = KIND[typ]
        return Channel(
            id=cid,
            label=label,
            source=self.name,
            kind=kind,
            unit=unit,
            scope=chip_scope(self.chip, own_label),
            method=method,
            update_period_s=period,
            meta=meta,
        )

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


def _parts(fname: str) -> tuple[str, str, str]:
    """(type, N, item) of an attribute name matching `ATTR_RE` (``power1_average``)."""
    m = ATTR_RE.match(fname)
    assert m is not None
    typ, num, item = m.groups()
    return typ, num, item


def _attr_files(d: Path) -> dict[str, Path]:
    """The attributes `ATTR_RE` matches, by name, from `d` and ``d/device`` (some drivers keep
    them there; psutil looks in both); `d`'s own win."""
    files: dict[str, Path] = {}
    for base in (d / "device", d):
        try:
            for f in base.iterdir():
                if ATTR_RE.match(f.name):
                    files[f.name] = f
        except OSError:
            continue
    return files


def _labels(d: Path, files: dict[str, Path]) -> dict[str, str]:
    """Each attribute's label: its ``<typ>N_label``, else (for meters) the chip's ``label``,
    else ``<typ>N``."""
    chip_label = read_label(d / "label") or read_label(d / "device" / "label") or ""
    labels: dict[str, str] = {}
    for fname in files:
        typ, num, _ = _parts(fname)
        labels[fname] = (
            read_label(files[fname].with_name(f"{typ}{num}_label"))
            or (chip_label if chip_label and typ in ("power", "energy", "in", "curr") else "")
            or f"{typ}{num}"
        )
    return labels


def _method(f: Path, typ: str, num: str, item: str) -> str:
    """``counter`` for energy; ``average:<s>`` from ``<typ>N_average_interval`` (ms) for an
    average (``average:driver`` without it); else ``instant``."""
    if typ == "energy":
        return "counter"
    if item == "average":
        avg_ms = read_int(f.with_name(f"{typ}{num}_average_interval"))
        return f"average:{avg_ms / 1000:g}s" if avg_ms else "average:driver"
    return "instant"
