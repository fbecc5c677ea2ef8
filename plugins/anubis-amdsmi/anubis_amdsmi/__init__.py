"""AMD GPUs through AMD SMI (``import amdsmi``, ROCm), as a plugin source.

The sysfs amdgpu source (``anubis_tui.sources.amdgpu``) is the default: it
needs nothing installed. Where ROCm's amdsmi is installed this source reads
the same GPUs through it: socket power, the energy counter, edge/hotspot/VRAM
temperatures, the graphics clock and GFX activity. Its power channels carry
the same ``domain`` as the sysfs source's (``gpu:<PCI address>``, or
``apu:<PCI address>`` for an APU the sysfs source found), so system power
counts each GPU once whichever meter it takes.

Facts used (AMD SMI library reference, amdsmi.h): ``amdsmi_get_power_info``
gives ``socket_power`` (ROCm 7), ``current_socket_power`` (MI300+) or
``average_socket_power`` (Navi, MI200 and earlier) in W, unsupported members
set to UINT32_MAX (the Python binding turns some into "N/A");
``amdsmi_get_energy_count`` gives ``energy_accumulator`` (``power`` in
ROCm 5/6) in units of ``counter_resolution`` µJ; ``amdsmi_get_temp_metric``
gives °C; ``amdsmi_get_clock_info`` gives ``clk`` in MHz;
``amdsmi_get_gpu_activity`` gives ``gfx_activity`` in %.

amdsmi missing, failing to initialise, or finding no GPU is the source's
reason, never an import error. ``ANUBIS_AMDSMI_MODULE`` (a module name or a
``.py`` file) stands in a fake for tests, as ``ANUBIS_NVML_MODULE`` does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, EnergyCounter, ReadGroup, Source

PERIOD_S = 0.25  # the SMU metrics table behind every amdsmi reading; amdsmi caches it too
UNSET = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}


class AmdSmiUnavailable(Exception):
    """amdsmi cannot be used here; the message is the reason shown to the user."""


def load_module() -> ModuleType:
    """amdsmi, or the module ``ANUBIS_AMDSMI_MODULE`` names (dotted name or .py path)."""
    name = os.environ.get("ANUBIS_AMDSMI_MODULE") or "amdsmi"
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("anubis_fake_amdsmi", name)
        if spec is None or spec.loader is None:
            raise AmdSmiUnavailable(f"cannot load amdsmi from {name}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or OSError from a missing libamd_smi.so
        raise AmdSmiUnavailable(f"amdsmi is not usable here ({type(e).__name__}: {e})") from None


def number(v: Any) -> float | None:
    """A reading from amdsmi: None for "N/A", UINT*_MAX and anything not a finite number."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if v in UNSET or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


class Adapter:
    """The one place that calls amdsmi: a call amdsmi refuses is no reading, not an error."""

    def __init__(self, m: ModuleType) -> None:
        self.m = m
        self.error: type[BaseException] = getattr(m, "AmdSmiException", Exception)

    def query(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.m, fn)(*args)
        except self.error:
            return None
        except AttributeError:  # a function this amdsmi version lacks
            return None

    def power_w(self, h: Any) -> float | None:
        info = self.query("amdsmi_get_power_info", h)
        if not isinstance(info, dict):
            return None
        for key in ("socket_power", "current_socket_power", "average_socket_power"):
            v = number(info.get(key))
            if v is not None and 0 <= v <= 5000:
                return v
        return None

    def energy_j(self, h: Any) -> float | None:
        e = self.query("amdsmi_get_energy_count", h)
        if not isinstance(e, dict):
            return None
        raw = number(e.get("energy_accumulator", e.get("power")))
        res = number(e.get("counter_resolution"))
        return None if raw is None or res is None else raw * res * 1e-6

    def temperature_c(self, h: Any, which: str) -> float | None:
        types = getattr(self.m, "AmdSmiTemperatureType", None)
        metric = getattr(self.m, "AmdSmiTemperatureMetric", None)
        if types is None or metric is None or not hasattr(types, which):
            return None
        v = number(self.query("amdsmi_get_temp_metric", h, getattr(types, which), metric.CURRENT))
        return v if v is not None and -40 <= v <= 150 else None

    def gfx_clock_hz(self, h: Any) -> float | None:
        clk = getattr(self.m, "AmdSmiClkType", None)
        info = self.query("amdsmi_get_clock_info", h, clk.GFX) if clk is not None else None
        v = number(info.get("clk")) if isinstance(info, dict) else None
        return v * 1e6 if v is not None and 0 < v <= 10000 else None

    def gfx_busy(self, h: Any) -> float | None:
        info = self.query("amdsmi_get_gpu_activity", h)
        v = number(info.get("gfx_activity")) if isinstance(info, dict) else None
        return v / 100 if v is not None and 0 <= v <= 100 else None


@dataclass
class AmdSmiSource(Source):
    """One GPU amdsmi reports."""

    order: ClassVar[int] = 60  # after the sysfs amdgpu source, whose findings it reads
    adapter: Adapter | None = None
    handle: Any = None
    owner: bool = False

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        try:
            m = load_module()
            m.amdsmi_init()
        except AmdSmiUnavailable as e:
            return [cls(name="amdsmi", reason=str(e))]
        except Exception as e:
            return [cls(name="amdsmi", reason=f"amdsmi did not initialise: {e}")]
        a = Adapter(m)
        handles = a.query("amdsmi_get_processor_handles") or []
        if not handles:
            with contextlib.suppress(Exception):
                m.amdsmi_shut_down()
            return [cls(name="amdsmi", reason="amdsmi found no AMD GPU")]
        apus = {
            getattr(getattr(s, "card", None), "slot", None)
            for s in ctx.found
            if s.name.startswith("amdgpu:") and getattr(s, "apu", False)
        }
        out: list[Source] = []
        for i, h in enumerate(handles):
            src = cls(name=f"amdsmi:{i}", adapter=a, handle=h, owner=(i == 0))
            src._setup(i, str(a.query("amdsmi_get_gpu_device_bdf", h) or f"gpu{i}"), apus)
            out.append(src)
        return out

    def _setup(self, i: int, bdf: str, apus: set[str | None]) -> None:
        a, h = self.adapter, self.handle
        assert a is not None
        apu = bdf in apus
        scope = "apu-package" if apu else "gpu"
        domain = f"{'apu' if apu else 'gpu'}:{bdf}"
        pfx = f"amdsmi.{i}"

        def ch(suffix: str, label: str, kind: str, unit: str, method: str, **meta: Any) -> Channel:
            power_like = kind in ("power", "energy")
            return Channel(
                id=f"{pfx}.{suffix}",
                label=f"GPU {bdf} {label} (amdsmi)",
                source=self.name,
                kind=kind,
                unit=unit,
                scope=scope if power_like else "gpu",
                method=method,
                update_period_s=PERIOD_S,
                meta={"pci": bdf, **({"domain": domain} if power_like else {}), **meta},
            )

        rows: list[tuple[Channel, Any]] = []
        if a.power_w(h) is not None:
            rows.append((ch("power", "socket power", "power", "W", "average:driver"), a.power_w))
        counter: EnergyCounter | None = None
        if a.energy_j(h) is not None:
            counter = EnergyCounter(f"{pfx}.energy", None)
        for which, label in (("EDGE", "edge"), ("HOTSPOT", "junction"), ("VRAM", "mem")):
            if a.temperature_c(h, which) is not None:
                t = ch(f"temp_{label}", f"{label} temperature", "temperature", "°C", "instant")
                rows.append((t, lambda hh, w=which: a.temperature_c(hh, w)))
        if a.gfx_clock_hz(h) is not None:
            rows.append((ch("clock_gfx", "graphics clock", "frequency", "Hz", "instant"),
                         a.gfx_clock_hz))  # fmt: skip
        if a.gfx_busy(h) is not None:
            rows.append((ch("busy", "busy", "utilization", "ratio", "instant"), a.gfx_busy))
        chans = [c for c, _ in rows]
        notes: list[tuple[str, dict[str, Any]]] = []
        if counter is not None:
            e = ch("energy", "energy", "energy", "J", "counter")
            p = ch("power_counter", "power (from energy counter)", "power", "W", "derived",
                   energy_channel=e.id)  # fmt: skip
            chans += [e, p]

        def read(t_ns: int) -> list[Value]:
            out: list[Value] = [fn(h) for _, fn in rows]
            if counter is not None:
                raw = a.energy_j(h)
                if raw is None:
                    out += [None, None]
                else:
                    dt = (t_ns - counter.last_t) / 1e9
                    j, w = counter.update(raw, t_ns, notes)
                    out += [j, w if dt >= 0.05 else None]
            return out

        if chans:
            self.groups.append(ReadGroup(chans, read, PERIOD_S, cost_s=5e-4, notes=notes))
        self.available = bool(chans)
        self.reason = f"GPU {bdf} through amdsmi" if chans else f"GPU {bdf}: amdsmi reads nothing"

    def close(self) -> None:
        if self.owner and self.adapter is not None:
            with contextlib.suppress(Exception):
                self.adapter.m.amdsmi_shut_down()
