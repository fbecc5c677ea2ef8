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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any, ClassVar, TypeVar

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


T = TypeVar("T")
D = TypeVar("D")


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
    """The one place that calls NVML (module `m`: pynvml or a fake). Every method returns
    SI units (W, J, °C, Hz, ratios).

    Errors: `init` turns an NVML error into `NvmlUnavailable`. `query` is the
    one wrapper that turns an NVML error (NOT_SUPPORTED, NO_PERMISSION,
    GPU_IS_LOST, …) into "not available" (its `default`); the methods that
    use it say so. The reading methods let an NVMLError through: discovery
    probes each reading once (`attempt`), and the sampler counts a read that
    raises and records no value for it. Anything that is not an NVML error
    (a bug, a broken fake) always propagates.
    """

    def __init__(self, module: ModuleType) -> None:
        self.m = module

    def _is_nvml_error(self, e: BaseException) -> bool:
        return isinstance(e, self.m.NVMLError)

    def _function_missing(self, e: BaseException) -> bool:
        return getattr(e, "value", None) == getattr(self.m, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)

    def attempt(self, fn: Callable[[], T]) -> tuple[T | None, str | None]:
        """(fn(), None), or (None, the NVML error's text) when NVML answers an error."""
        try:
            return fn(), None
        except Exception as e:
            if not self._is_nvml_error(e):
                raise
            return None, str(e)

    def query(self, fn: Callable[[], T], default: D) -> T | D:
        """fn(), or `default` ("not available") when NVML answers an error."""
        value, err = self.attempt(fn)
        return default if err is not None or value is None else value

    def _newer_or_older(self, new: str, old: str, *args: Any) -> Any:
        """``m.<new>(*args)`` where this driver and binding have it, else ``m.<old>(*args)``
        (a binding without `new`, or NVML_ERROR_FUNCTION_NOT_FOUND from an older driver)."""
        fn = getattr(self.m, new, None)
        if fn is not None:
            try:
                return fn(*args)
            except Exception as e:
                if not self._is_nvml_error(e) or not self._function_missing(e):
                    raise
        return getattr(self.m, old)(*args)

    def init(self) -> int:
        """``nvmlInit`` then ``nvmlDeviceGetCount``: the number of GPUs.

        Raises NvmlUnavailable (the reason, one line) on an NVML error or an
        OSError (no libnvidia-ml.so).
        """
        try:
            self.m.nvmlInit()
            return int(self.m.nvmlDeviceGetCount())
        except Exception as e:
            if self._is_nvml_error(e) or isinstance(e, OSError):
                raise NvmlUnavailable(f"NVML did not initialise: {e}") from None
            raise

    def shutdown(self) -> None:
        """``nvmlShutdown``; any error is ignored (NVML may already be gone)."""
        with contextlib.suppress(Exception):
            self.m.nvmlShutdown()

    def handle(self, index: int) -> Any:
        """``nvmlDeviceGetHandleByIndex``: the opaque handle of GPU `index`. NVMLError
        propagates (an index past the count, a GPU that fell off the bus)."""
        return self.m.nvmlDeviceGetHandleByIndex(index)

    def name(self, h: Any) -> str:
        """``nvmlDeviceGetName``: the product name ("NVIDIA H200"). NVMLError propagates."""
        n = self.m.nvmlDeviceGetName(h)
        return n.decode() if isinstance(n, bytes) else str(n)

    def driver(self) -> str:
        """``nvmlSystemGetDriverVersion`` ("550.54.15"); "unknown" on any error."""
        try:
            d = self.m.nvmlSystemGetDriverVersion()
            return d.decode() if isinstance(d, bytes) else str(d)
        except Exception:
            return "unknown"

    def power_avg_w(self, h: Any) -> float:
        """``nvmlDeviceGetPowerUsage`` (mW) in W: on A100/H100 and later a 1 s average
        (sensors-spec §1). NVMLError propagates (NOT_SUPPORTED on older boards)."""
        return float(self.m.nvmlDeviceGetPowerUsage(h)) / 1000.0

    def fields(self, h: Any, ids: list[tuple[int, int]]) -> list[float | None]:
        """``nvmlDeviceGetFieldValues`` for (field id, scope) pairs, each value / 1000 (the
        power fields are mW → W); None for a field whose ``nvmlReturn`` is not SUCCESS.

        The value is read from the union member its ``valueType`` names
        (nvmlValueType_t: 0 double … 6 unsigned short). NVMLError propagates.
        """
        out: list[float | None] = []
        for fv in self.m.nvmlDeviceGetFieldValues(h, ids):
            if fv.nvmlReturn != 0:
                out.append(None)
                continue
            member = _VALUE_MEMBERS.get(int(fv.valueType), "uiVal")
            raw = getattr(fv.value, member, None)
            out.append(None if raw is None else float(raw) / 1000.0)
        return out

    def energy_j(self, h: Any) -> float:
        """``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded) in J.
        Volta and later; NVMLError propagates. Costs ~4 ms a call on H200."""
        return float(self.m.nvmlDeviceGetTotalEnergyConsumption(h)) / 1000.0

    def temperature_c(self, h: Any) -> float:
        """The GPU die temperature in °C: ``nvmlDeviceGetTemperatureV`` where the driver has
        it, else ``nvmlDeviceGetTemperature`` (NVML_TEMPERATURE_GPU). NVMLError propagates."""
        return float(
            self._newer_or_older(
                "nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature", h,
                self.m.NVML_TEMPERATURE_GPU,
            )
        )  # fmt: skip

    def temperature_limits(self, h: Any) -> dict[str, float]:
        """``nvmlDeviceGetTemperatureThreshold`` as channel meta: ``critical_c`` (SHUTDOWN) and
        ``trip_c`` (SLOWDOWN), °C; a threshold NVML does not give (`query`) or outside
        0 < c ≤ the plausible maximum is left out."""
        out: dict[str, float] = {}
        for key, const in (
            ("critical_c", "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN"),
            ("trip_c", "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN"),
        ):
            threshold = getattr(self.m, const)
            c = self.query(partial(self._threshold_c, h, threshold), None)
            if c is not None and 0 < c <= PLAUSIBLE["temperature"][1]:
                out[key] = c
        return out

    def _threshold_c(self, h: Any, threshold: Any) -> float:
        return float(self.m.nvmlDeviceGetTemperatureThreshold(h, threshold))

    def _clock_const(self, which: str) -> Any:
        return self.m.NVML_CLOCK_SM if which == "sm" else self.m.NVML_CLOCK_MEM

    def clock_hz(self, h: Any, which: str) -> float:
        """``nvmlDeviceGetClockInfo`` (MHz) in Hz; `which` "sm" or "mem". NVMLError propagates."""
        return float(self.m.nvmlDeviceGetClockInfo(h, self._clock_const(which))) * 1e6

    def max_clock_hz(self, h: Any, which: str) -> float | None:
        """``nvmlDeviceGetMaxClockInfo`` (MHz) in Hz; None when not available (`query`)."""
        const = self._clock_const(which)
        return self.query(lambda: float(self.m.nvmlDeviceGetMaxClockInfo(h, const)) * 1e6, None)

    def memory_bandwidth(self, h: Any) -> tuple[float, str] | None:
        """(peak memory bandwidth in bytes/s, how it was found); None when not available.

        Formula: ``nvmlDeviceGetMemoryBusWidth`` (bits) / 8 × ``nvmlDeviceGetMaxClockInfo``
        (NVML_CLOCK_MEM, MHz → Hz) × 2: HBM and GDDR transfer on both clock
        edges and NVML reports the memory clock itself. An NVML error (`query`),
        a binding without either call, or a zero answer is None.
        """
        try:
            found = self.query(
                lambda: (
                    int(self.m.nvmlDeviceGetMemoryBusWidth(h)),
                    float(self.m.nvmlDeviceGetMaxClockInfo(h, self.m.NVML_CLOCK_MEM)) * 1e6,
                ),
                None,
            )
        except AttributeError:  # a binding older than the call
            return None
        if found is None:
            return None
        bits, clock = found
        if bits <= 0 or clock <= 0:
            return None
        bw = bits / 8 * clock * 2
        return bw, f"NVML: {bits}-bit bus × {clock / 1e6:.0f} MHz × 2"

    def utilization(self, h: Any) -> tuple[float, float]:
        """``nvmlDeviceGetUtilizationRates``: (GPU busy, memory-controller busy) ratios 0..1
        over the driver's sample period (about 1 s). NVMLError propagates."""
        u = self.m.nvmlDeviceGetUtilizationRates(h)
        return float(u.gpu) / 100.0, float(u.memory) / 100.0

    def reasons(self, h: Any) -> int:
        """The clocks-event reason bits (`NVML_FLAGS`): ``nvmlDeviceGetCurrentClocksEventReasons``,
        else ``…ThrottleReasons`` (drivers older than 535 lack the new symbol). NVMLError
        propagates."""
        return int(
            self._newer_or_older(
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
                h,
            )
        )

    def power_limit_w(self, h: Any) -> float:
        """``nvmlDeviceGetEnforcedPowerLimit`` (mW) in W. NVMLError propagates."""
        return float(self.m.nvmlDeviceGetEnforcedPowerLimit(h)) / 1000.0


# nvmlValueType_t → the nvmlValue_t union member that holds it (nvml.h).
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                  6: "usVal"}  # fmt: skip


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
    """One NVIDIA GPU through NVML: power (average, instant, memory rail), the energy counter
    and its power, temperature, SM and memory clocks, utilisation, clocks-event reasons and
    the enforced power limit; each only where a probe at discovery found it supported.

    Groups (`NVML_CHANNELS`): "fast" power every 100 ms, the energy counter
    once a second (~4 ms a call), the rest every 250 ms. Unavailable, with
    the reason, when power, energy, temperature and clocks are all
    unsupported (Jetson's NVML); a GPU without power is named in `missing`.
    """

    order: ClassVar[int] = 10
    adapter: NvmlAdapter | None = None
    index: int = 0
    handle: Any = None
    _owner: bool = False

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source per GPU ``nvmlDeviceGetCount`` reports; one unavailable source with
        the reason when NVML cannot be loaded or initialised, or finds no GPU. NVML is shut
        down again when no GPU is usable."""
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
        probe, limit = _probe(a, h)
        if not any(getattr(probe, k) for k in _CORE):
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
        self._power_missing(probe, gpu)
        rows = [r for r in NVML_CHANNELS if getattr(probe, r.probe)]
        if not probe.power_limit or limit is None:
            rows = [r for r in rows if r.suffix != "power_limit"]
        for key, build in (("fast", self._fast_group), ("energy", self._energy_group),
                           ("state", self._state_group)):  # fmt: skip
            group = build([r for r in rows if r.group == key], gpu)
            if group is not None:
                self.groups.append(group)

    def _power_missing(self, probe: _Probe, gpu: str) -> None:
        """Older boards and drivers answer NOT_SUPPORTED for power while temperature and
        clocks work (nvidia-smi shows "N/A"): say so in the reason and `missing`, or the GPU
        silently drops out of system power and J/token."""
        if probe.power_avg or probe.power_instant or probe.energy:
            return
        why = probe.errors.get("power_avg") or probe.errors.get("energy") or "not supported"
        self.reason += f"; power not measured: NVML {why} for power and energy"
        self.missing.append(f"GPU{self.index} ({gpu}) power not measured: NVML {why}")

    def _channel(self, r: _Row, gpu: str) -> Channel:
        """The channel of row `r` for this GPU (``gpu<i>.<suffix>``)."""
        a = self.adapter
        assert a is not None
        pfx = f"gpu{self.index}"
        meta: dict[str, Any] = {"device": gpu, **r.meta}
        if r.dynamic_meta is not None:
            meta.update(r.dynamic_meta(a, self.handle))
        if r.suffix == "energy":
            meta["read_every_s"] = ENERGY_PERIOD_S
        if r.suffix == "power_counter":
            meta["energy_channel"] = f"{pfx}.energy"
        return Channel(
            id=f"{pfx}.{r.suffix}",
            label=r.label.format(i=self.index),
            source=self.name,
            kind=r.kind,
            unit=r.unit,
            scope=r.scope,
            method=r.method,
            update_period_s=GROUP_PERIODS[r.group],
            meta=meta,
        )

    def _fast_group(self, fast: list[_Row], gpu: str) -> ReadGroup | None:
        """Power every 100 ms: GetPowerUsage and the NVML power fields in one call."""
        if not fast:
            return None
        a, h = self.adapter, self.handle
        assert a is not None
        field_ids = [r.nvml_field for r in fast if r.nvml_field is not None]

        def read_fast(t_ns: int) -> list[Value]:
            fv = iter(a.fields(h, field_ids) if field_ids else [])
            return [a.power_avg_w(h) if r.nvml_field is None else next(fv) for r in fast]

        chans = [self._channel(r, gpu) for r in fast]
        return ReadGroup(chans, read_fast, POWER_PERIOD_S, cost_s=8e-6)

    def _energy_group(self, energy: list[_Row], gpu: str) -> ReadGroup | None:
        """The energy counter (J) and its power (W) once a second."""
        if not energy:
            return None
        a, h = self.adapter, self.handle
        assert a is not None
        # A 64-bit mJ counter since the driver loaded: a drop is a reset (reload).
        counter = EnergyCounter(f"gpu{self.index}.energy", None)
        notes: list[tuple[str, dict[str, Any]]] = []

        def read_energy(t_ns: int) -> list[Value]:
            dt = (t_ns - counter.last_t) / 1e9
            e, p = counter.update(a.energy_j(h), t_ns, notes)
            # A window under half the update period may not have moved.
            return [e, p if dt >= POWER_PERIOD_S / 2 else None]

        chans = [self._channel(r, gpu) for r in energy]
        return ReadGroup(chans, read_energy, ENERGY_PERIOD_S, cost_s=4e-3, notes=notes)

    def _state_group(self, state: list[_Row], gpu: str) -> ReadGroup | None:
        """Temperature, clocks, utilisation, reasons and limit every 250 ms; one NVML call per
        `STATE_READERS` key and read."""
        if not state:
            return None
        a, h = self.adapter, self.handle
        assert a is not None

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

        chans = [self._channel(r, gpu) for r in state]
        return ReadGroup(chans, read_state, STATE_PERIOD_S, cost_s=2e-5)

    def close(self) -> None:
        """``nvmlShutdown``, by the first GPU's source only (they share one NVML session)."""
        if self._owner and self.adapter is not None:
            self.adapter.shutdown()


# The probes of which at least one must pass for the GPU to be worth reading.
_CORE = ("power_avg", "power_instant", "energy", "temperature", "clocks")


def _field(a: NvmlAdapter, h: Any, fid: tuple[int, int]) -> float | None:
    return a.fields(h, [fid])[0]


def _probe(a: NvmlAdapter, h: Any) -> tuple[_Probe, float | None]:
    """Each reading tried once (`NvmlAdapter.attempt`): which this GPU supports, the NVML
    error text of each that failed, and the enforced power limit (W) or None."""
    probe = _Probe()

    def attempt(key: str, fn: Callable[[], Any]) -> Any:
        v, err = a.attempt(fn)
        if err is not None:
            probe.errors[key] = err
            return None
        setattr(probe, key, True)
        return v

    attempt("power_avg", lambda: a.power_avg_w(h))
    for key, fid in (("power_instant", (FI_POWER_INSTANT, SCOPE_GPU)),
                     ("power_memory", (FI_POWER_AVERAGE, SCOPE_MEMORY))):  # fmt: skip
        if attempt(key, partial(_field, a, h, fid)) is None:
            setattr(probe, key, False)  # NVML answered, but not for this field
    attempt("energy", lambda: a.energy_j(h))
    attempt("temperature", lambda: a.temperature_c(h))
    attempt("clocks", lambda: a.clock_hz(h, "sm"))
    attempt("utilization", lambda: a.utilization(h))
    attempt("reasons", lambda: a.reasons(h))
    limit = attempt("power_limit", lambda: a.power_limit_w(h))
    return probe, limit


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
