"""The sampler: one thread, fixed deadlines, every source at its own cadence.

Ticks fall on ``start + k × period`` (never ``sleep(period)``, which drifts).
Each read group is read at the tick rate or its native update period,
whichever is slower, so no sensor is polled faster than it changes; a group
not due in a tick reads None there ("no new reading"). After each tick the
sampler derives the system power (the choice of `choose_system_power`) and
the system energy: the sum of hardware counters when every part has one,
trapezoidal integration of the system power otherwise. It measures itself:
achieved rate, tick lateness (p50/p99) and its own CPU time per second, as
channels of its own, once a second. It wakes only for a tick where some group
is due, and a group whose reads cost more than `READ_CPU_SHARE` of a core is
read less often (``sensor_slowed``), so what sampling costs stays bounded.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from anubis_tui.records import PLAUSIBLE, Channel, Event, Record, Sample, Value
from anubis_tui.sources.base import ReadGroup, Source
from anubis_tui.sources.registry import SystemPower, choose_system_power

MIN_RATE_HZ = 1.0
MAX_RATE_HZ = 1000.0
DEFAULT_RATE_HZ = 10.0
LOST_AFTER = 3  # consecutive failed reads before a group is reported lost
SELF_PERIOD_S = 1.0
READ_BUDGET_S = 1.0  # a group read that takes longer is blocked: its channels are lost
# A group whose reads cost more CPU than this share of a core at its period is read less
# often (its period stretched to cost / share, at most MAX_STRETCH times the period it
# would have: its own or the tick, whichever is longer; only past 1.5 times it, so a read
# near the bound does not flip between the two): NVML's energy counter costs 3.3-12.6 ms
# of CPU a call on an H200 (driver 580; the driver spins), 0.33-1 % of a core at 1 Hz, more
# than every other read together (bench/gpu/read_cost.py, bench/gpu/energy_read.py).
READ_CPU_SHARE = 0.002
MAX_STRETCH = 5.0
COST_READS = 5  # the stretch follows the median CPU of a group's last reads
WATCH_S = 0.5  # the watchdog looks this often: a blocked read is given up 1-1.5 s after it began


@dataclass
class _GroupState:
    group: ReadGroup
    offset: int  # index of its first channel in the table
    next_due_ns: int = 0
    failures: int = 0
    lost: bool = False
    reads: int = 0
    dead: bool = False  # a read blocked past READ_BUDGET_S: never read again
    costs: deque[int] = field(default_factory=lambda: deque(maxlen=COST_READS))  # CPU ns
    stretch_ns: int = 0  # the period its cost asks for (0: its own)


@dataclass
class SamplerStats:
    """What the sampler says about itself."""

    ticks: int = 0
    samples: int = 0  # Samples emitted: ticks that read something
    skipped_ticks: int = 0
    rate_hz: float | None = None
    jitter_p99_s: float | None = None
    cpu_ratio: float | None = None  # CPU seconds of the sampler thread per wall second
    read_errors: int = 0
    thread_cpu_ns: int = 0  # CPU time of the sampler thread so far (CLOCK_THREAD_CPUTIME_ID)
    lateness_ns: deque[int] = field(default_factory=lambda: deque(maxlen=10_000))


def percentile(values: list[int] | list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, interpolated linearly between the two nearest ranks
    (numpy's default "linear" method); ValueError for no values.
    """
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


class Sampler:
    """Reads `sources` at `rate_hz` and hands each Sample (and Events) to `emit`.

    `clock` (monotonic ns), `sleep` (seconds) and `cpu_clock` (this thread's
    CPU ns, ``CLOCK_THREAD_CPUTIME_ID``) are injectable: a test gives a fake
    clock whose `sleep` advances it, and the thread then runs its schedule
    exactly and at once. `read_cpu_share` bounds what one group's reads may
    cost (a share of one core; None: no bound; `_weigh`). Raises ValueError
    for a rate that is not positive.
    """

    def __init__(
        self,
        sources: list[Source],
        emit: Callable[[Record], None],
        rate_hz: float = DEFAULT_RATE_HZ,
        t0_ns: int | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
        cpu_clock: Callable[[], int] = time.thread_time_ns,
        read_cpu_share: float | None = READ_CPU_SHARE,
    ) -> None:
        self.sources = [s for s in sources if s.available]
        self.emit = emit
        self.clock = clock
        self._sleep = sleep
        self._cpu_clock = cpu_clock
        self.read_cpu_share = read_cpu_share  # None: never stretch a group (`_weigh`)
        self.t0_ns = clock() if t0_ns is None else t0_ns
        self.rate_hz = clamp_rate(rate_hz)
        self._pending_rate: float | None = None
        self.stats = SamplerStats()
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop() and set_rate() end a long wait at once
        self._in_read: tuple[_GroupState, int, int] | None = None
        self._abandoned: set[int] = set()
        self._thread: threading.Thread | None = None

        self.channels: list[Channel] = []
        self._groups: list[_GroupState] = []
        for s in self.sources:
            for g in s.groups:
                self._groups.append(_GroupState(g, len(self.channels)))
                self.channels.extend(g.channels)
        self._index = {c.id: i for i, c in enumerate(self.channels)}
        self.system: SystemPower | None = choose_system_power(
            self.channels, [m for s in sources for m in s.missing]
        )
        # Per group, the (index in the group, kind, lo, hi) of readings with a plausible range.
        self._bounds: dict[int, list[tuple[int, float, float]]] = {}
        for gs in self._groups:
            checks = [
                (k, *PLAUSIBLE[c.kind])
                for k, c in enumerate(gs.group.channels)
                if c.kind in PLAUSIBLE
            ]
            if checks:
                self._bounds[id(gs)] = checks
        self._implausible_seen: set[str] = set()
        self._sys_power_i = self._sys_energy_i = -1
        if self.system is not None:
            tier, method = self.system.tier, self.system.method
            self._sys_power_i = len(self.channels)
            self.channels.append(
                Channel(
                    id="system.power",
                    label=f"system power ({tier})",
                    source="anubis",
                    kind="power",
                    unit="W",
                    scope=tier,
                    method="estimated" if method == "estimated" else "derived",
                    update_period_s=0.0,
                    meta={
                        "parts": list(self.system.channels),
                        "reason": self.system.reason,
                        "uncovered": list(self.system.uncovered),
                    },
                )
            )
            self._sys_energy_i = len(self.channels)
            emethod = (
                "estimated"
                if method == "estimated"
                else ("counter" if self.system.energy_channels else "derived")
            )
            self.channels.append(
                Channel(
                    id="system.energy",
                    label="system energy since start",
                    source="anubis",
                    kind="energy",
                    unit="J",
                    scope=tier,
                    method=emethod,
                    update_period_s=0.0,
                    meta={
                        "parts": list(self.system.energy_channels or self.system.channels),
                        "integration": "counters" if self.system.energy_channels else "trapezoidal",
                    },
                )
            )
        self._self_i = len(self.channels)
        self.channels += [
            Channel(
                id="anubis.sampler.rate",
                label="sampler rate achieved",
                source="anubis",
                kind="rate",
                unit="Hz",
                scope="process",
                method="average:1s",
                update_period_s=SELF_PERIOD_S,
                meta={},
            ),
            Channel(
                id="anubis.sampler.jitter_p99",
                label="sampler tick lateness p99",
                source="anubis",
                kind="duration",
                unit="s",
                scope="process",
                method="derived",
                update_period_s=SELF_PERIOD_S,
                meta={},
            ),
            Channel(
                id="anubis.sampler.cpu",
                label="sampler CPU (cores)",
                source="anubis",
                kind="utilization",
                unit="ratio",
                scope="process",
                method="average:1s",
                update_period_s=SELF_PERIOD_S,
                meta={},
            ),
        ]
        self._latest: list[Value] = [None] * len(self.channels)
        # Indices of what system power and energy add up, resolved once, not every tick.
        sp = self.system
        self._sys_parts = [self._index[c] for c in sp.channels] if sp else []
        self._sys_energy_parts = [self._index[c] for c in sp.energy_channels] if sp else []
        self._energy0: float | None = None
        self._energy_int = 0.0
        self._last_power: tuple[int, float] | None = None
        self._self_last: tuple[int, int, int] | None = None  # t, thread cpu ns, ticks
        self._window_lateness: list[int] = []

    # -- public -----------------------------------------------------------------

    @property
    def max_useful_rate_hz(self) -> float:
        """The fastest rate any source updates at; sampling faster only repeats values."""
        periods = [g.group.period_s for g in self._groups if g.group.period_s > 0]
        return min(MAX_RATE_HZ, 1.0 / min(periods)) if periods else MAX_RATE_HZ

    @property
    def target_rate_hz(self) -> float:
        """The rate asked for last (applied at the next tick)."""
        pending = self._pending_rate
        return self.rate_hz if pending is None else pending

    def set_rate(self, rate_hz: float) -> float:
        """Ask for a new tick rate (applied at the next tick); returns the clamped rate."""
        r = clamp_rate(rate_hz)
        self._pending_rate = r
        self._wake.set()  # a wait past idle ticks ends now
        return r

    def start(self) -> None:
        """Start the tick thread (``anubis-sampler``) and its watchdog
        (``anubis-sampler-watch``), which gives up a source group whose read blocks
        (``sensor_lost``) and carries on without it.
        """
        self._thread = threading.Thread(target=self._run, name="anubis-sampler", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watchdog, name="anubis-sampler-watch", daemon=True).start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop ticking; waits up to `timeout` s for the thread (not when called from it)."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    @property
    def lost_channels(self) -> list[str]:
        """Channels not alive at the end: a read blocked, or readings stopped coming."""
        return [c.id for gs in self._groups if gs.dead or gs.lost for c in gs.group.channels]

    def _watchdog(self) -> None:
        """A read that blocks (a hung device behind a sysfs file) must not stop every channel.

        The blocked group is given up (sensor_lost), the stuck thread abandoned,
        and a fresh sampler thread carries on with the other groups.
        """
        while not self._stop.wait(WATCH_S):
            busy = self._in_read
            if busy is None:
                continue
            gs, since, ident = busy
            if (self.clock() - since) / 1e9 < READ_BUDGET_S or gs.dead:
                continue
            gs.dead = True
            self._abandoned.add(ident)
            self._in_read = None
            self.emit(
                Event(
                    self.clock() - self.t0_ns,
                    "sensor_lost",
                    {
                        "channels": [c.id for c in gs.group.channels],
                        "error": f"a read blocked for more than {READ_BUDGET_S:g} s",
                    },
                )
            )
            self._thread = threading.Thread(target=self._run, name="anubis-sampler", daemon=True)
            self._thread.start()

    def tick(self, now_ns: int | None = None, force: bool = False) -> Sample:
        """Read every due group (every group if `force`) once and emit the Sample."""
        now = self.clock() if now_ns is None else now_ns
        tick_ns = int(1e9 / self.rate_hz)
        values: list[Value] = [None] * len(self.channels)
        me = threading.get_ident()
        for gs in self._groups:
            if gs.dead or (not force and now + tick_ns // 2 < gs.next_due_ns):
                continue
            period = max(int(gs.group.period_s * 1e9), tick_ns, gs.stretch_ns)
            # Next due on this group's own grid, never bunching after a stall.
            gs.next_due_ns = max(gs.next_due_ns + period, now + period - tick_ns // 2)
            self._in_read = (gs, self.clock(), me)
            cpu0 = self._cpu_clock() if self.read_cpu_share else 0
            self._read_group(gs, now, values)
            if self.read_cpu_share:
                self._weigh(gs, self._cpu_clock() - cpu0, now, tick_ns)
            self._in_read = None
            if me in self._abandoned:
                return Sample(now - self.t0_ns, values)  # too late: another thread took over
        self._derive_system(now, values)
        self._self_measure(now, values)
        for i in range(self._sys_power_i if self._sys_power_i >= 0 else self._self_i, len(values)):
            if values[i] is not None:
                self._latest[i] = values[i]
        self.stats.ticks += 1
        sample = Sample(now - self.t0_ns, values)
        if any(v is not None for v in values):
            # A tick where no group was due (a 0.5 s source at 10 Hz) reads nothing: a
            # Sample of no values would cost the bus, the writer and every sink for nothing.
            self.stats.samples += 1
            self.emit(sample)
        return sample

    def latest(self) -> list[Value]:
        """The last non-None reading of every channel (system channels included)."""
        return list(self._latest)

    # -- internals --------------------------------------------------------------

    def _read_group(self, gs: _GroupState, now: int, values: list[Value]) -> None:
        g = gs.group
        n = len(g.channels)
        try:
            got = g.read(now)
            if len(got) != n:
                raise ValueError(f"read returned {len(got)} values for {n} channels")
        except Exception as e:  # a sensor must never stop the sampler
            self.stats.read_errors += 1
            got = [None] * n
            err = f"{type(e).__name__}: {e}"
        else:
            err = ""
        gs.reads += 1
        if all(v is None for v in got):
            gs.failures += 1
            if gs.failures >= LOST_AFTER and not gs.lost:
                gs.lost = True
                self.emit(
                    Event(
                        now - self.t0_ns,
                        "sensor_lost",
                        {"channels": [c.id for c in g.channels], "error": err or "no reading"},
                    )
                )
        else:
            if gs.lost:
                self.emit(
                    Event(now - self.t0_ns, "sensor_back", {"channels": [c.id for c in g.channels]})
                )
            gs.failures = 0
            gs.lost = False
        checks = self._bounds.get(id(gs))
        if checks:
            self._drop_implausible(gs, got, checks, now)
        for i, v in enumerate(got):
            values[gs.offset + i] = v
            if v is not None:
                self._latest[gs.offset + i] = v
        if g.notes:  # a read found something to record (an energy counter reset)
            for kind, payload in g.notes:
                self.emit(Event(now - self.t0_ns, kind, payload))
            g.notes.clear()

    def _weigh(self, gs: _GroupState, cpu_ns: int, now: int, tick_ns: int) -> None:
        """Stretch the period of a group whose reads cost more than `read_cpu_share` of a
        core: period = median CPU of its last `COST_READS` reads / share, from 1.5 to
        `MAX_STRETCH` times the period it would have (its own or the tick). The first
        stretch is recorded as a ``sensor_slowed`` Event (``channels``, ``read_cpu_ms``,
        ``period_s``, ``reason``)."""
        gs.costs.append(cpu_ns)
        if len(gs.costs) < min(3, COST_READS):
            return
        share = self.read_cpu_share or 1.0
        own = max(int(gs.group.period_s * 1e9), tick_ns)
        cost = sorted(gs.costs)[len(gs.costs) // 2]
        want = int(cost / share)
        # Once stretched, a group follows its cost down to its own period.
        past = own if gs.stretch_ns else 1.5 * own
        stretch = min(int(own * MAX_STRETCH), want) if want > past else 0
        if stretch and not gs.stretch_ns:
            self.emit(
                Event(
                    now - self.t0_ns,
                    "sensor_slowed",
                    {
                        "channels": [c.id for c in gs.group.channels],
                        "read_cpu_ms": round(cost / 1e6, 3),
                        "period_s": round(stretch / 1e9, 3),
                        "reason": f"a read costs {cost / 1e6:.1f} ms of CPU: read every "
                        f"{stretch / 1e9:.2g} s, not {own / 1e9:g} s, to keep it under "
                        f"{share:.1%} of a core",
                    },
                )
            )
        gs.stretch_ns = stretch

    def _drop_implausible(
        self,
        gs: _GroupState,
        got: list[Value],
        checks: list[tuple[int, float, float]],
        now: int,
    ) -> None:
        """Turn readings outside their kind's plausible range into no reading.

        The first such reading of a channel is recorded as an
        ``implausible_reading`` Event with the raw value (sources.base.PLAUSIBLE
        says why each range is what it is); max and mean then never see it.
        """
        for k, lo, hi in checks:
            v = got[k]
            if v is None or lo <= v <= hi:
                continue
            got[k] = None
            cid = gs.group.channels[k].id
            if cid not in self._implausible_seen:
                self._implausible_seen.add(cid)
                self.emit(
                    Event(
                        now - self.t0_ns,
                        "implausible_reading",
                        {
                            "channel": cid,
                            "value": float(v) if math.isfinite(v) else str(v),
                            "range": [lo, hi],
                            "reason": f"{cid} read {v:g}, outside {lo:g}..{hi:g}: no reading",
                        },
                    )
                )

    def _derive_system(self, now: int, values: list[Value]) -> None:
        sp = self.system
        if sp is None:
            return
        parts = self._sys_parts
        if not any(values[i] is not None for i in parts):
            return  # nothing new this tick
        latest = [self._latest[i] for i in parts]
        if any(v is None for v in latest):
            return
        power = float(sum(v for v in latest if v is not None))
        values[self._sys_power_i] = power
        if sp.energy_channels:
            es = [self._latest[i] for i in self._sys_energy_parts]
            if all(e is not None for e in es):
                total = float(sum(e for e in es if e is not None))
                if self._energy0 is None:
                    self._energy0 = total
                values[self._sys_energy_i] = total - self._energy0
        else:
            if self._last_power is not None:
                t_prev, p_prev = self._last_power
                self._energy_int += (p_prev + power) / 2 * (now - t_prev) / 1e9
            values[self._sys_energy_i] = self._energy_int
            self._last_power = (now, power)

    def _self_measure(self, now: int, values: list[Value]) -> None:
        cpu = self._cpu_clock() if threading.current_thread() is self._thread else 0
        if self._self_last is None:
            self._self_last = (now, cpu, self.stats.ticks)
            return
        t_prev, cpu_prev, ticks_prev = self._self_last
        if now - t_prev < SELF_PERIOD_S * 1e9:
            return
        wall = (now - t_prev) / 1e9
        st = self.stats
        st.rate_hz = (st.ticks - ticks_prev) / wall
        st.cpu_ratio = (cpu - cpu_prev) / 1e9 / wall if self._thread is not None else None
        if self._window_lateness:
            st.jitter_p99_s = percentile(self._window_lateness, 0.99) / 1e9
        self._window_lateness = []
        values[self._self_i] = st.rate_hz
        values[self._self_i + 1] = st.jitter_p99_s
        values[self._self_i + 2] = st.cpu_ratio
        self._self_last = (now, cpu, st.ticks)

    def _past_idle_ticks(self, start: int, period: int, k: int) -> int:
        """The next tick worth waking for: the first grid tick (``start + k × period``) at
        which some group is due, at most `SELF_PERIOD_S` ahead (the self-measure).

        A tick at which no group is due reads nothing and emits nothing (`tick`), so it
        is not woken for: with only 0.5 s sources a 10 Hz sampler wakes twice a second,
        not ten times (every wake-up of an idle thread is CPU). The ticks passed over
        count as made, so the achieved rate still says whether the grid was kept.
        """
        live = [gs.next_due_ns for gs in self._groups if not gs.dead]
        if not live or self._pending_rate is not None:
            return k
        # `tick` reads a group once now + period / 2 reaches its due time.
        due_k = _ceil_div(min(live) - period // 2 - start, period)
        limit_k = k + max(0, int(SELF_PERIOD_S * 1e9) // period - 1)
        nxt = min(due_k, limit_k)
        if nxt <= k:
            return k
        self.stats.ticks += nxt - k
        return nxt

    def _run(self) -> None:
        period = int(1e9 / self.rate_hz)
        start = self.clock()
        k = 0
        me = threading.get_ident()
        while not self._stop.is_set() and me not in self._abandoned:
            self._wake.clear()  # before looking at the rate: a set_rate from now on wakes
            if self._pending_rate is not None:
                self.rate_hz, self._pending_rate = self._pending_rate, None
                period = int(1e9 / self.rate_hz)
                start, k = self.clock(), 0
                self.emit(Event(start - self.t0_ns, "rate", {"sampler_hz": self.rate_hz}))
            deadline = start + k * period
            now = self.clock()
            # Plain sleeps of at most 100 ms (Event.wait allocates a lock per call, which
            # showed in the sampler's CPU at high rates; stop() is seen within 100 ms), but
            # one wait for a longer time past idle ticks: a wake-up every 100 ms would cost
            # what skipping the idle ticks saves.
            while deadline > now and not self._stop.is_set() and self._pending_rate is None:
                left = (deadline - now) / 1e9
                if left > 0.1 and self._sleep is time.sleep:
                    self._wake.wait(left)
                else:
                    self._sleep(min(left, 0.1))
                now = self.clock()
            if self._stop.is_set():
                break
            if self._pending_rate is not None and deadline > now:
                continue  # a new rate, asked during a wait past idle ticks: start it now
            now = self.clock()
            late = now - deadline
            self.stats.lateness_ns.append(late)
            self._window_lateness.append(late)
            self.tick(now)
            self.stats.thread_cpu_ns = self._cpu_clock()
            k += 1
            k = self._past_idle_ticks(start, period, k)
            # Behind by whole periods (a stall): skip them rather than burst.
            behind = int((self.clock() - start) // period)
            if behind > k:
                self.stats.skipped_ticks += behind - k
                k = behind


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def clamp_rate(rate_hz: float) -> float:
    """`rate_hz` clamped to [`MIN_RATE_HZ`, `MAX_RATE_HZ`] (1..1000 Hz); ValueError if not > 0."""
    if not rate_hz > 0:
        raise ValueError(f"sampling rate must be positive, got {rate_hz}")
    return float(min(MAX_RATE_HZ, max(MIN_RATE_HZ, rate_hz)))
