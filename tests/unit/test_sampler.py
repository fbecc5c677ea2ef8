"""The sampler's schedule, its system power and energy, and its self-measurement."""

from __future__ import annotations

import time

import pytest

from anubis_tui.records import Channel, Event, Sample
from anubis_tui.session.sampler import Sampler, clamp_rate, percentile
from anubis_tui.sources.base import ReadGroup, Source


class Fake(Source):
    @classmethod
    def discover(cls, ctx):
        return []


def source(name, period_s, fn, kind="power", scope="gpu", method="instant", meta=None):
    ch = Channel(
        id=f"{name}.v",
        label=name,
        source=name,
        kind=kind,
        unit="W",
        scope=scope,
        method=method,
        update_period_s=period_s,
        meta=meta or {},
    )
    calls = []

    def read(t):
        calls.append(t)
        return [fn(t)]

    s = Fake(name=name, available=True, groups=[ReadGroup([ch], read, period_s)])
    return s, calls


def test_groups_are_never_read_faster_than_their_native_period():
    fast, fast_calls = source("fast", 0.001, lambda t: 1.0)
    slow, slow_calls = source("slow", 1.0, lambda t: 2.0, scope="cpu-package")
    s = Sampler([fast, slow], emit=lambda r: None, rate_hz=100)
    for k in range(500):  # 5 s at 100 Hz
        s.tick(k * 10_000_000)
    assert len(fast_calls) == 500  # capped by the tick rate
    assert len(slow_calls) == 5  # capped by its own period


def test_no_reading_is_none_and_not_due_is_none():
    a, _ = source("a", 0.5, lambda t: None)
    s = Sampler([a], emit=lambda r: None, rate_hz=10)
    smp = s.tick(0)
    assert smp.values[0] is None


def test_system_energy_is_trapezoidal_without_counters():
    # Power ramps 0 → 10 W over 1 s; the trapezoid gives exactly 5 J.
    a, _ = source("ramp", 0.1, lambda t: 10.0 * t / 1e9, scope="board-input")
    s = Sampler([a], emit=lambda r: None, rate_hz=10, t0_ns=0)
    for k in range(11):
        smp = s.tick(k * 100_000_000)
    ids = [c.id for c in s.channels]
    assert smp.values[ids.index("system.energy")] == pytest.approx(5.0)
    assert s.channels[ids.index("system.energy")].method == "derived"


def test_system_energy_from_counters_when_they_exist():
    meta = {"energy_channel": "pkg.energy"}
    e = Channel(
        id="pkg.energy",
        label="e",
        source="pkg",
        kind="energy",
        unit="J",
        scope="cpu-package",
        method="counter",
        update_period_s=0.1,
    )
    p = Channel(
        id="pkg.power",
        label="p",
        source="pkg",
        kind="power",
        unit="W",
        scope="cpu-package",
        method="derived",
        update_period_s=0.1,
        meta=meta,
    )

    def read(t):
        return [1000.0 + 3.0 * t / 1e9, 3.0]

    src = Fake(name="pkg", available=True, groups=[ReadGroup([e, p], read, 0.1)])
    s = Sampler([src], emit=lambda r: None, rate_hz=10, t0_ns=0)
    for k in range(21):
        smp = s.tick(k * 100_000_000)
    ids = [c.id for c in s.channels]
    assert smp.values[ids.index("system.energy")] == pytest.approx(6.0)
    assert s.channels[ids.index("system.energy")].method == "counter"


def test_failing_source_never_stops_the_sampler():
    def boom(t):
        raise OSError("EIO")

    a, _ = source("a", 0.1, boom)
    b, _ = source("b", 0.1, lambda t: 4.0, scope="cpu-package")
    events = []
    s = Sampler([a, b], emit=events.append, rate_hz=10)
    for k in range(5):
        smp = s.tick(k * 100_000_000)
    assert smp.values[1] == 4.0 and smp.values[0] is None
    assert s.stats.read_errors == 5
    lost = [e for e in events if isinstance(e, Event) and e.kind == "sensor_lost"]
    assert len(lost) == 1 and "EIO" in lost[0].payload["error"]


def test_thread_keeps_fixed_deadlines_and_measures_itself():
    a, _ = source("a", 0.001, lambda t: 1.0)
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=50)
    s.start()
    time.sleep(2.3)
    s.stop()
    samples = [r for r in out if isinstance(r, Sample)]
    # Fixed deadlines: about 50 per second, no drift from sleep(period) accumulating
    assert 100 <= len(samples) <= 120
    ts = [x.t for x in samples]
    span = (ts[-1] - ts[0]) / 1e9
    assert abs(len(samples) - 1 - span * 50) <= 3
    assert s.stats.rate_hz is not None and 40 < s.stats.rate_hz < 55
    assert s.stats.jitter_p99_s is not None and s.stats.jitter_p99_s >= 0
    assert s.stats.cpu_ratio is not None and 0 <= s.stats.cpu_ratio < 0.5
    ids = [c.id for c in s.channels]
    reported = [x.values[ids.index("anubis.sampler.rate")] for x in samples]
    assert any(v is not None for v in reported)


def test_rate_change_is_an_event_and_takes_effect():
    a, _ = source("a", 0.001, lambda t: 1.0)
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=10)
    s.start()
    time.sleep(0.5)
    assert s.set_rate(100) == 100
    time.sleep(1.0)
    s.stop()
    ev = [r for r in out if isinstance(r, Event) and r.kind == "rate"]
    assert ev and ev[0].payload["sampler_hz"] == 100
    after = [r for r in out if isinstance(r, Sample) and r.t > ev[0].t]
    assert len(after) > 60


def test_rate_is_clamped_and_validated():
    assert clamp_rate(5000) == 1000
    assert clamp_rate(0.1) == 1
    with pytest.raises(ValueError):
        clamp_rate(0)


def test_max_useful_rate_follows_the_fastest_source():
    a, _ = source("a", 0.1, lambda t: 1.0)
    b, _ = source("b", 0.5, lambda t: 1.0, scope="cpu-package")
    s = Sampler([a, b], emit=lambda r: None)
    assert s.max_useful_rate_hz == pytest.approx(10.0)


def test_percentile():
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([5], 0.99) == 5


def test_a_read_that_blocks_loses_its_channels_and_sampling_goes_on():
    import threading

    forever = threading.Event()
    healthy, _ = source("ok", 0.01, lambda t: 5.0)
    stuck, _ = source("stuck", 0.01, lambda t: forever.wait() or 1.0, scope="cpu-package")
    records: list = []
    s = Sampler([healthy, stuck], emit=records.append, rate_hz=20)
    s.start()
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            lost = [r for r in records if isinstance(r, Event) and r.kind == "sensor_lost"]
            after = [r for r in records if isinstance(r, Sample) and lost and r.t > lost[0].t]
            if len(after) >= 10:
                break
            time.sleep(0.1)
    finally:
        s.stop()
        forever.set()
    assert lost and lost[0].payload["channels"] == ["stuck.v"]
    assert "blocked" in lost[0].payload["error"]
    ok = [c.id for c in s.channels].index("ok.v")
    assert len(after) >= 10 and all(r.values[ok] == 5.0 for r in after[-5:])
    assert s.lost_channels == ["stuck.v"]
