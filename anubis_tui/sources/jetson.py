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
    """Whether an INA3221 channel label is not a rail: ``NC`` (not connected) or the
    "sum of shunt voltages" channel.
    """
    return label.upper() == "NC" or label.upper().startswith("NC ") or "sum of" in label.lower()


@dataclass
class _Rail:
    """One INA3221 channel: its label and the files of its voltage (mV), current (mA) and,
    on JetPack 4's iio driver, power (mW)."""

    label: str
    volt: Path | None
    curr: Path | None
    power_mw: Path | None  # JetPack 4


@dataclass
class JetsonRailSource(Source):
    """A Jetson module's INA3221 rails (power W, voltage V, current A per rail) and its
    integrated GPU's load (ratio) and clock (Hz) from devfreq.

    Power is V × I (mV × mA / 1e6) on JetPack 5/6, ``in_power<k>_input`` (mW) on
    JetPack 4. ``VDD_IN`` is board input; the other rails are inside it, or,
    with no ``VDD_IN`` (AGX Orin devkits), the module's power is their sum
    (meta ``module_rail``). Unavailable, with the reason, off a Jetson.
    """

    order: ClassVar[int] = 25
    rails: list[_Rail] = field(default_factory=list)
    gpu_dir: Path | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """The INA3221 devices under ``/sys/bus/i2c`` and the GPU under ``/sys/class/devfreq``
        (its ``device/of_node/name`` one of `JETSON_GPUS`): one source, or one unavailable
        source whose reason says what is missing."""
        src = cls(name="jetson")
        for dev in unique_dirs(_ina3221_devices(ctx)):
            src.rails += _hwmon_rails(dev) + _iio_rails(dev)
        src.gpu_dir = next(
            (
                d
                for d in ctx.root.glob("/sys/class/devfreq", "*")
                if (_safe_text(d / "device" / "of_node" / "name") or "") in JETSON_GPUS
            ),
            None,
        )
        if not src.rails and src.gpu_dir is None:
            return [cls(name="jetson", reason=_absent_reason(ctx))]
        src.available = True
        chans = [c for r in src.rails for c in src._rail_channels(r)]
        if chans:
            src.groups.append(ReadGroup(chans, src._read_rails, RAIL_PERIOD_S, cost_s=3e-5))
        if src.gpu_dir is not None:
            src.groups.append(src._gpu_group(src.gpu_dir))
        src.reason = "INA3221 " + ", ".join(r.label for r in src.rails)
        return [src]

    def _rail_meta(self, r: _Rail) -> dict[str, object]:
        """A rail's place in the meter tree: board input, ``within`` another rail, or a
        ``module_rail`` whose sum is the module's power."""
        labels = {x.label for x in self.rails}
        module_input = next((b for b in sorted(BOARD_INPUT) if b in labels), None)
        meta: dict[str, object] = {"rail": r.label, "domain": f"jetson:{r.label}"}
        if r.label in BOARD_INPUT:
            meta["note"] = "module input; excludes the carrier board"
        elif module_input is not None:
            meta["within"] = f"jetson.{module_input}.power"
        elif SUB_RAILS.get(r.label) in labels:
            meta["within"] = f"jetson.{SUB_RAILS[r.label]}.power"
        else:
            meta["module_rail"] = True  # no VDD_IN: the module's power is the sum of these
        return meta

    def _rail_channels(self, r: _Rail) -> list[Channel]:
        """A rail's power, voltage and current channels, in the order `_read_rails` fills."""
        scope = "board-input" if r.label in BOARD_INPUT else "soc-rail"
        meta = self._rail_meta(r)
        return [
            Channel(
                id=f"jetson.{r.label}.{what}",
                label=f"{r.label} {what}",
                source=self.name,
                kind=what,
                unit=unit,
                scope=scope,
                method=method,
                update_period_s=RAIL_PERIOD_S,
                meta=meta if what == "power" else dict(meta),
            )
            for what, unit, method in (
                ("power", "W", "instant" if r.power_mw else "derived"),
                ("voltage", "V", "instant"),
                ("current", "A", "instant"),
            )
        ]

    def _gpu_group(self, gpu_dir: Path) -> ReadGroup:
        """The iGPU's load (``device/load``, per mille → ratio) and clock (``cur_freq``, Hz)."""
        mx = read_int(gpu_dir / "max_freq")
        gmeta: dict[str, object] = {"max_hz": float(mx)} if mx else {}
        chans = [
            Channel(
                id=f"jetson.gpu.{suffix}",
                label=label,
                source=self.name,
                kind=kind,
                unit=unit,
                scope="gpu",
                method="instant",
                update_period_s=GPU_PERIOD_S,
                meta=meta,
            )
            for suffix, label, kind, unit, meta in (
                ("util", "iGPU load", "utilization", "ratio", {}),
                ("clock", "iGPU clock", "frequency", "Hz", gmeta),
            )
        ]
        return ReadGroup(chans, self._read_gpu, GPU_PERIOD_S)

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


def _ina3221_devices(ctx: DiscoveryContext) -> list[Path]:
    """I2C devices bound to ``ina3221``/``ina3221x``, or whose ``name`` says ina3221."""
    devs: list[Path] = []
    for drv in ("ina3221", "ina3221x"):
        devs += ctx.root.glob(f"/sys/bus/i2c/drivers/{drv}", "*-*")
    for d in ctx.root.glob("/sys/bus/i2c/devices", "*"):
        if "ina3221" in (_safe_text(d / "name") or ""):
            devs.append(d)
    return devs


def _hwmon_rails(dev: Path) -> list[_Rail]:
    """JetPack 5/6: ``hwmon*/in<k>_label`` with ``in<k>_input`` (mV), ``curr<k>_input`` (mA);
    a label without a current file is a shunt-voltage channel, not a rail."""
    out: list[_Rail] = []
    for hw in sorted(dev.glob("hwmon/hwmon*")):
        for lab in sorted(hw.glob("in*_label"), key=lambda p: p.name):
            m = re.match(r"in(\d+)_label", lab.name)
            label = _safe_text(lab) or ""
            if not m or not label or skip_label(label):
                continue
            k = m.group(1)
            curr = hw / f"curr{k}_input"
            if curr.exists():
                out.append(_Rail(label, hw / f"in{k}_input", curr, None))
    return out


def _iio_rails(dev: Path) -> list[_Rail]:
    """JetPack 4: ``iio:device*/rail_name_<k>`` with ``in_{voltage,current,power}<k>_input``."""
    out: list[_Rail] = []
    for iio in sorted(dev.glob("iio:device*")):
        for rn in sorted(iio.glob("rail_name_*")):
            k = rn.name.rsplit("_", 1)[1]
            label = _safe_text(rn) or ""
            if label and not skip_label(label):
                volt, curr = iio / f"in_voltage{k}_input", iio / f"in_current{k}_input"
                out.append(_Rail(label, volt, curr, iio / f"in_power{k}_input"))
    return out


def _absent_reason(ctx: DiscoveryContext) -> str:
    """Why there is nothing to read: a Jetson without INA3221 (AGX Thor), or not a Jetson."""
    model = (_safe_text(ctx.root.path("/proc/device-tree/model")) or "").strip("\x00 ")
    if "jetson" in model.lower():
        # AGX Thor measures its input with an INA238 on the carrier (jetson_stats#900):
        # that chip is read by the hwmon source, as board input.
        return (
            f"{model}: no INA3221 rails; a carrier-board power monitor "
            "(INA238/INA2xx), if present, is read by hwmon as board input"
        )
    return "no INA3221 power monitor (not a Jetson)"
