"""Live state: what the monitor shows, folded incrementally from records.

The UI never reads a sensor or a pipe: it reads a `LiveState` that live
sessions and replays feed with the very same records. `consume` is cheap
(called for every record); `snapshot` is taken by the UI at its own frame
rate. Charts use one bin per second so they redraw at most once a second.
Everything here runs headless.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from anubis_tui.analysis.overhead import (
    MIN_SECONDS,
    MIN_TOKENS,
    PROFILER_EVENTS,
    segment_setting,
)
from anubis_tui.records import (
    Channel,
    ChannelsAdded,
    Event,
    Footer,
    Header,
    Record,
    Sample,
    Tokens,
    decode_flags,
)

HISTORY_S = 600
RATE_WINDOW_NS = 2_000_000_000
JPT_WINDOW_NS = 10_000_000_000
NOTIFY_KINDS = {
    "worker_died": "error",
    "sensor_lost": "warning",
    "sensor_back": "information",
    "recording_error": "error",
    "error": "error",
    "sink_error": "error",
    "profiler_error": "error",
}


@dataclass
class SegmentAcc:
    """Running figures of one profiler setting (a segment)."""

    profiler: str | None
    rate_hz: float | None
    start_ns: int
    end_ns: int = 0
    tokens: int = 0
    first_token_ns: int | None = None  # rate counts from here: a model load is not decode time
    energy0: float | None = None
    energy1: float | None = None
    power_sum: float = 0.0
    power_sq: float = 0.0
    power_n: int = 0
    temp_max: float | None = None
    tps_bins: list[float] = field(default_factory=list)
    throttled: set[str] = field(default_factory=set)
    profiler_cpu: list[float] = field(default_factory=list)
    samples_collected: int | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end_ns - self.start_ns) / 1e9)

    @property
    def decode_tps(self) -> float | None:
        if self.first_token_ns is None or self.tokens < 2:
            return None
        span = (self.end_ns - self.first_token_ns) / 1e9
        return self.tokens / span if span > 0 else None

    @property
    def tps_spread(self) -> float | None:
        return statistics.pstdev(self.tps_bins) if len(self.tps_bins) >= 2 else None

    @property
    def power_w(self) -> float | None:
        return self.power_sum / self.power_n if self.power_n else None

    @property
    def power_spread(self) -> float | None:
        if self.power_n < 2:
            return None
        m = self.power_sum / self.power_n
        return math.sqrt(max(0.0, self.power_sq / self.power_n - m * m))

    @property
    def j_per_token(self) -> float | None:
        if self.energy0 is None or self.energy1 is None or not self.tokens:
            return None
        return (self.energy1 - self.energy0) / self.tokens

    @property
    def enough(self) -> bool:
        return self.seconds >= MIN_SECONDS and self.tokens >= MIN_TOKENS


@dataclass
class ChannelView:
    channel: Channel
    value: float | None
    active: list[str]
    occurred: list[str]
    share: dict[str, float]


@dataclass
class Snapshot:
    """An immutable-enough view for one frame."""

    t_s: float
    header: Header | None
    decode_tps: float | None
    prompt_tps: float | None
    ttft_ms: float | None
    ttft_median_ms: float | None
    requests: int
    tokens: int
    paused: bool
    system_power: float | None
    system_channel: Channel | None
    energy_j: float | None
    jpt_recent: float | None
    jpt_total: float | None
    power: list[ChannelView]
    temps: list[ChannelView]
    throttle: list[ChannelView]
    throttle_warning: str | None
    self_cost: dict[str, float | None]
    history_power: list[float]
    history_temp: list[float]
    history_tps: list[float]
    history_marks: list[int]  # bins (seconds) where a segment or marker starts
    segment: SegmentAcc | None
    baseline: SegmentAcc | None
    segments: list[SegmentAcc]
    sampler_hz: float | None
    ended: bool


class LiveState:
    """Folds records into what the panels show. Thread-safe: one lock around everything."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.header: Header | None = None
        self.channels: list[Channel] = []
        self.index: dict[str, int] = {}
        self.latest: list[float | None] = []
        self.flag_counts: dict[str, dict[str, int]] = {}
        self.flag_totals: dict[str, int] = {}
        self.t = 0
        self.tokens = 0
        self.requests = 0
        self.batches: deque[tuple[int, int]] = deque()  # (t, count) of recent decode batches
        self.jpt_points: deque[tuple[int, float, int]] = deque()  # (t, energy, tokens so far)
        self.ttfts: list[float] = []
        self.last_ttft: float | None = None
        self.last_prompt_tps: float | None = None
        self.paused = False
        self.events: list[Event] = []
        self.bins_power: deque[float] = deque(maxlen=HISTORY_S)
        self.bins_temp: deque[float] = deque(maxlen=HISTORY_S)
        self.bins_tps: deque[float] = deque(maxlen=HISTORY_S)
        self.marks: list[int] = []
        self._bin_idx = 0
        self._bin_acc: dict[str, list[float]] = {"p": [], "temp": [], "tok": []}
        self.segments: list[SegmentAcc] = [SegmentAcc(None, None, 0)]
        self.ended = False
        self.energy_j: float | None = None
        self._energy_start: float | None = None
        self.sampler_hz: float | None = None
        self.rate_event_hz: float | None = None

    # -- feeding ------------------------------------------------------------------

    def consume(self, rec: Record) -> None:
        with self.lock:
            self._consume(rec)

    def consume_many(self, recs: list[Record]) -> None:
        with self.lock:
            for r in recs:
                self._consume(r)

    def _consume(self, rec: Record) -> None:
        if isinstance(rec, Header):
            self.header = rec
            self._add_channels(rec.channels)
            return
        if isinstance(rec, ChannelsAdded):
            self._add_channels(rec.channels)
        t = getattr(rec, "t", self.t)
        self._advance_bins(t)
        self.t = max(self.t, t)
        seg = self.segments[-1]
        seg.end_ns = max(seg.end_ns, t)
        if isinstance(rec, Sample):
            self._sample(rec, seg)
        elif isinstance(rec, Tokens):
            if rec.phase == "decode":
                self.tokens += rec.count
                seg.tokens += rec.count
                if seg.first_token_ns is None:
                    seg.first_token_ns = rec.t_first
                self.batches.append((rec.t, rec.count))
                self._bin_acc["tok"].append(rec.count)
                while self.batches and self.batches[0][0] < rec.t - RATE_WINDOW_NS:
                    self.batches.popleft()
        elif isinstance(rec, Event):
            self._event(rec)
        elif isinstance(rec, Footer):
            self.ended = True

    def _add_channels(self, chans: list[Channel]) -> None:
        for c in chans:
            self.index[c.id] = len(self.channels)
            self.channels.append(c)
            self.latest.append(None)

    def _sample(self, rec: Sample, seg: SegmentAcc) -> None:
        for i, v in enumerate(rec.values):
            if v is None or i >= len(self.channels):
                continue
            self.latest[i] = v
            c = self.channels[i]
            if c.kind == "throttle":
                active, _ = decode_flags(c, int(v))
                counts = self.flag_counts.setdefault(c.id, {})
                self.flag_totals[c.id] = self.flag_totals.get(c.id, 0) + 1
                for name in active:
                    counts[name] = counts.get(name, 0) + 1
                    if name != "idle":
                        seg.throttled.add(name)
            elif c.kind == "temperature":
                self._bin_acc["temp"].append(v)
                seg.temp_max = v if seg.temp_max is None else max(seg.temp_max, v)
            elif c.id == "system.power":
                self._bin_acc["p"].append(v)
                seg.power_sum += v
                seg.power_sq += v * v
                seg.power_n += 1
            elif c.id == "system.energy":
                if self._energy_start is None:
                    self._energy_start = v
                self.energy_j = v - self._energy_start
                if seg.energy0 is None:
                    seg.energy0 = v
                seg.energy1 = v
                self.jpt_points.append((rec.t, v, self.tokens))
                while self.jpt_points and self.jpt_points[0][0] < rec.t - JPT_WINDOW_NS:
                    self.jpt_points.popleft()
            elif c.id == "anubis.sampler.rate":
                self.sampler_hz = v
            elif c.id == "proc.profiler.cpu":
                seg.profiler_cpu.append(v)

    def _event(self, e: Event) -> None:
        self.events.append(e)
        p = e.payload
        if e.kind == "request_end":
            self.requests += 1
            if p.get("ttft_ns"):
                self.last_ttft = p["ttft_ns"] / 1e6
                self.ttfts.append(self.last_ttft)
                if p.get("prompt_tokens"):
                    self.last_prompt_tps = p["prompt_tokens"] / (p["ttft_ns"] / 1e9)
        elif e.kind == "paused":
            self.paused = True
        elif e.kind == "resumed":
            self.paused = False
        elif e.kind == "rate":
            self.rate_event_hz = p.get("sampler_hz")
        elif e.kind == "marker":
            self.marks.append(self._bin_idx)
        elif e.kind in PROFILER_EVENTS:
            prof, rate = segment_setting(e)
            last = self.segments[-1]
            last.end_ns = e.t
            done = p.get("samples") if e.kind == "profiler_off" else p.get("previous_samples")
            if done is not None:
                last.samples_collected = int(done)
            self.segments.append(SegmentAcc(prof, rate, e.t))
            self.marks.append(self._bin_idx)

    def _advance_bins(self, t: int) -> None:
        idx = t // 1_000_000_000
        while self._bin_idx < idx:
            acc = self._bin_acc
            self.bins_power.append(statistics.fmean(acc["p"]) if acc["p"] else math.nan)
            self.bins_temp.append(max(acc["temp"]) if acc["temp"] else math.nan)
            self.bins_tps.append(float(sum(acc["tok"])))
            seg = self.segments[-1]
            seg.tps_bins.append(float(sum(acc["tok"])))
            self._bin_acc = {"p": [], "temp": [], "tok": []}
            self._bin_idx += 1
            if idx - self._bin_idx > HISTORY_S:  # a jump (seek): skip empty bins
                self._bin_idx = idx - HISTORY_S

    # -- reading ------------------------------------------------------------------

    def _decode_tps(self) -> float | None:
        if not self.batches or self.paused:
            return None
        horizon = self.t - RATE_WINDOW_NS
        n = sum(c for t, c in self.batches if t >= horizon)
        first = min((t for t, _ in self.batches if t >= horizon), default=None)
        if first is None or n < 2:
            return None
        span = max(self.t, self.batches[-1][0]) - horizon
        return n / (span / 1e9) if span > 0 else None

    def _views(self, kind: str) -> list[ChannelView]:
        out = []
        for c in self.channels:
            if c.kind != kind or c.meta.get("is_limit"):
                continue
            v = self.latest[self.index[c.id]]
            active, occurred = (
                decode_flags(c, int(v)) if kind == "throttle" and v is not None else ([], [])
            )
            share: dict[str, float] = {}
            if kind == "throttle" and self.flag_totals.get(c.id):
                tot = self.flag_totals[c.id]
                for name in dict.fromkeys(c.meta.get("flags", {}).values()):
                    share[name] = self.flag_counts.get(c.id, {}).get(name, 0) / tot
            out.append(ChannelView(c, v, active, occurred, share))
        return out

    def _throttle_warning(self, throttle: list[ChannelView], tps: float | None) -> str | None:
        now_flags = sorted({a for v in throttle for a in v.active if a != "idle"})
        if not now_flags or tps is None or len(self.bins_tps) < 10:
            return None
        recent_best = max(list(self.bins_tps)[-30:])
        if recent_best > 0 and tps < 0.9 * recent_best:
            drop = 100 * (1 - tps / recent_best)
            return (
                f"tok/s down {drop:.0f}% while {', '.join(now_flags)} active: "
                "throttled, not slower code"
            )
        return None

    def snapshot(self) -> Snapshot:
        with self.lock:
            tps = self._decode_tps()
            throttle = self._views("throttle")
            sys_ch = next((c for c in self.channels if c.id == "system.power"), None)
            jpt_recent = None
            if len(self.jpt_points) >= 2:
                (_, e0, n0), (_, e1, n1) = self.jpt_points[0], self.jpt_points[-1]
                if n1 > n0:
                    jpt_recent = (e1 - e0) / (n1 - n0)
            baseline = next(
                (s for s in reversed(self.segments[:-1]) if s.profiler is None and s.enough), None
            )
            if baseline is None and self.segments[-1].profiler is not None:
                baseline = next(
                    (s for s in reversed(self.segments[:-1]) if s.profiler is None), None
                )

            def val(cid: str) -> float | None:
                i = self.index.get(cid)
                return None if i is None else self.latest[i]

            return Snapshot(
                t_s=self.t / 1e9,
                header=self.header,
                decode_tps=tps,
                prompt_tps=self.last_prompt_tps,
                ttft_ms=self.last_ttft,
                ttft_median_ms=statistics.median(self.ttfts) if self.ttfts else None,
                requests=self.requests,
                tokens=self.tokens,
                paused=self.paused,
                system_power=val("system.power"),
                system_channel=sys_ch,
                energy_j=self.energy_j,
                jpt_recent=jpt_recent,
                jpt_total=(self.energy_j / self.tokens)
                if self.energy_j is not None and self.tokens
                else None,
                power=[v for v in self._views("power") if v.channel.id != "system.power"],
                temps=self._views("temperature"),
                throttle=throttle,
                throttle_warning=self._throttle_warning(throttle, tps),
                self_cost={
                    "rate_hz": val("anubis.sampler.rate"),
                    "jitter_p99_s": val("anubis.sampler.jitter_p99"),
                    "sampler_cpu": val("anubis.sampler.cpu"),
                    "anubis_cpu": val("proc.self.cpu"),
                    "worker_cpu": val("proc.worker.cpu"),
                    "profiler_cpu": val("proc.profiler.cpu"),
                },
                history_power=list(self.bins_power),
                history_temp=list(self.bins_temp),
                history_tps=list(self.bins_tps),
                history_marks=[m - (self._bin_idx - len(self.bins_tps)) for m in self.marks],
                segment=self.segments[-1],
                baseline=baseline,
                segments=list(self.segments),
                sampler_hz=self.sampler_hz,
                ended=self.ended,
            )

    def new_events(self, since: int) -> tuple[list[Event], int]:
        with self.lock:
            return self.events[since:], len(self.events)


def fmt(v: Any, spec: str = ".1f", unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:{spec}}{unit}"
