"""NVIDIA GPUs through NVML (nvidia-ml-py, ``import pynvml``).

Everything NVML is reached through `NvmlAdapter`, so tests hand in a fake
module (``ANUBIS_NVML_MODULE`` names a module or a ``.py`` file). Facts used
here were measured on an H200 (reference/gpu-recipe.md, sensors-spec.md §1):
power, instant power and the energy counter change every ~100 ms; the energy
counter call costs ~4 ms, so it is read once a second, at window boundaries.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from anubis_tui.errors import AnubisError
from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    PLAUSIBLE,
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
)

FI_POWER_AVERAGE = 185
FI_POWER_INSTANT = 186
SCOPE_GPU = 0
SCOPE_MEMORY = 2

POWER_PERIOD_S = 0.1  # measured on H200: every ~100 ms
ENERGY_PERIOD_S = 1.0  # the call costs ~4 ms: read at window boundaries only
STATE_PERIOD_S = 0.25  # clocks, temperature, reasons, utilisation

# NVML clocks-event reason bits → canonical throttle names (sensors-spec §1.6).
NVML_FLAGS: dict[int, str] = {
    0x001: "idle",
    0x002: "app_clocks",
    0x004: "power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "thermal",
    0x040: "thermal",
    0x080: "power_brake",
    0x100: "freq_capped",  # display clock setting
    0x200: "throttled",  # board limit (pynvml only)
    0x400: "throttled",  # reliability (pynvml only)
}


class NvmlUnavailable(AnubisError):
    """NVML cannot be used here; the message is the reason shown to the user."""


def load_nvml_module(name: str | None = None) -> ModuleType:
    """pynvml, or the module named by ``ANUBIS_NVML_MODULE`` (dotted name or .py path)."""
    name = name or os.environ.get("ANUBIS_NVML_MODULE") or "pynvml"
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("anubis_fake_nvml", name)
        if spec is None or spec.loader is None:
            raise NvmlUnavailable(f"cannot load NVML module from {name}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise NvmlUnavailable(f"nvidia-ml-py is not installed ({e})") from None


class NvmlAdapter:
    """The one place that calls NVML. Every method returns SI units."""

    def __init__(self, module: ModuleType) -> None:
        self.m = module

    def _is_nvml_error(self, e: BaseException) -> bool:
        return isinstance(e, self.m.NVMLError)

    def init(self) -> int:
        try:
            self.m.nvmlInit()
            return int(self.m.nvmlDeviceGetCount())
        except Exception as e:
            if self._is_nvml_error(e) or isinstance(e, OSError):
                raise NvmlUnavailable(f"NVML did not initialise: {e}") from None
            raise

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.m.nvmlShutdown()

    def handle(self, index: int) -> Any:
        return self.m.nvmlDeviceGetHandleByIndex(index)

    def name(self, h: Any) -> str:
        n = self.m.nvmlDeviceGetName(h)
        return n.decode() if isinstance(n, bytes) else str(n)

    def driver(self) -> str:
        try:
            d = self.m.nvmlSystemGetDriverVersion()
            return d.decode() if isinstance(d, bytes) else str(d)
        except Exception:
            return "unknown"

    def power_avg_w(self, h: Any) -> float:
        return float(self.m.nvmlDeviceGetPowerUsage(h)) / 1000.0

    def fields(self, h: Any, ids: list[tuple[int, int]]) -> list[float | None]:
        """Field values (mW fields → W); None for a field NVML did not return."""
        out: list[float | None] = []
        for fv in self.m.nvmlDeviceGetFieldValues(h, ids):
            if fv.nvmlReturn != 0:
                out.append(None)
                continue
            vt = int(fv.valueType)
            v = fv.value
            raw = {
                0: getattr(v, "dVal", None),
                1: getattr(v, "uiVal", None),
                2: getattr(v, "ulVal", None),
                3: getattr(v, "ullVal", None),
                4: getattr(v, "sllVal", None),
                5: getattr(v, "siVal", None),
                6: getattr(v, "usVal", None),
            }.get(vt, getattr(v, "uiVal", None))
            out.append(None if raw is None else float(raw) / 1000.0)
        return out

    def energy_j(self, h: Any) -> float:
        return float(self.m.nvmlDeviceGetTotalEnergyConsumption(h)) / 1000.0

    def temperature_c(self, h: Any) -> float:
        if hasattr(self.m, "nvmlDeviceGetTemperatureV"):
            try:
                return float(self.m.nvmlDeviceGetTemperatureV(h, self.m.NVML_TEMPERATURE_GPU))
            except Exception as e:
                if not self._is_nvml_error(e) or not self._function_missing(e):
                    raise
        return float(self.m.nvmlDeviceGetTemperature(h, self.m.NVML_TEMPERATURE_GPU))

    def temperature_limits(self, h: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, const in (
            ("critical_c", "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN"),
            ("trip_c", "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN"),
        ):
            try:
                c = float(self.m.nvmlDeviceGetTemperatureThreshold(h, getattr(self.m, const)))
            except Exception as e:
                if not self._is_nvml_error(e):
                    raise
                continue
            if 0 < c <= PLAUSIBLE["temperature"][1]:
                out[key] = c
        return out

    def clock_hz(self, h: Any, which: str) -> float:
        const = self.m.NVML_CLOCK_SM if which == "sm" else self.m.NVML_CLOCK_MEM
        return float(self.m.nvmlDeviceGetClockInfo(h, const)) * 1e6

    def max_clock_hz(self, h: Any, which: str) -> float | None:
        const = self.m.NVML_CLOCK_SM if which == "sm" else self.m.NVML_CLOCK_MEM
        try:
            return float(self.m.nvmlDeviceGetMaxClockInfo(h, const)) * 1e6
        except Exception as e:
            if self._is_nvml_error(e):
                return None
            raise

    def memory_bandwidth(self, h: Any) -> tuple[float, str] | None:
        """Peak memory bandwidth in bytes/s: bus width × max memory clock × 2 (double data rate).

        HBM and GDDR transfer on both clock edges; NVML reports the memory clock itself.
        """
        try:
            bits = int(self.m.nvmlDeviceGetMemoryBusWidth(h))
            clock = float(self.m.nvmlDeviceGetMaxClockInfo(h, self.m.NVML_CLOCK_MEM)) * 1e6
        except Exception as e:
            if self._is_nvml_error(e) or isinstance(e, AttributeError):
                return None
            raise
        if bits <= 0 or clock <= 0:
            return None
        bw = bits / 8 * clock * 2
        return bw, f"NVML: {bits}-bit bus × {clock / 1e6:.0f} MHz × 2"

    def utilization(self, h: Any) -> tuple[float, float]:
        u = self.m.nvmlDeviceGetUtilizationRates(h)
        return float(u.gpu) / 100.0, float(u.memory) / 100.0

    def reasons(self, h: Any) -> int:
        fn = getattr(self.m, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None:
            try:
                return int(fn(h))
            except Exception as e:
                # Drivers older than 535 lack the new symbol.
                if not self._is_nvml_error(e) or not self._function_missing(e):
                    raise
        return int(self.m.nvmlDeviceGetCurrentClocksThrottleReasons(h))

    def power_limit_w(self, h: Any) -> float:
        return float(self.m.nvmlDeviceGetEnforcedPowerLimit(h)) / 1000.0

    def _function_missing(self, e: BaseException) -> bool:
        return getattr(e, "value", None) == getattr(self.m, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)


@dataclass
class _Probe:
    """Which metrics one GPU supports (each probed once at discovery)."""

    power_avg: bool = False
    power_instant: bool = False
    power_memory: bool = False
    energy: bool = False
    temperature: bool = False
    clocks: bool = False
    utilization: bool = False
    reasons: bool = False
    power_limit: bool = False
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    """One NVML channel: what it is, which probe must have passed, and how it is read."""

    suffix: str  # channel id after ``gpu<i>.``
    label: str  # with {i} for the GPU index
    kind: str
    unit: str
    scope: str
    method: str
    group: str  # "fast" (power, 100 ms), "energy" (the counter, 1 s), "state" (250 ms)
    probe: str  # the _Probe flag that says this GPU supports it
    # fast group: an NVML field (id, scope); None: GetPowerUsage
    nvml_field: tuple[int, int] | None = None
    read: tuple[str, int | None] | None = None  # state group: (STATE_READERS key, item or None)
    meta: dict[str, Any] = field(default_factory=dict)
    dynamic_meta: Any = None  # (adapter, handle) -> dict, asked once at discovery


NVML_CHANNELS: tuple[_Row, ...] = (
    _Row("power", "GPU{i} power (1 s avg)", "power", "W", "gpu", "average:1s", "fast",
         "power_avg"),
    _Row("power_instant", "GPU{i} power (instant)", "power", "W", "gpu", "instant", "fast",
         "power_instant", nvml_field=(FI_POWER_INSTANT, SCOPE_GPU),
         meta={"note": "25 ms window taken every 100 ms on A100/H100"}),
    _Row("power_memory", "GPU{i} memory power", "power", "W", "gpu-memory", "average:1s", "fast",
         "power_memory", nvml_field=(FI_POWER_AVERAGE, SCOPE_MEMORY)),
    _Row("energy", "GPU{i} energy", "energy", "J", "gpu", "counter", "energy", "energy"),
    _Row("power_counter", "GPU{i} power (from energy counter)", "power", "W", "gpu", "derived",
         "energy", "energy"),
    _Row("temp", "GPU{i} temperature", "temperature", "°C", "gpu", "instant", "state",
         "temperature", read=("temp", None),
         dynamic_meta=lambda a, h: a.temperature_limits(h)),
    _Row("clock_sm", "GPU{i} SM clock", "frequency", "Hz", "gpu", "instant", "state", "clocks",
         read=("sm", None), dynamic_meta=lambda a, h: _max_hz(a, h, "sm")),
    _Row("clock_mem", "GPU{i} MEM clock", "frequency", "Hz", "gpu", "instant", "state", "clocks",
         read=("mem", None), dynamic_meta=lambda a, h: _max_hz(a, h, "mem")),
    _Row("util", "GPU{i} utilisation", "utilization", "ratio", "gpu", "average:1s", "state",
         "utilization", read=("util", 0)),
    _Row("util_mem", "GPU{i} memory utilisation", "utilization", "ratio", "gpu", "average:1s",
         "state", "utilization", read=("util", 1)),
    _Row("throttle", "GPU{i} clocks-event reasons", "throttle", "flags", "gpu", "instant",
         "state", "reasons", read=("reasons", None), meta={"flags": dict(NVML_FLAGS)}),
    _Row("power_limit", "GPU{i} enforced power limit", "power", "W", "gpu", "instant", "state",
         "power_limit", read=("limit", None), meta={"is_limit": True}),
)  # fmt: skip

GROUP_PERIODS = {"fast": POWER_PERIOD_S, "energy": ENERGY_PERIOD_S, "state": STATE_PERIOD_S}

STATE_READERS: dict[str, Any] = {
    "temp": lambda a, h: a.temperature_c(h),
    "sm": lambda a, h: a.clock_hz(h, "sm"),
    "mem": lambda a, h: a.clock_hz(h, "mem"),
    "util": lambda a, h: a.utilization(h),
    "reasons": lambda a, h: a.reasons(h),
    "limit": lambda a, h: a.power_limit_w(h),
}


def _max_hz(a: NvmlAdapter, h: Any, which: str) -> dict[str, float]:
    mx = a.max_clock_hz(h, which)
    return {"max_hz": mx} if mx else {}


@dataclass
class NvmlSource(Source):
    """One source per GPU."""

    order: ClassVar[int] = 10
    adapter: NvmlAdapter | None = None
    index: int = 0
    handle: Any = None
    _owner: bool = False

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        try:
            module = ctx.config.get("nvml_module")
            if not isinstance(module, ModuleType):
                module = load_nvml_module(module if isinstance(module, str) else None)
            adapter = NvmlAdapter(module)
            count = adapter.init()
        except NvmlUnavailable as e:
            return [cls(name="nvml", available=False, reason=str(e))]
        if count == 0:
            adapter.shutdown()
            return [cls(name="nvml", available=False, reason="NVML found no GPU")]
        out: list[Source] = []
        for i in range(count):
            src = cls(name=f"nvml:{i}", adapter=adapter, index=i, _owner=(i == 0))
            src._setup()
            out.append(src)
        if not any(s.available for s in out):
            adapter.shutdown()
        return out

    def _setup(self) -> None:
        a = self.adapter
        assert a is not None
        i = self.index
        self.handle = h = a.handle(i)
        gpu = a.name(h)
        probe = _Probe()

        def attempt(key: str, fn: Any) -> Any:
            try:
                v = fn()
            except Exception as e:
                if not a._is_nvml_error(e):
                    raise
                probe.errors[key] = str(e)
                return None
            setattr(probe, key, True)
            return v

        attempt("power_avg", lambda: a.power_avg_w(h))
        inst = attempt("power_instant", lambda: a.fields(h, [(FI_POWER_INSTANT, SCOPE_GPU)])[0])
        if inst is None:
            probe.power_instant = False
        mem = attempt("power_memory", lambda: a.fields(h, [(FI_POWER_AVERAGE, SCOPE_MEMORY)])[0])
        if mem is None:
            probe.power_memory = False
        attempt("energy", lambda: a.energy_j(h))
        attempt("temperature", lambda: a.temperature_c(h))
        attempt("clocks", lambda: a.clock_hz(h, "sm"))
        attempt("utilization", lambda: a.utilization(h))
        attempt("reasons", lambda: a.reasons(h))
        limit = attempt("power_limit", lambda: a.power_limit_w(h))

        supported = [
            k
            for k in ("power_avg", "power_instant", "energy", "temperature", "clocks")
            if getattr(probe, k)
        ]
        if not supported:
            # Jetson Orin: NVML initialises, reports a GPU, and supports none of this.
            first = next(iter(probe.errors.values()), "not supported")
            self.available = False
            self.reason = (
                f"{gpu}: NVML initialised but power, energy, temperature and clocks are all "
                f"unsupported ({first}); on Jetson the INA3221 rails measure power instead"
            )
            return
        self.available = True
        self.reason = f"{gpu}, driver {a.driver()}"
        if not (probe.power_avg or probe.power_instant or probe.energy):
            # Older boards and drivers answer NOT_SUPPORTED for power while temperature
            # and clocks work (nvidia-smi shows "N/A"): say so, or the GPU silently
            # drops out of system power and J/token.
            why = probe.errors.get("power_avg") or probe.errors.get("energy") or "not supported"
            self.reason += f"; power not measured: NVML {why} for power and energy"
            self.missing.append(f"GPU{i} ({gpu}) power not measured: NVML {why}")
        pfx = f"gpu{i}"
        note = {"device": gpu}
        rows = [r for r in NVML_CHANNELS if getattr(probe, r.probe)]
        if not probe.power_limit or limit is None:
            rows = [r for r in rows if r.suffix != "power_limit"]

        def channel(r: _Row) -> Channel:
            meta: dict[str, Any] = {**note, **r.meta}
            if r.dynamic_meta is not None:
                meta.update(r.dynamic_meta(a, h))
            if r.suffix == "energy":
                meta["read_every_s"] = ENERGY_PERIOD_S
            if r.suffix == "power_counter":
                meta["energy_channel"] = f"{pfx}.energy"
            return Channel(
                id=f"{pfx}.{r.suffix}",
                label=r.label.format(i=i),
                source=self.name,
                kind=r.kind,
                unit=r.unit,
                scope=r.scope,
                method=r.method,
                update_period_s=GROUP_PERIODS[r.group],
                meta=meta,
            )

        fast = [r for r in rows if r.group == "fast"]
        if fast:
            field_ids = [r.nvml_field for r in fast if r.nvml_field is not None]

            def read_fast(t_ns: int) -> list[Value]:
                fv = iter(a.fields(h, field_ids) if field_ids else [])
                return [a.power_avg_w(h) if r.nvml_field is None else next(fv) for r in fast]

            self.groups.append(
                ReadGroup([channel(r) for r in fast], read_fast, POWER_PERIOD_S, cost_s=8e-6)
            )

        energy = [r for r in rows if r.group == "energy"]
        if energy:
            # A 64-bit mJ counter since the driver loaded: a drop is a reset (reload).
            counter = EnergyCounter(f"{pfx}.energy", None)
            notes: list[tuple[str, dict[str, Any]]] = []

            def read_energy(t_ns: int) -> list[Value]:
                dt = (t_ns - counter.last_t) / 1e9
                e, p = counter.update(a.energy_j(h), t_ns, notes)
                # A window under half the update period may not have moved.
                return [e, p if dt >= POWER_PERIOD_S / 2 else None]

            self.groups.append(
                ReadGroup(
                    [channel(r) for r in energy],
                    read_energy,
                    ENERGY_PERIOD_S,
                    cost_s=4e-3,
                    notes=notes,
                )
            )

        state = [r for r in rows if r.group == "state"]
        if state:

            def read_state(t_ns: int) -> list[Value]:
                done: dict[str, Any] = {}  # one NVML call per reader, per read
                out: list[Value] = []
                for r in state:
                    assert r.read is not None
                    key, pick = r.read
                    if key not in done:
                        done[key] = STATE_READERS[key](a, h)
                    v = done[key]
                    out.append(v[pick] if pick is not None else v)
                return out

            self.groups.append(
                ReadGroup([channel(r) for r in state], read_state, STATE_PERIOD_S, cost_s=2e-5)
            )

    def close(self) -> None:
        if self._owner and self.adapter is not None:
            self.adapter.shutdown()


def gpu_memory_bandwidth(index: int = 0) -> tuple[float, str, str] | None:
    """(bytes/s, how it was found, GPU name) of GPU `index` from NVML; None without NVML."""
    try:
        a = NvmlAdapter(load_nvml_module())
        a.init()
    except Exception:  # no NVML here: nothing to say about a GPU
        return None
    try:
        h = a.handle(index)
        bw = a.memory_bandwidth(h)
        return None if bw is None else (bw[0], bw[1], a.name(h))
    except Exception:
        return None
    finally:
        a.shutdown()
