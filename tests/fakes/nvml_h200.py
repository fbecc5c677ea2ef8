"""A fake ``pynvml`` that replays the NVML trace measured on an H200.

The trace (tests/fixtures/nvml-trace-h200.json, copied from the shared
reference) was sampled every ~20 ms through idle → heavy bf16 matmul (700 W
power cap, reasons 0x4, SM 1230–1530 MHz) → idle → light load → idle. The
fake replays it in real time, looping, so values change every ~100 ms as on
the hardware, and the energy counter keeps growing across loops. Its call
costs are the measured ones: the energy counter sleeps 4 ms.

``ANUBIS_FAKE_NVML`` picks the behaviour at ``nvmlInit``:

- ``trace`` (default): replay the trace.
- ``idle`` / ``capped``: hold one measured row (idle; 700 W-capped at 1470 MHz).
- ``jetson``: initialises with one "Orin (nvgpu)" device; every query raises
  NotSupported (as reported on JetPack 6/7).
- ``old_driver``: like ``capped`` but without nvmlDeviceGetCurrentClocksEventReasons
  (drivers < 535): FunctionNotFound, the old throttle-reasons call works.
- ``absent``: nvmlInit raises LibraryNotFound.

``ANUBIS_FAKE_NVML_COST=0`` removes the 4 ms energy-call sleep.

The power limit can be set as on the hardware, within constraints of
200-700 W (the 700 W maximum was measured; the 200 W minimum is estimated
from NVIDIA's H200 SXM datasheet, not measured). A set needs root as
NVML does: it raises NoPermission unless ``ANUBIS_FAKE_NVML_ROOT=1``. The
limit lives in the file ``ANUBIS_FAKE_NVML_STATE`` names (so another process,
after a crash, sees what the first one set), else in memory.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

TRACE = Path(__file__).resolve().parent.parent / "fixtures" / "nvml-trace-h200.json"

NVML_SUCCESS = 0
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_UNINITIALIZED = 1
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
_STRINGS = {
    2: "Invalid Argument",
    4: "Insufficient Permissions",
    3: "Not Supported",
    6: "Not Found",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    1: "Uninitialized",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _STRINGS.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_NotSupported(NVMLError):
    def __init__(self, value: int = NVML_ERROR_NOT_SUPPORTED) -> None:
        super().__init__(value)


_data = json.loads(TRACE.read_text())
ROWS: list[dict] = _data["rows"]
META: dict = _data["meta"]
_T = [r["t"] for r in ROWS]
DURATION = ROWS[-1]["t"] + 0.02
ENERGY_PER_LOOP = ROWS[-1]["energy_mj"] - ROWS[0]["energy_mj"]
IDLE_ROW = ROWS[0]
# The capped plateau: 1470 MHz at the 700 W limit (the state quoted in gpu-recipe.md).
CAPPED_ROW = max(
    (r for r in ROWS if r["reasons"] == 4 and r["sm_mhz"] == 1470), key=lambda r: r["power_mw"]
)

_state = SimpleNamespace(mode=None, start=0.0, calls={})


def _count(name: str) -> None:
    _state.calls[name] = _state.calls.get(name, 0) + 1


def nvmlInit() -> None:
    _count("nvmlInit")
    mode = os.environ.get("ANUBIS_FAKE_NVML", "trace")
    if mode == "absent":
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _state.mode = mode
    _state.start = time.monotonic()


def nvmlShutdown() -> None:
    _count("nvmlShutdown")
    _state.mode = None


def _check() -> None:
    if _state.mode is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    if _state.mode == "jetson":
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)


def _row() -> tuple[dict, int]:
    """The trace row now, and how many whole loops have passed (for the energy offset).

    Looked up at most once per 5 ms: the real library answers in microseconds,
    and the fake should not cost the sampler more than the hardware would.
    """
    if _state.mode == "idle":
        return IDLE_ROW, 0
    if _state.mode in ("capped", "old_driver"):
        return CAPPED_ROW, 0
    now = time.monotonic()
    cached = _state.__dict__.get("cache")
    if cached is not None and now - cached[0] < 0.005 and cached[3] == _state.start:
        return cached[1], cached[2]
    loops, t = divmod(now - _state.start, DURATION)
    i = max(0, bisect.bisect_right(_T, t) - 1)
    _state.cache = (now, ROWS[i], int(loops), _state.start)
    return ROWS[i], int(loops)


def nvmlDeviceGetCount() -> int:
    if _state.mode is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return 1


def nvmlDeviceGetHandleByIndex(i: int) -> object:
    if _state.mode is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return ("fake-gpu", i)


def nvmlDeviceGetName(h: object) -> str:
    return "Orin (nvgpu)" if _state.mode == "jetson" else META["device"]


def nvmlSystemGetDriverVersion() -> str:
    return META["driver"]


def nvmlDeviceGetPowerUsage(h: object) -> int:
    _check()
    return _row()[0]["power_mw"]


class _Value(SimpleNamespace):
    pass


def nvmlDeviceGetFieldValues(h: object, ids: list) -> list:
    _check()
    row = _row()[0]
    out = []
    for fid in ids:
        field, scope = fid if isinstance(fid, tuple) else (fid, 0)
        fv = SimpleNamespace(
            fieldId=field, scopeId=scope, valueType=1, nvmlReturn=0, value=_Value(uiVal=0)
        )
        if field == NVML_FI_DEV_POWER_INSTANT and scope == 0:
            fv.value.uiVal = row["power_instant_mw"]
        elif field == NVML_FI_DEV_POWER_AVERAGE and scope == 0:
            fv.value.uiVal = row["power_mw"]
        elif field == NVML_FI_DEV_POWER_AVERAGE and scope == 2:
            # HBM power measured on the H200: 48.6 W idle, 76.1 W under load.
            fv.value.uiVal = 76114 if row["util_gpu"] > 50 else 48637
        else:
            fv.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
        out.append(fv)
    return out


def nvmlDeviceGetTotalEnergyConsumption(h: object) -> int:
    _check()
    _count("energy")
    if os.environ.get("ANUBIS_FAKE_NVML_COST", "1") != "0":
        time.sleep(0.004)  # measured: ~4.1 ms a call on the H200
    row, loops = _row()
    if _state.mode in ("idle", "capped", "old_driver"):
        # A held state still consumes energy: integrate its power since init.
        return int(row["energy_mj"] + row["power_mw"] * (time.monotonic() - _state.start))
    return int(row["energy_mj"] + loops * ENERGY_PER_LOOP)


def nvmlDeviceGetTemperatureV(h: object, sensor: int) -> int:
    _check()
    return _row()[0]["temp_c"]


def nvmlDeviceGetTemperature(h: object, sensor: int) -> int:
    return nvmlDeviceGetTemperatureV(h, sensor)


def nvmlDeviceGetTemperatureThreshold(h: object, which: int) -> int:
    _check()
    return {NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: 95, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: 89}[which]


def nvmlDeviceGetClockInfo(h: object, which: int) -> int:
    _check()
    row = _row()[0]
    return row["mem_mhz"] if which == NVML_CLOCK_MEM else row["sm_mhz"]


def nvmlDeviceGetMaxClockInfo(h: object, which: int) -> int:
    _check()
    return 3201 if which == NVML_CLOCK_MEM else META["max_sm_mhz"]


def nvmlDeviceGetMemoryBusWidth(h: object) -> int:
    _check()
    return 6144  # H200 HBM3e: six 1024-bit stacks (NVIDIA's datasheet)


def nvmlDeviceGetUtilizationRates(h: object) -> SimpleNamespace:
    _check()
    row = _row()[0]
    return SimpleNamespace(gpu=row["util_gpu"], memory=row["util_mem"])


def nvmlDeviceGetCurrentClocksEventReasons(h: object) -> int:
    _check()
    if _state.mode == "old_driver":
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    return _row()[0]["reasons"]


def nvmlDeviceGetCurrentClocksThrottleReasons(h: object) -> int:
    _check()
    return _row()[0]["reasons"]


MIN_LIMIT_MW = 200_000  # estimated (datasheet), not measured


def _limit_mw() -> int:
    path = os.environ.get("ANUBIS_FAKE_NVML_STATE")
    if path:
        try:
            return int(Path(path).read_text())
        except (OSError, ValueError):
            pass
    return int(_state.__dict__.get("limit_mw", META["power_limit_mw"]))


def nvmlDeviceGetEnforcedPowerLimit(h: object) -> int:
    _check()
    return _limit_mw()


def nvmlDeviceGetPowerManagementLimit(h: object) -> int:
    _check()
    return _limit_mw()


def nvmlDeviceGetPowerManagementDefaultLimit(h: object) -> int:
    _check()
    return META["power_limit_mw"]


def nvmlDeviceGetPowerManagementLimitConstraints(h: object) -> list[int]:
    _check()
    return [MIN_LIMIT_MW, META["power_limit_mw"]]


def nvmlDeviceSetPowerManagementLimit(h: object, mw: int) -> None:
    _check()
    _count("nvmlDeviceSetPowerManagementLimit")
    if os.environ.get("ANUBIS_FAKE_NVML_ROOT") != "1":
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    if not MIN_LIMIT_MW <= int(mw) <= META["power_limit_mw"]:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    path = os.environ.get("ANUBIS_FAKE_NVML_STATE")
    if path:
        Path(path).write_text(str(int(mw)))
    else:
        _state.limit_mw = int(mw)
