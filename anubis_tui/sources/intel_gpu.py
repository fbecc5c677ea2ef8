"""Intel GPUs on the i915 and xe drivers: card energy, power limits, GT clocks, throttle reasons.

Sources: the kernel's ``Documentation/ABI/testing/sysfs-driver-intel-i915-hwmon``
and ``sysfs-driver-intel-xe-hwmon``; i915's ``intel_gt_sysfs_pm.c`` (the
``gt/gtN/rps_*_freq_mhz``, ``punit_req_freq_mhz`` and ``throttle_reason_*``
files, each 0 or 1); xe's ``xe_gt_freq.c`` (``tileT/gtG/freq0/act_freq``,
``cur_freq``, ``rp0_freq`` …, MHz) and ``xe_gt_throttle.c``
(``freq0/throttle/status`` and ``reason_*``).

* hwmon (discrete cards only; an integrated GPU has none, and says so):
  ``energyN_input`` (µJ, a 64-bit counter since the driver loaded; power is
  its rate). i915 has one meter, the card. xe has the card (``energy1``,
  label ``card``) and the GPU package inside it (``energy2``, label ``pkg``):
  the package channel names the card's as ``within`` and is never added to it.
* limits: ``powerN_max`` (the sustained limit PL1, µW, writable as root) and
  ``powerN_rated_max`` (the card's default TDP, µW).
* ``tempN_input`` and ``inN_input`` where the driver has them (xe on
  Battlemage; i915 on DG2 has no temperature).
* per GT: the actual clock (``rps_act_freq_mhz`` / ``act_freq``), the
  requested one (``rps_cur_freq_mhz`` / ``cur_freq``), and the throttle
  reasons as one ``throttle`` channel whose bits are the reason files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    TEMP_CRIT,
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    attr_index,
    derived_power,
    hwmon_inputs,
    read_int,
    read_label,
    readable,
    slug,
)
from anubis_tui.sources.drm import DrmCard, drm_cards

ENERGY_PERIOD_S = 0.1
STATE_PERIOD_S = 0.25
LIMIT_PERIOD_S = 2.0

# Throttle reason file → canonical name (NVML's where it means the same: power_cap, thermal,
# hw_slowdown). i915 intel_gt_sysfs_pm.c and xe xe_gt_throttle.c name the same reasons.
REASONS: dict[str, str] = {
    "pl1": "power_cap",
    "pl2": "power_cap",
    "pl4": "power_cap",  # "PL4, Iccmax etc."
    "psys_pl1": "power_cap",
    "psys_pl2": "power_cap",
    "psys_crit": "power_cap",
    "thermal": "thermal",
    "ratl": "thermal",  # running average thermal limit
    "vr_thermalert": "thermal",
    "soc_thermal": "thermal",
    "mem_thermal": "thermal",
    "vr_thermal": "thermal",
    "soc_avg_thermal": "thermal",
    "prochot": "hw_slowdown",
    "vr_tdc": "current_limit",
    "iccmax": "current_limit",
    "fastvmode": "current_limit",
    "p0_freq": "freq_capped",
}
DEFAULT_LABELS = {"i915": {1: "card"}, "xe": {1: "card", 2: "pkg"}}


@dataclass
class _Gt:
    """One GT's files: where the actual and requested clocks and the reasons are."""

    name: str
    act: Path | None
    cur: Path | None
    rp0: Path | None
    reasons: list[tuple[str, Path]]
    status: Path | None


def _first(d: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        p = d / n
        if readable(p):
            return p
    return None


def find_gts(card: DrmCard) -> list[_Gt]:
    """i915: ``cardN/gt/gt*/`` (or the legacy ``cardN/gt_*_freq_mhz``); xe: ``tile*/gt*/freq0/``."""
    out: list[_Gt] = []
    if card.driver == "xe":
        for gt in sorted(card.device.glob("tile*/gt*")):
            f = gt / "freq0"
            if not f.is_dir():
                continue
            reasons = [
                (p.name.removeprefix("reason_"), p) for p in sorted(f.glob("throttle/reason_*"))
            ]
            reasons += [
                (p.name.removeprefix("throttle_reason_"), p)
                for p in sorted(f.glob("throttle_reason_*"))
            ]
            status = _first(f / "throttle", ("status",)) or _first(f, ("throttle_status",))
            name = f"{gt.parent.name}.{gt.name}" if gt.parent.name != "tile0" else gt.name
            out.append(_Gt(name, _first(f, ("act_freq",)), _first(f, ("cur_freq",)),
                           _first(f, ("rp0_freq",)), reasons, status))  # fmt: skip
        return out
    drm = card.drm_dir
    for gt in sorted(drm.glob("gt/gt*")):
        reasons = [
            (p.name.removeprefix("throttle_reason_"), p)
            for p in sorted(gt.glob("throttle_reason_*"))
            if p.name != "throttle_reason_status"
        ]
        out.append(
            _Gt(
                gt.name,
                _first(gt, ("rps_act_freq_mhz",)),
                _first(gt, ("rps_cur_freq_mhz",)),
                _first(gt, ("rps_RP0_freq_mhz",)),
                reasons,
                _first(gt, ("throttle_reason_status",)),
            )
        )
    if not out and readable(drm / "gt_act_freq_mhz"):  # kernels before the per-GT files
        out.append(_Gt("gt0", drm / "gt_act_freq_mhz", _first(drm, ("gt_cur_freq_mhz",)),
                       _first(drm, ("gt_RP0_freq_mhz",)), [], None))  # fmt: skip
    return out


@dataclass
class IntelGpuSource(Source):
    """One Intel GPU (i915 or xe), discrete or integrated: card energy and power, limits,
    temperatures, voltages, GT clocks and throttle reasons (module docstring: which file
    gives what, in which unit).

    An integrated GPU has no hwmon meter (its power is inside RAPL): its
    reason says so and it reads clocks and throttle reasons only. A discrete
    card whose meter cannot be read is named in `missing` with the fix.
    """

    order: ClassVar[int] = 13
    card: DrmCard | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source per i915/xe card under ``/sys/class/drm`` (`drm_cards`); one unavailable
        source with the reason when there is none."""
        cards = drm_cards(ctx.root, ("i915", "xe"), ("i915", "xe"))
        if not cards:
            return [cls(name="intel-gpu", reason="no i915 or xe GPU under /sys/class/drm or hwmon")]
        out: list[Source] = []
        for card in cards:
            src = cls(name=f"{card.driver}:{card.name}", card=card)
            src._setup()
            out.append(src)
        return out

    def _setup(self) -> None:
        card = self.card
        assert card is not None
        b = _IntelBuild(self, card)
        if b.hw is not None:
            b.energy(b.hw)
            b.power_inputs(b.hw)
            b.temperatures(b.hw)
            b.voltages(b.hw)
            b.power_limits(b.hw)
        for gt in find_gts(card):
            b.gt(gt)
        self.groups.extend(b.energy_groups)
        for rows, period, cost in ((b.state, STATE_PERIOD_S, 4e-5),
                                   (b.limits, LIMIT_PERIOD_S, 1e-5)):  # fmt: skip
            if rows:
                self.groups.append(_group(rows, period, cost))
        self.available = bool(self.groups)
        self._explain(card, b.notes)

    def _explain(self, card: DrmCard, notes: list[str]) -> None:
        """Set `reason` (and `missing` for a discrete card without hwmon)."""
        drv = card.driver
        if card.hwmon is None:
            what = "integrated GPU" if card.on_root_bus else "GPU"
            self.reason = (
                f"{what} {card.slot} on {drv}: no hwmon power meter (an integrated GPU's power "
                "is inside the CPU package's RAPL reading); clocks and throttle reasons only"
            )
            if not card.on_root_bus:  # an integrated GPU is inside RAPL: not a missing meter
                self.missing.append(f"{card.name} power not measured: {drv} exposes no hwmon")
        else:
            kind_word = "integrated" if card.on_root_bus else "discrete"
            self.reason = f"{kind_word} GPU {card.slot} on {drv}" + (
                f"; {'; '.join(notes)}" if notes else ""
            )
        if not self.groups:
            self.reason += "; nothing readable"


class _IntelBuild:
    """The channels of one card, built once at discovery: `energy_groups` (one per meter),
    `state` and `limits` rows of (channel, reader)."""

    def __init__(self, src: IntelGpuSource, card: DrmCard) -> None:
        self.src, self.card, self.drv = src, card, card.driver
        self.hw = card.hwmon
        self.energy_groups: list[ReadGroup] = []
        self.state: list[tuple[Channel, Any]] = []
        self.limits: list[tuple[Channel, Any]] = []
        self.notes: list[str] = []

    def ch(self, suffix: str, label: str, kind: str, unit: str, method: str, period: float,
           **meta: Any) -> Channel:  # fmt: skip
        """A channel of this card (scope ``gpu``)."""
        return Channel(
            id=f"{self.drv}.{self.card.name}.{suffix}",
            label=f"{self.card.name} {label}",
            source=self.src.name,
            kind=kind,
            unit=unit,
            scope="gpu",
            method=method,
            update_period_s=period,
            meta={"chip": self.drv, "pci": self.card.slot, **meta},
        )

    def _default_label(self, n: int, default: str) -> str:
        return DEFAULT_LABELS[self.drv].get(n, default)

    def energy(self, hw: Path) -> None:
        """hwmon ``energyN_input`` (µJ counters) and the power derived from each; the package
        meter (xe's ``pkg``) is ``within`` the card's. An unreadable meter is a note and a
        `missing` line with its fix."""
        slot = self.card.slot
        card_power_id: str | None = None
        for f in sorted(hw.glob("energy*_input"), key=lambda p: attr_index(p.name)):
            n = attr_index(f.name)
            if not readable(f):
                self.notes.append(f"{f.name} not readable")
                self.src.missing.append(
                    f"{self.card.name} {f.name} not readable: its power is not measured "
                    f"(fix: chmod a+r {f} as root)"
                )
                continue
            label = read_label(hw / f"energy{n}_label") or self._default_label(n, f"meter{n}")
            s = slug(label, "x")
            domain = f"gpu:{slot}" if s == "card" else f"gpu:{slot}:{s}"
            meta: dict[str, Any] = {"domain": domain, "file": f"hwmon energy{n}_input"}
            if s != "card" and card_power_id is not None:
                meta["within"] = card_power_id
                meta["note"] = "the GPU package, inside the card meter: never added to it"
            e = self.ch(f"energy_{s}", f"{label} energy", "energy", "J", "counter",
                        ENERGY_PERIOD_S, **meta)  # fmt: skip
            p = derived_power(e, f"{self.drv}.{self.card.name}.power_{s}",
                              f"{self.card.name} {label} power")  # fmt: skip
            if s == "card":
                card_power_id = p.id
            self.energy_groups.append(_energy_group(e, p, f))

    def power_inputs(self, hw: Path) -> None:
        """hwmon ``powerN_input`` (µW → W, instant)."""
        slot = self.card.slot
        for a in hwmon_inputs(hw, "power"):
            n = a.index
            label = a.label or self._default_label(n, "")
            c = self.ch(f"power{n}_input", f"{label} power (input)".strip(), "power", "W",
                        "instant", ENERGY_PERIOD_S, file=f"hwmon power{n}_input",
                        domain=f"gpu:{slot}" if label == "card" else
                        f"gpu:{slot}:{slug(label or str(n), 'x')}")  # fmt: skip
            self.state.append((c, _attr(a.path, 1e-6, "power")))

    def temperatures(self, hw: Path) -> None:
        """hwmon ``tempN_input`` (m°C → °C) with ``tempN_crit``."""
        for t in hwmon_inputs(hw, "temp", TEMP_CRIT):
            c = self.ch(f"temp_{slug(t.name, 'x')}", f"{t.name} temperature", "temperature",
                        "°C", "instant", STATE_PERIOD_S, **t.meta)  # fmt: skip
            self.state.append((c, _attr(t.path, 1e-3, "temperature")))

    def voltages(self, hw: Path) -> None:
        """hwmon ``inN_input`` (mV → V)."""
        for v in hwmon_inputs(hw, "in"):
            c = self.ch(f"voltage_{slug(v.name, 'x')}", f"{v.name} voltage", "voltage", "V",
                        "instant", STATE_PERIOD_S, **v.meta)  # fmt: skip
            self.state.append((c, _attr(v.path, 1e-3, "voltage")))

    def power_limits(self, hw: Path) -> None:
        """hwmon ``powerN_max`` (PL1) and ``powerN_rated_max`` (TDP), µW → W, as limits."""
        for f in sorted(hw.glob("power*_max"), key=lambda p: attr_index(p.name)):
            n = attr_index(f.name)
            if "rated" in f.name:
                continue
            label = read_label(hw / f"power{n}_label") or self._default_label(n, f"{n}")
            for fname, what in (
                (f"power{n}_max", f"power limit PL1 (power{n}_max)"),
                (f"power{n}_rated_max", "rated TDP (default)"),
            ):
                g = hw / fname
                if readable(g):
                    c = self.ch(fname, f"{label} {what}", "power", "W", "instant",
                                LIMIT_PERIOD_S, is_limit=True, file=f"hwmon {fname}")  # fmt: skip
                    self.limits.append((c, _attr(g, 1e-6, "limit")))

    def gt(self, gt: _Gt) -> None:
        """One GT's actual and requested clocks (MHz → Hz) and its throttle-reason flags."""
        if gt.act is not None:
            mx = _read(gt.rp0)
            extra = {"max_hz": mx * 1e6} if mx else {}
            c = self.ch(f"{gt.name}.clock_actual", f"{gt.name} gfx clock (actual)", "frequency",
                        "Hz", "instant", STATE_PERIOD_S, file=str(gt.act.name),
                        **extra)  # fmt: skip
            self.state.append((c, _attr(gt.act, 1e6, "frequency")))
        if gt.cur is not None:
            c = self.ch(f"{gt.name}.clock_requested", f"{gt.name} gfx clock (requested)",
                        "frequency", "Hz", "instant", STATE_PERIOD_S,
                        file=str(gt.cur.name))  # fmt: skip
            self.state.append((c, _attr(gt.cur, 1e6, "frequency")))
        if gt.reasons or gt.status is not None:
            flags: dict[int, str] = {}
            own: dict[str, str] = {}
            for bit, (name, _) in enumerate(gt.reasons):
                flags[1 << bit] = REASONS.get(name, name)
                own[str(1 << bit)] = name
            status_bit = 1 << len(gt.reasons)
            flags[status_bit] = "throttled"
            own[str(status_bit)] = "status (no reason named)"
            c = self.ch(f"{gt.name}.throttle", f"{gt.name} throttle reasons", "throttle", "flags",
                        "instant", STATE_PERIOD_S, flags=flags, reasons=own,
                        file="throttle_reason_*")  # fmt: skip
            self.state.append((c, _reasons(gt)))


def _energy_group(e: Channel, p: Channel, f: Path) -> ReadGroup:
    # A 64-bit µJ counter since the driver loaded: a drop is a reset, never a wrap.
    counter = EnergyCounter(e.id, None)
    notes: list[tuple[str, dict[str, Any]]] = []
    path = str(f)

    def read(t_ns: int) -> list[Value]:
        raw = read_int(path)
        if raw is None:
            return [None, None]
        dt = (t_ns - counter.last_t) / 1e9
        j, w = counter.update(raw * 1e-6, t_ns, notes)
        return [j, w if dt >= 0.05 else None]

    return ReadGroup([e, p], read, ENERGY_PERIOD_S, cost_s=1e-5, notes=notes)


def _group(rows: list[tuple[Channel, Any]], period: float, cost: float) -> ReadGroup:
    def read(t_ns: int) -> list[Value]:
        return [fn() for _, fn in rows]

    return ReadGroup([c for c, _ in rows], read, period, cost_s=cost)


RANGES = {
    "power": (0.0, 1500.0),
    "limit": (1.0, 1500.0),
    "temperature": (-40.0, 150.0),
    "frequency": (0.0, 10e9),
    "voltage": (0.0, 60.0),
}


def _attr(path: Path, scale: float, kind: str) -> Any:
    p = str(path)
    lo, hi = RANGES[kind]

    def fn() -> Value:
        try:
            v = read_int(p)
        except PermissionError:
            return None
        if v is None or (kind == "temperature" and v in (-273150, 65261850)):
            return None
        x = v * scale
        return x if lo <= x <= hi else None

    return fn


def _reasons(gt: _Gt) -> Any:
    paths = [str(p) for _, p in gt.reasons]
    status = str(gt.status) if gt.status is not None else None

    def fn() -> Value:
        mask = 0
        seen = False
        for bit, p in enumerate(paths):
            v = read_int(p)
            if v is None:
                continue
            seen = True
            if v:
                mask |= 1 << bit
        if status is not None:
            s = read_int(status)
            if s is not None:
                seen = True
                if s and not mask:
                    mask |= 1 << len(paths)  # throttled, and no reason file says why
        return mask if seen else None

    return fn


def _read(p: Path | None) -> int | None:
    if p is None:
        return None
    try:
        return read_int(p)
    except PermissionError:
        return None
