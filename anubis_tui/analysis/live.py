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

from anubis_tui.analysis.rolling import JPT_WINDOW_NS, Rolling
from anubis_tui.analysis.segments import SETTING_EVENTS, Figures, SegmentFold
from anubis_tui.records import (
    Channel,
    ChannelIndex,
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
NOTIFY_KINDS = {
    "worker_died": "error",
    "sensor_lost": "warning",
    "sensor_back": "information",
    "recording_error": "error",
    "error": "error",
    "sink_error": "error",
    "profiler_error": "error",
    "connection_lost": "error",
    "implausible_reading": "warning",
}


@dataclass
class ChannelView:
    """One channel as a panel shows it: its latest `value` (SI units, None without a reading).

    For throttle channels: the canonical names `active` now and `occurred`
    since boot (`records.decode_flags`), and `share`, the fraction (0..1) of
    samples so far in which each flag name was lit.
    """

    channel: Channel
    value: float | None
    active: list[str]
    occurred: list[str]
    share: dict[str, float]


@dataclass
class Snapshot:
    """What the panels show in one frame, copied out of `LiveState` (not shared with it).

    Times: `t_s` (s since the session start), `ttft_ms`/`ttft_median_ms` (ms,
    the last request's and the median). Rates: `decode_tps` is tok/s "now"
    over `rolling.WINDOW_NS`, `prompt_tps` the last request's prompt tok/s.
    Power in W (`system_power`), energy in J (`energy_j`, the system energy
    counter since the start), `jpt_recent` J/token over `rolling.JPT_WINDOW_NS`.
    `history_*` hold one value per second, oldest first, at most `HISTORY_S`
    (NaN for a second without data): W, °C (hottest sensor) and tok/s.
    `self_cost` holds the sampler's rate (Hz) and jitter p99 (s), the CPU use in
    cores (1.0 = one core busy; psutil cpu_times deltas) of the sampler thread,
    anubis, the worker and the profiler, and a remote session's
    acknowledgement time (ms).
    """

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
    power: list[ChannelView]
    temps: list[ChannelView]
    throttle: list[ChannelView]
    throttle_warning: str | None
    self_cost: dict[str, float | None]
    history_power: list[float]
    history_temp: list[float]
    history_tps: list[float]
    history_marks: list[int]  # bins (seconds) where a segment or marker starts
    segment: Figures | None  # the current segment
    baseline: Figures | None  # what the current segment is compared with
    segments: list[Figures]  # every segment so far, oldest first (the same as `anubis report`)
    sampler_hz: float | None
    ended: bool
    knobs: dict[str, Any] = field(default_factory=dict)  # every knob's value now
    knob_state: dict[str, str] = field(default_factory=dict)  # why a knob can't change ("")
    counter_jpt: list[tuple[Channel, float | None]] = field(default_factory=list)
    # measured energy counters other than the system's (a GPU's), with J/token over 10 s
    quality: dict[str, Any] | None = None  # the current setting's ``quality`` Event payload
    quality_base: dict[str, Any] | None = None  # the baseline setting's (the starting knobs)
    # PPL(current)/PPL(baseline) and its 95 % interval (analysis.quality.ratio_interval)
    quality_vs: tuple[float, float, float] | None = None


class LiveState:
    """Folds records into what the panels show. Thread-safe: one lock around everything."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.header: Header | None = None
        self.channel_index = ChannelIndex()  # as every sink keeps it; the next two are its parts
        self.channels: list[Channel] = self.channel_index.channels
        self.index: dict[str, int] = self.channel_index.positions
        self.latest: list[float | None] = []
        self.flag_counts: dict[str, dict[str, int]] = {}
        self.flag_totals: dict[str, int] = {}
        self.t = 0
        self.tokens = 0
        self.requests = 0
        self.rolling = Rolling()  # tok/s and J/token "now" (analysis/rolling.py)
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
        self.segs = SegmentFold()
        self.ended = False
        self.energy_j: float | None = None
        self._energy_start: float | None = None
        self.sampler_hz: float | None = None
        self.knob_state: dict[str, str] = {}
        self.ack_ms: float | None = None  # a remote session's last key-to-acknowledgement time
        # Measured energy counters besides the system's: index → (t, joules, tokens) points.
        self.counter_points: dict[int, deque[tuple[int, float, int]]] = {}
        self.qualities: list[dict[str, Any]] = []  # ``quality`` Event payloads, in order
        self._quality_key: object = None
        self._quality: tuple[Any, Any, Any] = (None, None, None)

    # -- feeding ------------------------------------------------------------------

    def consume(self, rec: Record) -> None:
        """Fold one record under the lock."""
        with self.lock:
            self._consume(rec)

    def consume_many(self, recs: list[Record]) -> None:
        """Fold `recs` in order under one hold of the lock (a bus batch)."""
        with self.lock:
            for r in recs:
                self._consume(r)

    def _consume(self, rec: Record) -> None:
        self.segs.consume(rec)
        if isinstance(rec, Header):
            self.header = rec
            self.rolling.consume(rec)
            self._add_channels(rec.channels)
            return
        if isinstance(rec, ChannelsAdded):
            self._add_channels(rec.channels)
        t = getattr(rec, "t", self.t)
        self._advance_bins(t)  # bins close on what came before this record
        self.rolling.consume(rec)
        self.t = max(self.t, t)
        if isinstance(rec, Sample):
            self._sample(rec)
        elif isinstance(rec, Tokens):
            if rec.phase == "decode":
                self.tokens += rec.count
        elif isinstance(rec, Event):
            self._event(rec)
        elif isinstance(rec, Footer):
            self.ended = True

    def _add_channels(self, chans: list[Channel]) -> None:
        for i in self.channel_index.add(chans):
            c = self.channels[i]
            self.latest.append(None)
            if c.kind == "energy" and c.method == "counter" and c.id != "system.energy":
                self.counter_points[i] = deque()

    def _sample(self, rec: Sample) -> None:
        for i, v in enumerate(rec.values):
            if v is None or i >= len(self.channels) or not math.isfinite(v):
                continue  # no reading (NaN and ±inf are none either)
            self.latest[i] = v
            c = self.channels[i]
            if c.kind == "throttle":
                active, _ = decode_flags(c, int(v))
                counts = self.flag_counts.setdefault(c.id, {})
                self.flag_totals[c.id] = self.flag_totals.get(c.id, 0) + 1
                for name in active:
                    counts[name] = counts.get(name, 0) + 1
            elif c.kind == "temperature":
                self._bin_acc["temp"].append(v)
            elif c.id == "system.power":
                self._bin_acc["p"].append(v)
            elif c.id == "system.energy":
                if self._energy_start is None:
                    self._energy_start = v
                self.energy_j = v - self._energy_start
            elif c.id == "anubis.sampler.rate":
                self.sampler_hz = v
            elif i in self.counter_points:
                _push(self.counter_points[i], rec.t, v, self.tokens)

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
        elif e.kind == "marker" or e.kind in SETTING_EVENTS:
            self.marks.append(self._bin_idx)
        elif e.kind == "quality":
            self.qualities.append(p)
        if e.kind == "remote_ack" and isinstance(p.get("latency_ms"), int | float):
            self.ack_ms = float(p["latency_ms"])
        # Knob values are the segment fold's (it follows knobs and knob Events); what can
        # change here is only shown, so it is kept here.
        if e.kind == "knobs" and isinstance(p.get("state"), dict):
            self.knob_state = {str(k): str(v) for k, v in p["state"].items()}
        elif e.kind == "model_loaded" and p.get("gpu_offload") is False:
            self.knob_state["gpu_layers"] = "CPU-only build"

    def _advance_bins(self, t: int) -> None:
        idx = t // 1_000_000_000
        while self._bin_idx < idx:
            acc = self._bin_acc
            self.bins_power.append(statistics.fmean(acc["p"]) if acc["p"] else math.nan)
            self.bins_temp.append(max(acc["temp"]) if acc["temp"] else math.nan)
            # tok/s "now" at the bin's end: the panel's figure, one point a second
            tps = self.rolling.decode_tps(at=(self._bin_idx + 1) * 1_000_000_000 - 1)
            self.bins_tps.append(math.nan if tps is None else tps)
            self._bin_acc = {"p": [], "temp": [], "tok": []}
            self._bin_idx += 1
            if idx - self._bin_idx > HISTORY_S:  # a jump (seek): skip empty bins
                self._bin_idx = idx - HISTORY_S

    # -- reading ------------------------------------------------------------------

    def _decode_tps(self) -> float | None:
        return self.rolling.decode_tps()

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
        """The warning ("tok/s down N% while FLAGS active: …") when a throttle flag, idle aside, is
        lit now and tok/s now is under 90 % of the best 1 s bin of the last 30 s (after at
        least 10 s of history); None otherwise."""
        now_flags = sorted({a for v in throttle for a in v.active if a != "idle"})
        if not now_flags or tps is None or len(self.bins_tps) < 10:
            return None
        # seconds without tok/s (a load, a pause) are NaN: max() over them would depend on
        # their place, so they are left out
        recent = [b for b in list(self.bins_tps)[-30:] if not math.isnan(b)]
        recent_best = max(recent, default=0.0)
        if recent_best > 0 and tps < 0.9 * recent_best:
            drop = 100 * (1 - tps / recent_best)
            return (
                f"tok/s down {drop:.0f}% while {', '.join(now_flags)} active: "
                "throttled, not slower code"
            )
        return None

    def _setting_quality(
        self,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, tuple[float, float, float] | None]:
        """(the current setting's quality payload, the baseline setting's, their PPL ratio
        with its 95 % interval). A setting's perplexity is the ``quality`` Event of its model
        file and KV type (`analysis.quality.match`); the baseline setting is the knobs the
        session started with. Worked out again only when a quality Event or a knob came."""
        if not self.qualities:
            return None, None, None
        knobs = self.segs.knobs
        base_knobs = self.segs.initial_knobs or knobs
        key = (len(self.qualities), repr(knobs), repr(base_knobs))
        if key != self._quality_key:
            from anubis_tui.analysis.quality import match, ratio_interval  # scipy: only here

            cur, base = match(knobs, self.qualities), match(base_knobs, self.qualities)
            vs = ratio_interval(cur, base) if cur and base and cur is not base else None
            self._quality_key, self._quality = key, (cur, base, vs)
        return self._quality

    def snapshot(self) -> Snapshot:
        """Everything the panels show now, copied under the lock (see `Snapshot` for units)."""
        with self.lock:
            tps = self._decode_tps()
            throttle = self._views("throttle")
            sys_ch = next((c for c in self.channels if c.id == "system.power"), None)
            jpt_recent = self.rolling.j_per_token()
            counter_jpt = [
                (self.channels[i], _window_jpt(p)) for i, p in self.counter_points.items()
            ]
            segments = self.segs.figures()
            current = segments[-1] if segments else None
            baseline = None
            if current is not None and current.baseline_index is not None:
                baseline = next(f for f in segments if f.index == current.baseline_index)

            quality, quality_base, quality_vs = self._setting_quality()

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
                    "ack_ms": self.ack_ms,
                },
                history_power=list(self.bins_power),
                history_temp=list(self.bins_temp),
                history_tps=list(self.bins_tps),
                history_marks=[m - (self._bin_idx - len(self.bins_tps)) for m in self.marks],
                segment=current,
                baseline=baseline,
                segments=segments,
                sampler_hz=self.sampler_hz,
                ended=self.ended,
                knobs=dict(self.segs.knobs),
                knob_state=dict(self.knob_state),
                counter_jpt=counter_jpt,
                quality=quality,
                quality_base=quality_base,
                quality_vs=quality_vs,
            )

    def new_events(self, since: int) -> tuple[list[Event], int]:
        """Events from index `since` on, and the index to pass next time."""
        with self.lock:
            return self.events[since:], len(self.events)


def _push(points: deque[tuple[int, float, int]], t: int, joules: float, tokens: int) -> None:
    """An energy reading and the decode tokens so far, keeping the last `JPT_WINDOW_NS`."""
    points.append((t, joules, tokens))
    while points and points[0][0] < t - JPT_WINDOW_NS:
        points.popleft()


def _window_jpt(points: deque[tuple[int, float, int]]) -> float | None:
    """J/token between the window's first and last reading (None without tokens between)."""
    if len(points) < 2 or points[-1][2] <= points[0][2]:
        return None
    (_, e0, n0), (_, e1, n1) = points[0], points[-1]
    return (e1 - e0) / (n1 - n0)


def fmt(v: Any, spec: str = ".1f", unit: str = "") -> str:
    """`v` formatted with `spec` and `unit`, or "—" for None and NaN (no reading)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:{spec}}{unit}"


def recorded_rate_hz(header: Header | None) -> float | None:
    """The sampling rate a recording was made at (its Header's config), for a replay."""
    rate = (header.config or {}).get("rate_hz") if header is not None else None
    return float(rate) if isinstance(rate, int | float) and rate > 0 else None
