"""CPU power estimate for machines where nothing measures it.

P = TDP × (0.1 + 0.9 × u), u the system CPU utilisation: a linear load model
with an idle floor of 10 % of TDP (the floor CodeCarbon uses). TDP comes from
config (``cpu_tdp_w``, env ``ANUBIS_CPU_TDP_W``), else a small table keyed on
the CPU model in ``/proc/cpuinfo``, else 4 W per logical CPU (CodeCarbon's
per-core default). Every channel it makes is labelled ``estimated``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import ClassVar

import psutil

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, ReadGroup, Source, read_text

ESTIMATE_PERIOD_S = 0.5
WATTS_PER_LOGICAL_CPU = 4.0
IDLE_FRACTION = 0.1

# Package TDP in W for common families; suffix letters decide laptop vs desktop parts.
TDP_TABLE: list[tuple[str, float]] = [
    (r"Core\(TM\) i\d-\d{4,5}U", 15.0),
    (r"Core\(TM\) i\d-\d{4,5}(H|HK|HX)", 45.0),
    (r"Core\(TM\) i\d-\d{4,5}K", 125.0),
    (r"Core\(TM\) i\d-\d{4,5}", 65.0),
    (r"Core\(TM\) Ultra \d \d{3}U", 15.0),
    (r"Core\(TM\) Ultra \d \d{3}H", 28.0),
    (r"Ryzen \d \d{4}U", 15.0),
    (r"Ryzen \d \d{4}(H|HS|HX)", 45.0),
    (r"Ryzen \d \d{4}X3D", 120.0),
    (r"Ryzen \d \d{4}X", 105.0),
    (r"Ryzen \d \d{4}", 65.0),
    (r"Raspberry Pi 5|BCM2712", 8.0),
    (r"Raspberry Pi 4|BCM2711", 6.0),
]


def lookup_tdp(model: str) -> float | None:
    """The package TDP in W of a CPU model name from `TDP_TABLE` (first match), or None."""
    for pattern, tdp in TDP_TABLE:
        if re.search(pattern, model):
            return tdp
    return None


def cpu_model(text: str | None) -> str:
    """The CPU model from /proc/cpuinfo text (``model name``, ``Model`` or ``Hardware``), or ""."""
    for line in (text or "").splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return val.strip()
    return ""


CPU_METERS = ("cpu-package", "apu-package", "platform", "board-input", "soc")
"""Scopes of a measured meter that contains the CPU: with one, nothing is estimated."""


@dataclass
class CpuEstimateSource(Source):
    """An estimated CPU package power in W: TDP × (0.1 + 0.9 × u), u the system CPU
    utilisation over the last interval (psutil ``cpu_times``; since boot on the first
    read). Method ``estimated`` (module docstring: where the TDP comes from).
    """

    order: ClassVar[int] = 90
    tdp_w: float = 0.0
    _last: tuple[float, float] | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One estimate, unless a source found earlier measures a meter that contains the CPU
        (`CPU_METERS`, or a Jetson module rail): then one unavailable source saying so.
        A non-numeric ``cpu_tdp_w`` raises ValueError.
        """
        measured = [
            c
            for s in ctx.found
            if s.available
            for c in s.channels
            if c.kind == "power"
            and c.method != "estimated"
            and not c.meta.get("is_limit")
            and (c.scope in CPU_METERS or c.meta.get("module_rail"))
        ]
        if measured:
            first = measured[0]
            what = (
                "the module's rails are measured"
                if first.meta.get("module_rail")
                else f"{first.id} measures a meter that contains the CPU"
            )
            return [cls(name="estimate", reason=f"not needed: {what}")]
        cfg = ctx.config.get("cpu_tdp_w") or os.environ.get("ANUBIS_CPU_TDP_W")
        model = cpu_model(read_text(ctx.root.path("/proc/cpuinfo"))) or (
            read_text(ctx.root.path("/proc/device-tree/model")) or ""
        ).strip("\x00 ")
        ncpu = psutil.cpu_count() or 1
        if cfg:
            tdp, why = float(str(cfg)), "TDP from config"
        elif (t := lookup_tdp(model)) is not None:
            tdp, why = t, f"TDP of {model} from the table"
        else:
            tdp = WATTS_PER_LOGICAL_CPU * ncpu
            of = f" for {model}" if model else ""
            why = f"TDP unknown{of}: {WATTS_PER_LOGICAL_CPU:g} W × {ncpu} logical CPUs"
        src = cls(name="estimate", available=True, tdp_w=tdp)
        src.reason = f"estimated: {tdp:g} W × (0.1 + 0.9 × CPU load); {why}"
        ch = Channel(
            id="estimate.cpu.power",
            label="CPU power (estimated)",
            source=src.name,
            kind="power",
            unit="W",
            scope="cpu-package",
            method="estimated",
            update_period_s=ESTIMATE_PERIOD_S,
            meta={"model": "tdp×(0.1+0.9·load)", "tdp_w": tdp, "basis": why},
        )
        src.groups = [ReadGroup([ch], src._read, ESTIMATE_PERIOD_S, cost_s=5e-5)]
        return [src]

    def _read(self, t_ns: int) -> list[Value]:
        times = psutil.cpu_times()
        total = sum(times)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        util: float | None
        if self._last is None:
            # Since boot: a coarse first value beats none for a one-shot `anubis sensors`.
            util = busy / total if total > 0 else None
        else:
            db, dt = busy - self._last[0], total - self._last[1]
            util = max(0.0, min(1.0, db / dt)) if dt > 0 else None
        self._last = (busy, total)
        if util is None:
            return [None]
        return [self.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * util)]
