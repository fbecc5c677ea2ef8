"""Controlled sweeps: profilers at rising rates and knob settings against interleaved baselines.

A sweep warms the machine up to a steady state, then runs, for each repeat,
every treatment once in an order shuffled with a seed, with a baseline
segment before each treatment and one after the last: ``B T B T … B``. Before
each segment it waits (inference paused, so the wait counts nowhere) until
the temperature is back within 1 °C of the one reached by the warm-up, or
says it did not get there. Everything goes through the session's control
surface; `sweep_step` Events mark each segment's role, repeat and
treatment, so `anubis report` can put each treatment beside its baselines.

With a time limit (`SweepOptions.max_s`), the planned repeats are followed
by extra ones where they can change a recommendation: each profiler's lowest
rate that is not yet decided within budget (`analysis.sweep.decide`) gets
another ``B T`` pair, in a seeded order, until every such rate is decided or
the next round would pass the limit.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from anubis_tui.profilerspec import ProfilerSetting
from anubis_tui.records import Channel, ChannelIndex, ChannelsAdded, Record, Sample

if TYPE_CHECKING:
    from anubis_tui.session.surface import ControlSurface

PROFILERS = ("py-spy", "py-spy-native", "scalene")
STEADY_WINDOW_S = 30.0
MAX_SLOPE_C_PER_MIN = 0.5
MAX_TEMP_SD_C = 1.0
MAX_POWER_CV = 0.05
COOLDOWN_BAND_C = 1.0


@dataclass(frozen=True)
class Treatment:
    """One thing a sweep compares with the baseline: a profiler at a rate, or knob settings."""

    name: str
    profiler: ProfilerSetting | None = None
    knobs: dict[str, Any] = field(default_factory=dict)


def treatments(
    profilers: Sequence[str],
    rates: Sequence[float],
    knobs: dict[str, list[Any]],
    base: dict[str, Any],
) -> tuple[list[Treatment], list[str]]:
    """Profilers × rates, then every combination of knob values that differs from the start.

    Returns the treatments and notes on what was left out (a knob combination
    equal to the starting setting is the baseline itself).
    """
    out: list[Treatment] = []
    notes: list[str] = []
    for prof in profilers:
        if prof not in PROFILERS:
            raise ValueError(f"unknown profiler {prof!r}; one of {', '.join(PROFILERS)}")
        for rate in rates:
            name, native = ("py-spy", True) if prof == "py-spy-native" else (prof, False)
            ps = ProfilerSetting(name, float(rate), native)
            out.append(Treatment(ps.format(), profiler=ps))
    names = list(knobs)
    for combo in itertools.product(*(knobs[n] for n in names)) if names else []:
        setting = dict(zip(names, combo, strict=True))
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        if all(base.get(k) == v for k, v in setting.items()):
            notes.append(f"{label} is the starting setting: it is the baseline")
            continue
        out.append(Treatment(label, knobs=setting))
    return out, notes


def schedule(
    items: Sequence[Treatment], repeats: int, seed: int
) -> list[tuple[int, str, Treatment | None]]:
    """(repeat, role, treatment) in order: ``B T B T … B``, treatments shuffled per repeat."""
    rng = random.Random(seed)
    out: list[tuple[int, str, Treatment | None]] = []
    for r in range(repeats):
        order = list(items)
        rng.shuffle(order)
        for t in order:
            out.append((r, "baseline", None))
            out.append((r, "treatment", t))
    out.append((max(0, repeats - 1), "baseline", None))
    return out


@dataclass(frozen=True)
class Steady:
    """Whether temperature and power have settled, and the numbers that say so."""

    reached: bool
    reason: str
    temp_slope_c_per_min: float | None = None
    temp_sd_c: float | None = None
    power_cv: float | None = None


def _fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (per second) and the residuals' standard deviation."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    slope = sum((t - mt) * (v - mv) for t, v in points) / stt if stt else 0.0
    res = [v - (mv + slope * (t - mt)) for t, v in points]
    return slope, math.sqrt(sum(r * r for r in res) / n)


def steady_state(
    temps: Sequence[tuple[float, float]],
    powers: Sequence[tuple[float, float]],
    now: float,
    window_s: float = STEADY_WINDOW_S,
) -> Steady:
    """Steady when, over the last `window_s`: the temperature's slope is under 0.5 °C/min and it
    wanders less than 1 °C around that line (an oscillation is not a steady state), and system
    power varies by less than 5 % (coefficient of variation). Without a temperature sensor there
    is no steady state to find: the warm-up runs to its time bound."""
    t_win = [(t, v) for t, v in temps if t >= now - window_s]
    p_win = [v for t, v in powers if t >= now - window_s]
    cv = None
    if len(p_win) >= 2:
        m = sum(p_win) / len(p_win)
        sd = math.sqrt(sum((p - m) ** 2 for p in p_win) / len(p_win))
        cv = sd / m if m > 0 else None
    if not temps:
        return Steady(False, "no temperature sensor: the time bound alone", power_cv=cv)
    if len(t_win) < 3 or t_win[0][0] > now - 0.8 * window_s:
        return Steady(False, f"less than {window_s:g} s of temperature yet", power_cv=cv)
    slope, sd = _fit(t_win)
    per_min = slope * 60
    why = []
    if abs(per_min) > MAX_SLOPE_C_PER_MIN:
        why.append(f"temperature moving {per_min:+.2f} °C/min")
    if sd > MAX_TEMP_SD_C:
        why.append(f"temperature swinging ±{sd:.1f} °C")
    if cv is not None and cv > MAX_POWER_CV:
        why.append(f"power varying {100 * cv:.0f} %")
    return Steady(not why, "; ".join(why) or "steady", per_min, sd, cv)


class Watch:
    """A bus sink keeping the last minutes of the hottest temperature and system power."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.lock = threading.Lock()
        self.index = ChannelIndex()  # the channels in Sample order, as every sink keeps them
        self.temp_i: list[int] = []
        self.power_i: int | None = None
        self.temps: deque[tuple[float, float]] = deque(maxlen=6000)
        self.powers: deque[tuple[float, float]] = deque(maxlen=6000)
        self._add(channels)

    def _add(self, chans: Sequence[Channel]) -> None:
        for i in self.index.add(chans):
            if self.index.channels[i].kind == "temperature":
                self.temp_i.append(i)
        self.power_i = self.index.position("system.power")

    def __call__(self, rec: Record) -> None:
        if isinstance(rec, ChannelsAdded):
            with self.lock:
                self._add(rec.channels)
            return
        if not isinstance(rec, Sample):
            return
        t = rec.t / 1e9
        value = self.index.value
        hot = [v for v in (value(rec.values, i) for i in self.temp_i) if v is not None]
        p = value(rec.values, self.power_i)
        with self.lock:
            if hot:
                self.temps.append((t, max(hot)))
            if p is not None:
                self.powers.append((t, p))

    def now_temp(self) -> float | None:
        """The hottest temperature channel's last reading, in °C; None before any."""
        with self.lock:
            return self.temps[-1][1] if self.temps else None

    def steady(self, now: float) -> Steady:
        """`steady_state` of the kept temperatures and system power at `now` (session s)."""
        with self.lock:
            return steady_state(list(self.temps), list(self.powers), now)


@dataclass
class SweepOptions:
    """How a sweep runs: each segment's `segment_s` (s), `repeats` of every treatment, the
    warm-up's bound `warmup_s` (s), the wait for the temperature to come back before a segment
    `cooldown_s` (s, 0: none), the shuffle's `seed`, the whole sweep's `max_s` (s; None: no
    extra repeats) and the overhead budget `budget_pct` (% of tok/s and J/token,
    `analysis.sweep.decide`).
    """

    segment_s: float = 20.0
    repeats: int = 3
    warmup_s: float = 60.0
    cooldown_s: float = 10.0
    seed: int = 1
    max_s: float | None = None  # the whole sweep's time limit: extra repeats up to it
    budget_pct: float = 2.0  # what the extra repeats decide against


class Folded:
    """A bus sink folding the session's records into segments (`SegmentFold`), locked."""

    def __init__(self, header: Any) -> None:
        from anubis_tui.analysis.segments import SegmentFold

        self.lock = threading.Lock()
        self.fold = SegmentFold()
        self.fold.consume(header)

    def __call__(self, rec: Record) -> None:
        with self.lock:
            self.fold.consume(rec)

    def figures(self) -> list[Any]:
        """The segments' Figures so far (`SegmentFold.figures`), taken under the lock."""
        with self.lock:
            return self.fold.figures()


class Sweep:
    """Runs a sweep on a started session, through its control surface only
    (`session.surface.ControlSurface`: no bus, no sampler, no profiler controller)."""

    def __init__(
        self,
        surface: ControlSurface,
        items: list[Treatment],
        opts: SweepOptions,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.s = surface
        self.items = items
        self.opts = opts
        self.say = say
        self.base = dict(surface.knob_values())
        self.watch = Watch(surface.channels)
        surface.add_sink(self.watch)
        self.target_c: float | None = None
        self._profiling = False
        self.folded: Folded | None = None
        if opts.max_s:
            self.folded = Folded(surface.header)
            surface.add_sink(self.folded)

    def _now(self) -> float:
        return self.s.now_ns() / 1e9

    def _wait(self, seconds: float, stop: threading.Event) -> str | None:
        end = time.monotonic() + seconds
        while not stop.wait(min(0.2, max(0.0, end - time.monotonic()))):
            if not self.s.worker_alive() and self.s.worker_error:
                return self.s.worker_error
            if time.monotonic() >= end:
                return None
        return "stopped"

    def run(self, stop: threading.Event) -> str | None:
        """The whole sweep; None when it ran to the end, else why it ended early."""
        err = self.s.wait_loaded()
        if err:
            return err
        self._leave_out_unrunnable()
        if not self.items:
            return "no treatment can run here"
        order = schedule(self.items, self.opts.repeats, self.opts.seed)
        self._announce(order)
        started = time.monotonic()
        why = self._warmup(stop) or self._planned(order, stop)
        if why is None and self.folded is not None and self.opts.max_s:
            why = self._extra(len(order), started, stop)
        if why:
            return why
        self._apply(None)
        return None

    def _leave_out_unrunnable(self) -> None:
        """A profiler that cannot run here is found out now, not in the middle of a segment
        (scalene's check runs a test worker: it would disturb the baseline beside it)."""
        for prof in sorted({t.profiler.profiler or "" for t in self.items if t.profiler}):
            why = self.s.profiler_check(prof)
            if why:
                self.say(f"{prof} left out: {why}")
                self.s.emit_event("sweep_skip", profiler=prof, reason=why)
                self.items = [
                    t for t in self.items if not t.profiler or t.profiler.profiler != prof
                ]

    def _announce(self, order: list[tuple[int, str, Treatment | None]]) -> None:
        """The ``sweep`` Event: what is compared, how often, in which order."""
        o = self.opts
        self.s.emit_event(
            "sweep",
            treatments=[t.name for t in self.items],
            repeats=o.repeats,
            seed=o.seed,
            segment_s=o.segment_s,
            warmup_s=o.warmup_s,
            cooldown_s=o.cooldown_s,
            base=self.base,
            order=[[r, role, t.name if t else "baseline"] for r, role, t in order],
        )

    def _planned(
        self, order: list[tuple[int, str, Treatment | None]], stop: threading.Event
    ) -> str | None:
        """The planned segments in `order`; None when they all ran."""
        for i, (r, role, t) in enumerate(order):
            if stop.is_set():
                return "stopped"
            name = t.name if t is not None else "baseline"
            self.say(f"[{i + 1}/{len(order)}] repeat {r + 1} {role} {name}")
            why = self._step(i, r, role, t, stop)
            if why:
                return why
        return None

    def _step(
        self, i: int, r: int, role: str, t: Treatment | None, stop: threading.Event
    ) -> str | None:
        name = t.name if t is not None else "baseline"
        msg, refused = self._apply(t)
        if msg:
            self.say(f"  {msg}")
        if refused:  # a setting that did not take would be measured as the baseline
            return f"{name} could not be set: {refused}"
        # After the change (its stop and reload belong to no step), the step's segment.
        self.s.emit_event("sweep_step", index=i, repeat=r, role=role, treatment=name)
        self._cooldown(stop)
        return self._wait(self.opts.segment_s, stop)

    def undecided(self) -> list[Treatment]:
        """Per profiler, its lowest rate not yet decided within budget, if inconclusive."""
        from anubis_tui.analysis.sweep import sweep_report

        assert self.folded is not None
        names = {"treatments": [t.name for t in self.items]}
        rep = sweep_report(self.folded.figures(), names, self.opts.budget_pct)
        out = []
        by_name = {t.name: t for t in self.items}
        for prof in sorted({row["profiler"] for row in rep["rows"] if row.get("profiler")}):
            rows = sorted(
                (row for row in rep["rows"] if row["profiler"] == prof),
                key=lambda row: row["rate_hz"] or 0,
            )
            first = next((row for row in rows if row.get("decision") != "within"), None)
            # only where more repeats can decide (segments too short to hold enough data
            # never will)
            if (
                first is not None
                and first.get("decision") == "inconclusive"
                and first.get("more_repeats")
            ):
                out.append(by_name[first["treatment"]])
        return out

    def _extra(self, i: int, started: float, stop: threading.Event) -> str | None:
        """Extra ``B T`` pairs for undecided rates, then a closing baseline, within max_s."""
        o = self.opts
        assert o.max_s is not None
        rng = random.Random(o.seed + 1)
        r = o.repeats
        pair_s = 2 * (o.segment_s + 2.0)  # two segments and their changes
        ran = False
        while not stop.is_set():
            todo = self.undecided()
            if not todo:
                self.say("every recommendation is decided")
                break
            if time.monotonic() - started + pair_s * len(todo) + o.segment_s > o.max_s:
                self.say(f"time limit: {len(todo)} rate(s) still inconclusive")
                break
            rng.shuffle(todo)
            self.s.emit_event("sweep_extra", repeat=r, treatments=[t.name for t in todo])
            for t in todo:
                self.say(f"[extra {r + 1}] baseline, then {t.name}")
                for role, tt in (("baseline", None), ("treatment", t)):
                    why = self._step(i, r, role, tt, stop)
                    i += 1
                    if why:
                        return why
            r += 1
            ran = True
        if ran:  # the last treatment gets a baseline after it, as in the plan
            return self._step(i, r - 1, "baseline", None, stop)
        return None

    def _warmup(self, stop: threading.Event) -> str | None:
        start = time.monotonic()
        st = Steady(False, "not started")
        while time.monotonic() - start < self.opts.warmup_s:
            why = self._wait(1.0, stop)
            if why:
                return why
            st = self.watch.steady(self._now())
            if st.reached:
                break
        took = time.monotonic() - start
        self.target_c = self.watch.now_temp()
        self.s.emit_event(
            "warmup",
            seconds=took,
            reached=st.reached,
            reason=st.reason,
            temp_c=self.target_c,
            temp_slope_c_per_min=st.temp_slope_c_per_min,
            temp_sd_c=st.temp_sd_c,
            power_cv=st.power_cv,
        )
        state = "steady" if st.reached else f"not steady ({st.reason})"
        self.say(f"warm-up: {took:.0f} s, {state}")
        return None

    def _cooldown(self, stop: threading.Event) -> None:
        """Wait, paused, until the temperature is back near the warm-up's (where it is known)."""
        if self.target_c is None or self.opts.cooldown_s <= 0:
            return
        temp = self.watch.now_temp()
        if temp is None or temp <= self.target_c + COOLDOWN_BAND_C:
            return
        self.s.pause()
        start = time.monotonic()
        while time.monotonic() - start < self.opts.cooldown_s and not stop.wait(0.5):
            temp = self.watch.now_temp()
            if temp is not None and temp <= self.target_c + COOLDOWN_BAND_C:
                break
        self.s.resume()
        reached = temp is not None and temp <= self.target_c + COOLDOWN_BAND_C
        self.s.emit_event(
            "cooldown",
            waited_s=time.monotonic() - start,
            reached=reached,
            temp_c=temp,
            target_c=self.target_c,
        )

    def _apply(self, t: Treatment | None) -> tuple[str, str]:
        """Put the session in treatment `t`'s setting (None: the baseline).

        Returns what the changes said, and the first refusal ("" when all took).
        """
        outcomes = []
        want = {**self.base, **(t.knobs if t is not None else {})}
        now = self.s.knob_values()
        for name, value in want.items():
            if value is not None and now.get(name) != value:
                outcomes.append(self.s.set_knob(name, value))
        if t is not None and t.profiler is not None:
            outcomes.append(self.s.profiler_apply(t.profiler))
        elif self._profiling:  # the baseline runs plain, never under scalene's launcher
            outcomes.append(self.s.profiler_plain())
        self._profiling = t is not None and t.profiler is not None
        refused = next((o.message for o in outcomes if not o.ok), "")
        return "; ".join(o.message for o in outcomes if o.message), refused
