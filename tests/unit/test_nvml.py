"""The NVML source against a fake pynvml that replays the H200 trace."""

from __future__ import annotations

import time

import pytest

from anubis_tui.records import decode_flags
from anubis_tui.session.sampler import Sampler
from anubis_tui.sources.base import SysfsRoot
from anubis_tui.sources.nvml import NvmlSource
from anubis_tui.sources.registry import discover
from tests.conftest import FIXTURES


def nvml_sources(module):
    from anubis_tui.sources.base import DiscoveryContext

    return NvmlSource.discover(
        DiscoveryContext(SysfsRoot(FIXTURES / "empty_container"), {"nvml_module": module})
    )


def values(src, t_ns=1_000_000_000):
    out = {}
    for g in src.groups:
        for c, v in zip(g.channels, g.read(t_ns), strict=True):
            out[c.id] = v
    return out


def test_power_capped_state_decodes_power_cap_at_1470_mhz(fake_nvml):
    (src,) = nvml_sources(fake_nvml("capped"))
    assert src.available
    v = values(src)
    ch = {c.id: c for c in src.channels}
    assert v["gpu0.throttle"] == 0x4
    assert decode_flags(ch["gpu0.throttle"], v["gpu0.throttle"]) == (["power_cap"], [])
    assert v["gpu0.clock_sm"] == 1470e6
    assert v["gpu0.power_limit"] == 700.0
    assert v["gpu0.power"] > 680  # at the cap
    assert ch["gpu0.power"].method == "average:1s"
    assert ch["gpu0.power_instant"].method == "instant"
    assert ch["gpu0.temp"].meta["critical_c"] == 95.0
    assert ch["gpu0.temp"].meta["trip_c"] == 89.0
    src.close()


def test_idle_values_are_the_measured_ones(fake_nvml):
    (src,) = nvml_sources(fake_nvml("idle"))
    v = values(src)
    assert v["gpu0.power"] == pytest.approx(81.472)
    assert v["gpu0.power_memory"] == pytest.approx(48.637)
    assert v["gpu0.clock_sm"] == 345e6
    assert v["gpu0.energy"] == pytest.approx(3963.624, abs=0.5)
    src.close()


def test_jetson_style_nvml_is_unavailable_with_reason_not_a_crash(fake_nvml):
    (src,) = nvml_sources(fake_nvml("jetson"))
    assert not src.available
    assert "Orin" in src.reason and "Not Supported" in src.reason and "INA3221" in src.reason
    assert src.groups == []


def test_old_driver_falls_back_to_throttle_reasons(fake_nvml):
    (src,) = nvml_sources(fake_nvml("old_driver"))
    assert values(src)["gpu0.throttle"] == 0x4


def test_absent_library_is_a_reason(fake_nvml):
    (src,) = nvml_sources(fake_nvml("absent"))
    assert not src.available and "Library Not Found" in src.reason


def test_energy_counter_is_read_at_its_own_slow_cadence(fake_nvml):
    mod = fake_nvml("trace")
    sources = discover(
        SysfsRoot(FIXTURES / "empty_container"), config={"nvml_module": mod}, warn=lambda m: None
    )
    s = Sampler(sources, emit=lambda r: None, rate_hz=100)
    mod._state.calls.clear()
    t = 0
    for _ in range(300):  # 3 s of ticks at 100 Hz
        s.tick(t)
        t += 10_000_000
    # the energy counter costs ~4 ms a call: once a second, not 100 times
    assert mod._state.calls["energy"] == 3
    for src in sources:
        src.close()


def test_trace_replays_the_throttle_entry_and_the_lag_of_averaged_power(fake_nvml):
    mod = fake_nvml("trace")
    (src,) = nvml_sources(mod)
    # Jump the replay into the heavy phase: 9 s after start.
    mod._state.start = time.monotonic() - 9.0
    v = values(src)
    assert v["gpu0.throttle"] == 0x4
    assert v["gpu0.power_instant"] > 600
    # Just after the load ends (t ≈ 20.9 s) the 1 s average still lags high.
    mod._state.start = time.monotonic() - 20.42
    v = values(src)
    assert v["gpu0.power"] - v["gpu0.power_instant"] > 200
    src.close()


def test_gpu_plus_estimated_cpu_is_labelled_estimated(fake_nvml):
    sources = discover(
        SysfsRoot(FIXTURES / "empty_container"),
        config={"nvml_module": fake_nvml("idle")},
        warn=lambda m: None,
    )
    s = Sampler(sources, emit=lambda r: None)
    assert s.system is not None
    assert s.system.channels[0] == "gpu0.power_counter"
    assert s.system.method == "estimated" and "estimated" in s.system.reason
    for src in sources:
        src.close()


class _Lib:
    """A minimal NVML binding: each call answers what the test sets."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2
    NVML_ERROR_FUNCTION_NOT_FOUND = 13

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(f"NVML error {value}")
            self.value = value


def test_query_turns_nvml_errors_into_not_available_and_lets_bugs_through():
    from anubis_tui.sources.nvml import NvmlAdapter

    a = NvmlAdapter(_Lib)  # type: ignore[arg-type]

    def not_supported():
        raise _Lib.NVMLError(3)

    assert a.query(not_supported, "n/a") == "n/a"
    assert a.attempt(not_supported) == (None, "NVML error 3")
    assert a.query(lambda: 2.5, None) == 2.5
    with pytest.raises(ZeroDivisionError):  # not an NVML error: a bug stays visible
        a.query(lambda: 1 / 0, None)


def test_newer_call_falls_back_only_when_the_driver_lacks_it():
    from anubis_tui.sources.nvml import NvmlAdapter

    class Lib(_Lib):
        answer = 0

        @staticmethod
        def nvmlDeviceGetCurrentClocksEventReasons(h):
            raise _Lib.NVMLError(Lib.answer)

        @staticmethod
        def nvmlDeviceGetCurrentClocksThrottleReasons(h):
            return 0x4

    a = NvmlAdapter(Lib)  # type: ignore[arg-type]
    Lib.answer = 13  # NVML_ERROR_FUNCTION_NOT_FOUND: a driver older than 535
    assert a.reasons(None) == 0x4
    Lib.answer = 15  # GPU_IS_LOST: a real failure of the new call is not hidden
    with pytest.raises(_Lib.NVMLError):
        a.reasons(None)


def test_memory_bandwidth_is_none_without_the_calls_and_computed_with_them():
    from anubis_tui.sources.nvml import NvmlAdapter

    assert NvmlAdapter(_Lib).memory_bandwidth(None) is None  # type: ignore[arg-type]

    class Lib(_Lib):
        @staticmethod
        def nvmlDeviceGetMemoryBusWidth(h):
            return 5120

        @staticmethod
        def nvmlDeviceGetMaxClockInfo(h, which):
            return 2619 if which == _Lib.NVML_CLOCK_MEM else 1980

    bw = NvmlAdapter(Lib).memory_bandwidth(None)  # type: ignore[arg-type]
    assert bw is not None
    assert bw[0] == pytest.approx(5120 / 8 * 2619e6 * 2)  # bytes/s: width/8 × clock × 2
    assert bw[1] == "NVML: 5120-bit bus × 2619 MHz × 2"
