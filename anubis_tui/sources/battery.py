"""Laptop battery discharge power (``/sys/class/power_supply``).

``power_now`` is µW; without it ``current_now`` (µA) × ``voltage_now`` (µV).
It measures the whole laptop only while discharging: on AC the value is the
charge rate or 0, so the channel reads None then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, ReadGroup, Source, read_int, read_text

BATTERY_PERIOD_S = 1.0  # firmware (EC) dependent; seconds in practice


@dataclass
class BatterySource(Source):
    """Each battery's discharge power in W (``power_now`` µW, else ``current_now`` µA ×
    ``voltage_now`` µV), read every second; None unless the battery is discharging.

    Unavailable, with the reason, without a battery that has either file.
    """

    order: ClassVar[int] = 60
    batteries: list[Path] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source for the ``Battery`` supplies under ``/sys/class/power_supply``, or one
        unavailable source with the reason.
        """
        supplies = ctx.root.glob("/sys/class/power_supply", "*")
        bats = [p for p in supplies if read_text(p / "type") == "Battery"]
        bats = [p for p in bats if (p / "power_now").exists() or (p / "current_now").exists()]
        if not bats:
            return [cls(name="battery", reason="no battery with power_now or current_now")]
        src = cls(name="battery", available=True, batteries=bats)
        chans = [
            Channel(
                id=f"battery.{b.name}.power",
                label=f"{b.name} discharge",
                source=src.name,
                kind="power",
                unit="W",
                scope="battery",
                method="instant",
                update_period_s=BATTERY_PERIOD_S,
                meta={"note": "whole laptop, only while discharging"},
            )
            for b in bats
        ]
        src.groups = [ReadGroup(chans, src._read, BATTERY_PERIOD_S)]
        src.reason = ", ".join(f"{b.name} ({read_text(b / 'status') or '?'})" for b in bats)
        return [src]

    def _read(self, t_ns: int) -> list[Value]:
        return [battery_power_w(b) for b in self.batteries]


def battery_power_w(b: Path) -> float | None:
    """Discharge power of battery directory `b` in W: |power_now| / 1e6, else
    |current_now| × voltage_now / 1e12; None unless ``status`` is ``Discharging`` or
    when the files do not read.
    """
    if read_text(b / "status") != "Discharging":
        return None
    p = read_int(b / "power_now")
    if p is not None:
        return abs(p) / 1e6
    i, v = read_int(b / "current_now"), read_int(b / "voltage_now")
    if i is None or v is None:
        return None
    return abs(i) * v / 1e12
