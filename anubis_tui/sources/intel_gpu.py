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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    attr_index,
    limit_c,
    read_int,
    read_label,
    readable,
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
    """One Intel GPU (i915 or xe), discrete or integrated."""

    order: ClassVar[int] = 13
    card: DrmCard | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
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
        drv = card.driver
        pfx = f"{drv}.{card.name}"
        kind_word = "integrated" if card.on_root_bus else "discrete"
        base_meta: dict[str, Any] = {"chip": drv, "pci": card.slot}

        def ch(suffix: str, label: str, kind: str, unit: str, method: str, period: float,
               **meta: Any) -> Channel:  # fmt: skip
            return Channel(
                id=f"{pfx}.{suffix}",
                label=f"{card.name} {label}",
                source=self.name,
                kind=kind,
                unit=unit,
                scope="gpu",
                method=method,
                update_period_s=period,
                meta={**base_meta, **meta},
            )

        hw = card.hwmon
        energy_groups: list[ReadGroup] = []
        state: list[tuple[Channel, Any]] = []
        limits: list[tuple[Channel, Any]] = []
        notes: list[str] = []
        if hw is not None:
            meters = sorted(hw.glob("energy*_input"), key=lambda p: attr_index(p.name))
            card_power_id: str | None = None
            for f in meters:
                n = attr_index(f.name)
                if not readable(f):
                    notes.append(f"{f.name} not readable")
                    self.missing.append(
                        f"{card.name} {f.name} not readable: its power is not measured "
                        f"(fix: chmod a+r {f} as root)"
                    )
                    continue
                label = read_label(hw / f"energy{n}_label") or DEFAULT_LABELS[drv].get(
                    n, f"meter{n}"
                )
                slug = _slug(label)
                domain = f"gpu:{card.slot}" if slug == "card" else f"gpu:{card.slot}:{slug}"
                meta: dict[str, Any] = {"domain": domain, "file": f"hwmon energy{n}_input"}
                if slug != "card" and card_power_id is not None:
                    meta["within"] = card_power_id
                    meta["note"] = "the GPU package, inside the card meter: never added to it"
                e = ch(f"energy_{slug}", f"{label} energy", "energy", "J", "counter",
                       ENERGY_PERIOD_S, **meta)  # fmt: skip
                p = ch(f"power_{slug}", f"{label} power", "power", "W", "derived",
                       ENERGY_PERIOD_S, **{**meta, "energy_channel": e.id})  # fmt: skip
                if slug == "card":
                    card_power_id = p.id
                energy_groups.append(_energy_group(e, p, f))
            for f in sorted(hw.glob("power*_input"), key=lambda p: attr_index(p.name)):
                n = attr_index(f.name)
                if readable(f):
                    label = read_label(hw / f"power{n}_label") or DEFAULT_LABELS[drv].get(n, "")
                    c = ch(f"power{n}_input", f"{label} power (input)".strip(), "power", "W",
                           "instant", ENERGY_PERIOD_S, file=f"hwmon power{n}_input",
                           domain=f"gpu:{card.slot}" if label == "card" else
                           f"gpu:{card.slot}:{_slug(label or str(n))}")  # fmt: skip
                    state.append((c, _attr(f, 1e-6, "power")))
            for f in sorted(hw.glob("temp*_input"), key=lambda p: attr_index(p.name)):
                n = attr_index(f.name)
                if readable(f):
                    label = read_label(hw / f"temp{n}_label") or f"temp{n}"
                    tmeta: dict[str, Any] = {"file": f"hwmon temp{n}_input"}
                    crit = limit_c(hw / f"temp{n}_crit")
                    if crit is not None:
                        tmeta["critical_c"] = crit
                    c = ch(
                        f"temp_{_slug(label)}",
                        f"{label} temperature",
                        "temperature",
                        "°C",
                        "instant",
                        STATE_PERIOD_S,
                        **tmeta,
                    )
                    state.append((c, _attr(f, 1e-3, "temperature")))
            for f in sorted(hw.glob("in*_input"), key=lambda p: attr_index(p.name)):
                n = attr_index(f.name)
                if readable(f):
                    label = read_label(hw / f"in{n}_label") or f"in{n}"
                    c = ch(
                        f"voltage_{_slug(label)}",
                        f"{label} voltage",
                        "voltage",
                        "V",
                        "instant",
                        STATE_PERIOD_S,
                        file=f"hwmon in{n}_input",
                    )
                    state.append((c, _attr(f, 1e-3, "voltage")))
            for f in sorted(hw.glob("power*_max"), key=lambda p: attr_index(p.name)):
                n = attr_index(f.name)
                if not f.name.endswith(("_max",)) or "rated" in f.name:
                    continue
                label = read_label(hw / f"power{n}_label") or DEFAULT_LABELS[drv].get(n, f"{n}")
                for fname, suffix, what in (
                    (f"power{n}_max", f"power{n}_max", "power limit PL1 (power{n}_max)"),
                    (f"power{n}_rated_max", f"power{n}_rated_max", "rated TDP (default)"),
                ):
                    g = hw / fname
                    if readable(g):
                        c = ch(
                            suffix,
                            f"{label} {what}",
                            "power",
                            "W",
                            "instant",
                            LIMIT_PERIOD_S,
                            is_limit=True,
                            file=f"hwmon {fname}",
                        )
                        limits.append((c, _attr(g, 1e-6, "limit")))
        gts = find_gts(card)
        for gt in gts:
            if gt.act is not None:
                extra = {}
                mx = _read(gt.rp0)
                if mx:
                    extra["max_hz"] = mx * 1e6
                c = ch(
                    f"{gt.name}.clock_actual",
                    f"{gt.name} gfx clock (actual)",
                    "frequency",
                    "Hz",
                    "instant",
                    STATE_PERIOD_S,
                    file=str(gt.act.name),
                    **extra,
                )
                state.append((c, _attr(gt.act, 1e6, "frequency")))
            if gt.cur is not None:
                c = ch(
                    f"{gt.name}.clock_requested",
                    f"{gt.name} gfx clock (requested)",
                    "frequency",
                    "Hz",
                    "instant",
                    STATE_PERIOD_S,
                    file=str(gt.cur.name),
                )
                state.append((c, _attr(gt.cur, 1e6, "frequency")))
            if gt.reasons or gt.status is not None:
                flags: dict[int, str] = {}
                own: dict[str, str] = {}
                for bit, (name, _) in enumerate(gt.reasons):
                    flags[1 << bit] = REASONS.get(name, name)
                    own[str(1 << bit)] = name
                status_bit = 1 << len(gt.reasons)
                flags[status_bit] = "throttled"
                own[str(status_bit)] = "status (no reason named)"
                c = ch(f"{gt.name}.throttle", f"{gt.name} throttle reasons", "throttle", "flags",
                       "instant", STATE_PERIOD_S, flags=flags, reasons=own,
                       file="throttle_reason_*")  # fmt: skip
                state.append((c, _reasons(gt)))
        self.groups.extend(energy_groups)
        for rows, period, cost in ((state, STATE_PERIOD_S, 4e-5), (limits, LIMIT_PERIOD_S, 1e-5)):
            if rows:
                self.groups.append(_group(rows, period, cost))
        self.available = bool(self.groups)
        if hw is None:
            what = "integrated GPU" if card.on_root_bus else "GPU"
            self.reason = (
                f"{what} {card.slot} on {drv}: no hwmon power meter (an integrated GPU's power "
                "is inside the CPU package's RAPL reading); clocks and throttle reasons only"
            )
            if not card.on_root_bus:  # an integrated GPU is inside RAPL: not a missing meter
                self.missing.append(f"{card.name} power not measured: {drv} exposes no hwmon")
        else:
            self.reason = f"{kind_word} GPU {card.slot} on {drv}" + (
                f"; {'; '.join(notes)}" if notes else ""
            )
        if not self.groups:
            self.reason += "; nothing readable"


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


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "x"
