"""NVIDIA Jetson INA3221 power rails and the integrated GPU (devfreq).

JetPack 5/6: the mainline ``ina3221`` hwmon driver gives ``in<k>_input`` (mV)
and ``curr<k>_input`` (mA) per channel, no power file: power = V × I.
JetPack 4: the ``ina3221x`` iio driver gives ``in_power<k>_input`` in mW.
Channels labelled ``NC`` (not connected) and the "sum of shunt voltages"
channel are skipped. ``VDD_IN`` (or ``POM_5V_IN`` on the Nano) is the module's
input power: board input, although it excludes the carrier board.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    DiscoveryContext,
    ReadGroup,
    Source,
    read_int,
    read_text,
    unique_dirs,
)

RAIL_PERIOD_S = 0.1
GPU_PERIOD_S = 0.25
BOARD_INPUT = {"VDD_IN", "POM_5V_IN"}
# Rails fed by another rail of the same module, so never added to it. AGX Orin devkits have no
# VDD_IN (jetson_stats#344): the module's power is VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0, and
# the memory rail VDDQ_VDD2_1V8AO is drawn from the 5 V system rail.
SUB_RAILS = {"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}
JETSON_GPUS = {"gv11b", "gp10b", "ga10b", "gb10b", "gpu"}


def skip_label(label: str) -> bool:
    return label.upper() == "NC" or label.upper().startswith("NC ") or "sum of" in label.lower()


@dataclass
class _Rail:
    label: str
    volt: Path | None
    curr: Path | None
    power_mw: Path | None  # JetPack 4


@dataclass
class JetsonRailSource(Source):
    order: ClassVar[int] = 25
    rails: list[_Rail] = field(default_factory=list)
    gpu_dir: Path | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        devs: list[Path] = []
        for drv in ("ina3221", "ina3221x"):
            devs += ctx.root.glob(f"/sys/bus/i2c/drivers/{drv}", "*-*")
        for d in ctx.root.glob("/sys/bus/i2c/devices", "*"):
            if "ina3221" in (_safe_text(d / "name") or ""):
                devs.append(d)
        src = cls(name="jetson")
        for dev in unique_dirs(devs):
            for hw in sorted(dev.glob("hwmon/hwmon*")):
                for lab in sorted(hw.glob("in*_label"), key=lambda p: p.name):
                    m = re.match(r"in(\d+)_label", lab.name)
                    label = _safe_text(lab) or ""
                    if not m or not label or skip_label(label):
                        continue
                    k = m.group(1)
                    curr = hw / f"curr{k}_input"
                    if not curr.exists():
                        continue  # a shunt-voltage channel, not a rail
                    src.rails.append(_Rail(label, hw / f"in{k}_input", curr, None))
            for iio in sorted(dev.glob("iio:device*")):
                for rn in sorted(iio.glob("rail_name_*")):
                    k = rn.name.rsplit("_", 1)[1]
                    label = _safe_text(rn) or ""
                    if not label or skip_label(label):
                        continue
                    src.rails.append(
                        _Rail(
                            label,
                            iio / f"in_voltage{k}_input",
                            iio / f"in_current{k}_input",
                            iio / f"in_power{k}_input",
                        )
                    )
        for dev in ctx.root.glob("/sys/class/devfreq", "*"):
            if (_safe_text(dev / "device" / "of_node" / "name") or "") in JETSON_GPUS:
                src.gpu_dir = dev
                break
        if not src.rails and src.gpu_dir is None:
            model = (_safe_text(ctx.root.path("/proc/device-tree/model")) or "").strip("\x00 ")
            if "jetson" in model.lower():
                # AGX Thor measures its input with an INA238 on the carrier (jetson_stats#900):
                # that chip is read by the hwmon source, as board input.
                return [
                    cls(
                        name="jetson",
                        reason=f"{model}: no INA3221 rails; a carrier-board power monitor "
                        "(INA238/INA2xx), if present, is read by hwmon as board input",
                    )
                ]
            return [cls(name="jetson", reason="no INA3221 power monitor (not a Jetson)")]
        src.available = True
        chans: list[Channel] = []
        labels = {r.label for r in src.rails}
        module_input = next((b for b in sorted(BOARD_INPUT) if b in labels), None)
        for r in src.rails:
            board = r.label in BOARD_INPUT
            scope = "board-input" if board else "soc-rail"
            meta: dict[str, object] = {"rail": r.label, "domain": f"jetson:{r.label}"}
            if board:
                meta["note"] = "module input; excludes the carrier board"
            elif module_input is not None:
                meta["within"] = f"jetson.{module_input}.power"
            elif SUB_RAILS.get(r.label) in labels:
                meta["within"] = f"jetson.{SUB_RAILS[r.label]}.power"
            else:
                meta["module_rail"] = True  # no VDD_IN: the module's power is the sum of these
            method = "instant" if r.power_mw else "derived"
            chans.append(
                Channel(
                    id=f"jetson.{r.label}.power",
                    label=f"{r.label} power",
                    source=src.name,
                    kind="power",
                    unit="W",
                    scope=scope,
                    method=method,
                    update_period_s=RAIL_PERIOD_S,
                    meta=meta,
                )
            )
            chans.append(
                Channel(
                    id=f"jetson.{r.label}.voltage",
                    label=f"{r.label} voltage",
                    source=src.name,
                    kind="voltage",
                    unit="V",
                    scope=scope,
                    method="instant",
                    update_period_s=RAIL_PERIOD_S,
                    meta=dict(meta),
                )
            )
            chans.append(
                Channel(
                    id=f"jetson.{r.label}.current",
                    label=f"{r.label} current",
                    source=src.name,
                    kind="current",
                    unit="A",
                    scope=scope,
                    method="instant",
                    update_period_s=RAIL_PERIOD_S,
                    meta=dict(meta),
                )
            )
        if chans:
            src.groups.append(ReadGroup(chans, src._read_rails, RAIL_PERIOD_S, cost_s=3e-5))
        if src.gpu_dir is not None:
            mx = read_int(src.gpu_dir / "max_freq")
            gmeta: dict[str, object] = {"max_hz": float(mx)} if mx else {}
            src.groups.append(
                ReadGroup(
                    [
                        Channel(
                            id="jetson.gpu.util",
                            label="iGPU load",
                            source=src.name,
                            kind="utilization",
                            unit="ratio",
                            scope="gpu",
                            method="instant",
                            update_period_s=GPU_PERIOD_S,
                            meta={},
                        ),
                        Channel(
                            id="jetson.gpu.clock",
                            label="iGPU clock",
                            source=src.name,
                            kind="frequency",
                            unit="Hz",
                            scope="gpu",
                            method="instant",
                            update_period_s=GPU_PERIOD_S,
                            meta=gmeta,
                        ),
                    ],
                    src._read_gpu,
                    GPU_PERIOD_S,
                )
            )
        src.reason = "INA3221 " + ", ".join(r.label for r in src.rails)
        return [src]

    def _read_rails(self, t_ns: int) -> list[Value]:
        out: list[Value] = []
        for r in self.rails:
            mv = read_int(r.volt) if r.volt else None
            ma = read_int(r.curr) if r.curr else None
            if r.power_mw is not None:
                mw = read_int(r.power_mw)
                power = None if mw is None else mw / 1e3
            else:
                power = None if mv is None or ma is None else mv * ma / 1e6
            out += [power, None if mv is None else mv / 1e3, None if ma is None else ma / 1e3]
        return out

    def _read_gpu(self, t_ns: int) -> list[Value]:
        assert self.gpu_dir is not None
        load = read_int(self.gpu_dir / "device" / "load")  # per mille
        freq = read_int(self.gpu_dir / "cur_freq")  # Hz
        return [None if load is None else load / 1000, None if freq is None else float(freq)]


def _safe_text(p: Path) -> str | None:
    try:
        return read_text(p)
    except PermissionError:
        return None
