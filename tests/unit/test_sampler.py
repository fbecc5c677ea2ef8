"""The sampler's schedule, its system power and energy, and its self-measurement."""

from __future__ import annotations

import itertools
import threading

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


class FakeClock:
    """Monotonic ns that moves only when the sampler sleeps (or a read takes time).

    `sleep` oversleeps by `overshoot_ns`, as an OS does; `cpu` is the sampler
    thread's CPU ns, advanced by `spend`; `at(t_s, fn)` runs `fn` once the
    clock reaches t_s. The sampler's thread then runs its schedule exactly and
    as fast as the machine goes: no test waits on real time.
    """

    def __init__(self, overshoot_ns: int = 0) -> None:
        self.t = 0
        self.cpu_ns = 0
        self.overshoot_ns = overshoot_ns
        self.actions: list[tuple[int, int, object]] = []
        self.sleeps = 0

    def __call__(self) -> int:
        return self.t

    def cpu(self) -> int:
        return self.cpu_ns

    def spend(self, wall_ns: int, cpu_ns: int = 0) -> None:
        self.t += wall_ns
        self.cpu_ns += cpu_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += round(seconds * 1e9) + self.overshoot_ns
        while self.actions and self.actions[0][0] <= self.t:
            _, _, fn = self.actions.pop(0)
            fn()  # type: ignore[operator]

    def at(self, t_s: float, fn) -> None:
        self.actions.append((round(t_s * 1e9), len(self.actions), fn))
        self.actions.sort(key=lambda a: (a[0], a[1]))


def run_until(s: Sampler, clock: FakeClock, t_s: float) -> None:
    """Run the sampler's thread until the fake clock reaches `t_s`, then stop it."""
    done = threading.Event()
    clock.at(t_s, lambda: (s.stop(), done.set()))
    s.start()
    assert done.wait(30), "the sampler thread never reached the end of its fake time"
    s.stop(5)


def test_thread_keeps_fixed_deadlines_and_measures_itself():
    clock = FakeClock(overshoot_ns=1_000_000)  # every sleep wakes 1 ms late

    def read(t):
        clock.spend(2_000_000, cpu_ns=2_000_000)  # a read takes 2 ms, all of it CPU
        return 1.0

    a, _ = source("a", 0.001, read)
    out: list = []
    # No bound on a read's CPU here (2 ms at 50 Hz is 10 % of a core: it would be stretched)
    s = Sampler([a], emit=out.append, rate_hz=50, clock=clock, sleep=clock.sleep,
                cpu_clock=clock.cpu, read_cpu_share=None)  # fmt: skip
    run_until(s, clock, 2.3)
    samples = [r for r in out if isinstance(r, Sample)]
    # Fixed deadlines start + k × 20 ms, each woken 1 ms late (tick 0 is due at once): no
    # drift. sleep(period) would drift 3 ms a tick (the read, the late wake), 0.34 s by the end.
    assert [x.t for x in samples] == [0] + [k * 20_000_000 + 1_000_000 for k in range(1, 115)]
    assert s.stats.ticks == 115 and s.stats.skipped_ticks == 0
    assert s.stats.rate_hz == 50.0
    assert s.stats.jitter_p99_s == 0.001
    assert s.stats.cpu_ratio == pytest.approx(0.1)  # 50 reads × 2 ms CPU a second
    ids = [c.id for c in s.channels]
    reported = [x.values[ids.index("anubis.sampler.rate")] for x in samples]
    # once a second: at ticks 50 and 100 (the first second is measured from tick 0)
    assert [i for i, v in enumerate(reported) if v is not None] == [50, 100]
    assert reported[50] == 50 / 1.001 and reported[100] == 50.0  # tick 50 came at 1.001 s


def test_a_stall_skips_ticks_instead_of_bursting():
    clock = FakeClock()
    stalls = iter([0] * 10 + [95_000_000])  # the 11th read stalls 95 ms

    def read(t):
        clock.spend(next(stalls, 0))
        return 1.0

    a, _ = source("a", 0.001, read)
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=50, clock=clock, sleep=clock.sleep)
    run_until(s, clock, 0.5)
    ts = [r.t // 1_000_000 for r in out if isinstance(r, Sample)]
    # Tick 10 (200 ms) ends at 295 ms: the tick due at 280 ms is made at once, those due at
    # 220-260 ms are skipped, not made up in a burst, and the grid goes on at 300 ms.
    assert ts == [*range(0, 220, 20), 295, *range(300, 500, 20)]
    assert s.stats.skipped_ticks == 3


def test_rate_change_is_an_event_and_takes_effect():
    clock = FakeClock()
    a, _ = source("a", 0.001, lambda t: 1.0)
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=10, clock=clock, sleep=clock.sleep)
    clock.at(0.45, lambda: s.set_rate(100))
    run_until(s, clock, 1.5)
    ev = [r for r in out if isinstance(r, Event) and r.kind == "rate"]
    assert [(e.t, e.payload["sampler_hz"]) for e in ev] == [(500_000_000, 100)]
    ts = [r.t // 1_000_000 for r in out if isinstance(r, Sample)]
    # 10 Hz up to the tick that saw the request, then 100 Hz once the group is next due
    # (600 ms): the ticks between read nothing, and a tick that reads nothing emits nothing
    assert ts == [0, 100, 200, 300, 400, 500, *range(600, 1500, 10)]


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
    clock = FakeClock()
    forever = threading.Event()

    def stuck_read(t):
        clock.spend(2_000_000_000)  # 2 s pass (over READ_BUDGET_S), and then it never returns
        forever.wait(30)
        return 1.0

    healthy, _ = source("ok", 0.01, lambda t: 5.0)
    stuck, _ = source("stuck", 0.01, stuck_read, scope="cpu-package")
    records: list = []
    s = Sampler([healthy, stuck], emit=records.append, rate_hz=20, clock=clock,
                sleep=clock.sleep)  # fmt: skip
    try:
        run_until(s, clock, 3.0)  # the watchdog (real time, every WATCH_S) takes over
    finally:
        forever.set()
    lost = [r for r in records if isinstance(r, Event) and r.kind == "sensor_lost"]
    assert len(lost) == 1 and lost[0].payload["channels"] == ["stuck.v"]
    assert "blocked" in lost[0].payload["error"] and lost[0].t == 2_000_000_000
    ok = [c.id for c in s.channels].index("ok.v")
    after = [r for r in records if isinstance(r, Sample) and r.t >= lost[0].t]
    # a fresh thread carries on at 20 Hz from the moment the read was given up
    assert [r.t // 1_000_000 for r in after] == list(range(2000, 3000, 50))
    assert all(r.values[ok] == 5.0 for r in after)
    assert s.lost_channels == ["stuck.v"]


def test_a_tick_that_reads_nothing_emits_nothing():
    clock = FakeClock()
    a, _ = source("a", 0.5, lambda t: 1.0)  # a 0.5 s source under a 10 Hz sampler
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=10, clock=clock, sleep=clock.sleep)
    run_until(s, clock, 2.0)
    samples = [r for r in out if isinstance(r, Sample)]
    assert [r.t // 1_000_000 for r in samples] == [0, 500, 1000, 1500]
    assert all(r.values[0] == 1.0 for r in samples)
    # It wakes only when the group is due (twice a second), yet keeps its 10 Hz grid: the
    # ticks passed over count as made, so the achieved rate is the rate asked for.
    assert len(s.stats.lateness_ns) == 4
    assert s.stats.ticks == 20 and s.stats.samples == 4
    assert s.stats.rate_hz == pytest.approx(10.0)
    assert s.stats.skipped_ticks == 0


def test_a_new_rate_is_taken_during_a_wait_past_idle_ticks():
    clock = FakeClock()
    a, _ = source("a", 0.5, lambda t: 1.0)
    out: list = []
    s = Sampler([a], emit=out.append, rate_hz=10, clock=clock, sleep=clock.sleep)
    clock.at(0.05, lambda: s.set_rate(20))  # asked while the thread waits for 500 ms
    run_until(s, clock, 1.0)
    ev = [r for r in out if isinstance(r, Event) and r.kind == "rate"]
    assert [e.t // 1_000_000 for e in ev] == [100]  # at the next 100 ms look, not at 500


def test_a_group_whose_reads_cost_cpu_is_read_less_often():
    clock = FakeClock()

    def energy(t):  # NVML's energy counter on an H200: about 4 ms of CPU a call
        clock.spend(4_000_000, cpu_ns=4_000_000)
        return 1.0

    a, _ = source("energy", 1.0, energy)
    b, _ = source("power", 0.1, lambda t: 2.0)  # cheap: read at its own 10 Hz throughout
    out: list = []
    s = Sampler([a, b], emit=out.append, rate_hz=10, clock=clock, sleep=clock.sleep,
                cpu_clock=clock.cpu)  # fmt: skip
    run_until(s, clock, 14.0)
    samples = [r for r in out if isinstance(r, Sample)]
    got = [r.t // 1_000_000 for r in samples if r.values[0] is not None]
    # Three reads at 1 s give the cost (median 4 ms; the third was already due at 3 s), then
    # every 4 ms / 0.2 % = 2 s
    assert got[:5] == [0, 1000, 2000, 3000, 5000]
    assert all(b - a == 2000 for a, b in itertools.pairwise(got[3:]))
    slowed = [r for r in out if isinstance(r, Event) and r.kind == "sensor_slowed"]
    assert len(slowed) == 1 and slowed[0].payload["channels"] == ["energy.v"]
    assert slowed[0].payload["period_s"] == 2.0 and slowed[0].payload["read_cpu_ms"] == 4.0
    assert len([r for r in samples if r.values[1] is not None]) >= 135  # 10 Hz for 14 s


def test_a_stretch_is_bounded_and_a_cheap_group_never_stretched():
    clock = FakeClock()

    def slow(t):
        clock.spend(1_000_000, cpu_ns=50_000_000)  # 50 ms of CPU: 25 s at 0.2 %
        return 1.0

    a, _ = source("slow", 0.5, slow)
    b, _ = source("cheap", 0.5, lambda t: 2.0)
    out: list = []
    s = Sampler([a, b], emit=out.append, rate_hz=10, clock=clock, sleep=clock.sleep,
                cpu_clock=clock.cpu)  # fmt: skip
    run_until(s, clock, 12.0)
    got = [r.t // 1_000_000 for r in out if isinstance(r, Sample) and r.values[0] is not None]
    assert got == [0, 500, 1000, 1500, 4000, 6500, 9000, 11500]  # at most 5 × its 0.5 s
    slowed = [r for r in out if isinstance(r, Event) and r.kind == "sensor_slowed"]
    assert [e.payload["channels"] for e in slowed] == [["slow.v"]]
