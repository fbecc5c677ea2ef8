"""Thermal zones (``/sys/class/thermal/thermal_zone*``): temperatures with trip points.

A zone whose ``temp`` reads empty (disabled, e.g. Orin ``tj-thermal`` on some
carriers) or exactly 0 m°C (firmware IPC error seen on Jetson) gives no
reading (None), never 0 °C. A zone whose type names an hwmon chip already
found (``acpitz``) is the same sensor seen twice and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    ReadGroup,
    Source,
    read_int,
    read_text,
    temperature_limit_c,
    unique_dirs,
)

ZONE_PERIOD_S = 0.5  # Orin tj-thermal was seen polled every 1024 ms; most zones are faster


def zone_scope(zone_type: str) -> str:
    """The meter-tree scope of a thermal zone from its ``type`` (``x86_pkg_temp`` →
    ``cpu-package``, ``gpu-thermal`` → ``gpu``, ``tj-thermal`` → ``soc`` …); else ``system``.
    """
    t = zone_type.lower()
    if "pkg" in t or t.startswith(("cpu", "x86")):
        return "cpu-package" if "pkg" in t else "cpu"
    if "gpu" in t:
        return "gpu"
    if t.startswith(("soc", "tj", "bcm")):
        return "soc"
    if "pmic" in t:
        return "pmic"
    return "system"


@dataclass
class ThermalZoneSource(Source):
    """Every thermal zone's temperature (``temp``, m°C → °C) with its ``critical`` trip as
    ``critical_c`` and its first ``passive``/``hot`` trip as ``trip_c``. An empty or
    exactly 0 m°C reading is None.
    """

    order: ClassVar[int] = 40
    paths: list[str] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source over ``/sys/class/thermal/thermal_zone*`` (zones named like an hwmon chip
        already found skipped; repeated types numbered), or one unavailable source.
        """
        zones = ctx.root.glob("/sys/class/thermal", "thermal_zone*")
        if not zones:
            return [cls(name="thermal", reason="no /sys/class/thermal zones")]
        hwmon_chips = {getattr(s, "chip", None) for s in ctx.found}
        src = cls(name="thermal")
        chans: list[Channel] = []
        skipped: list[str] = []
        types_seen: dict[str, int] = {}
        for z in unique_dirs(zones):
            ztype = read_text(z / "type") or z.name
            if ztype in hwmon_chips:
                skipped.append(ztype)
                continue
            n = types_seen.get(ztype, 0)
            types_seen[ztype] = n + 1
            ident = ztype if n == 0 else f"{ztype}-{n}"
            meta: dict[str, object] = {"zone": z.name}
            for trip in sorted(z.glob("trip_point_*_type")):
                kind = read_text(trip)
                limit = temperature_limit_c(
                    read_int(trip.with_name(trip.name.replace("_type", "_temp")))
                )
                if limit is None:
                    continue
                if kind == "critical":
                    meta["critical_c"] = limit
                elif kind in ("passive", "hot") and "trip_c" not in meta:
                    meta["trip_c"] = limit
            if read_text(z / "temp") is None:
                meta["note"] = "zone reads empty (disabled)"
            chans.append(
                Channel(
                    id=f"thermal.{ident}",
                    label=f"{ident}",
                    source=src.name,
                    kind="temperature",
                    unit="°C",
                    scope=zone_scope(ztype),
                    method="instant",
                    update_period_s=ZONE_PERIOD_S,
                    meta=meta,
                )
            )
            src.paths.append(str(z / "temp"))
        if not chans:
            return [
                cls(
                    name="thermal",
                    reason="thermal zones duplicate hwmon chips: " + ", ".join(skipped),
                )
            ]
        src.available = True
        src.reason = f"{len(chans)} zones" + (
            f" (skipped, same as hwmon: {', '.join(skipped)})" if skipped else ""
        )
        src.groups = [ReadGroup(chans, src._read, ZONE_PERIOD_S, cost_s=1e-5)]
        return [src]

    def _read(self, t_ns: int) -> list[Value]:
        out: list[Value] = []
        for p in self.paths:
            try:
                v = read_int(p)
            except PermissionError:
                v = None
            # Exactly 0 m°C is the stuck-at-zero firmware failure, not a reading.
            out.append(None if not v else v / 1000)
        return out
