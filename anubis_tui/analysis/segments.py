"""One segment arithmetic for the live panel, replay and `anubis report`.

A *segment* is an interval with one setting (profiler and rate, later the
knobs). It starts at every setting Event (``profiler_on``, ``profiler_off``,
``profiler_rate``, ``profiler_ready``, ``knob``). `SegmentFold` folds records
in time order into running figures; the live state feeds it record by record,
the report feeds it a whole recording. Both read the figures through
`figures`, so the screen and the report cannot disagree.

Definitions (each figure has exactly one):

* **Active time.** Time without inference belongs to no segment's figures:
  the model load, a reload, a pause, a dead worker and the gap before the
  first token. A segment's active *pieces* start at the first decode token
  after the segment starts or after a gap (``paused``, ``worker_restart``,
  ``worker_died``, ``worker_stopped``) and end at the next gap or the end of
  the segment.
* **Decode tok/s** = Σ(n − 1) / Σ(last − first stamp) over the pieces of each
  request inside the segment: the worker's own stamps, prompt processing and
  gaps excluded (the same definition as `anubis bench`).
* **Energy and J/token.** The system energy channel is read at its first
  reading inside a piece and at its last reading before the piece's last
  token batch; J/token = that ΔE ÷ the decode tokens stamped between those
  two readings. Counters are used wherever the machine has them.
* **Measured J/token**: the same windows over the sum of the energy counters
  of the system power's measured meters (`measured_counters`: estimated
  parts, such as a CPU estimated from its load, are left out). It leads
  wherever it exists; the system figure, estimate included, follows labelled.
* **Power, °C, throttle, profiler CPU**: system power mean (and spread),
  the maximum temperature, each throttle flag's share of readings and the
  profiler process's mean CPU, over the samples inside active pieces.
* **Enough data**: ≥ `MIN_SECONDS` of active decode time and
  ≥ `MIN_TOKENS` decode tokens, and no worker death in the segment.
* **Baseline**: the nearest segment in time (by midpoint) with no profiler,
  the same knobs, enough data, and the same throttling: every flag (other
  than ``idle``) active in a share of readings within 10 points of the
  segment's. A throttled baseline compared with an unthrottled segment (or
  the reverse) is no comparison: without a fair baseline the delta is
  absent and `not_comparable` names the flags.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anubis_tui.profilerspec import ProfilerSetting, segment_label
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

SETTING_EVENTS = (
    "profiler_on",
    "profiler_off",
    "profiler_rate",
    "profiler_ready",
    "knob",
    "sweep_step",
)
KNOBS_EVENT = "knobs"  # every knob's value (no change): at the start and after each change
GAP_EVENTS = ("paused", "worker_restart", "worker_died", "worker_stopped")
MIN_SECONDS = 3.0
MIN_TOKENS = 50
FRAMES_EVENT = "profiler_frames"

DEFINITIONS = {
    "decode_tps": "Σ(tokens−1)/Σ(last−first token stamp) per request, active time only",
    "power_w": "mean system power over samples in active time",
    "j_per_token": "Δ system energy between the first and last reading in active time "
    "÷ decode tokens between them",
    "j_per_decode_token": "mean system power ÷ decode tok/s: J/token over the same decode "
    "time as tok/s (the live panel's ΔJ/tok)",
    "temp_max_c": "max of every temperature channel in active time",
    "delta": "a profiler segment against the nearest fair baseline (no profiler, same knobs, "
    "enough data, each throttle flag's share within 10 points); a segment a knob change "
    "started against the segment before it with enough data",
    "setting": "one full setting: every knob and the profiler; its figures merge its segments",
    "pareto": "no other setting is as good on tok/s and J/token and better beyond the noise "
    "(its ±90% interval) on one",
    "enough_data": f"≥ {MIN_SECONDS:g} s active and ≥ {MIN_TOKENS} decode tokens, no worker death",
}


def segment_setting(e: Event) -> tuple[str | None, float | None]:
    """The (profiler, rate) a setting Event starts; (None, None) is the baseline.

    ``py-spy --native`` is named apart (a different cost from nonblocking
    py-spy); a profiler_off that leaves scalene loaded names that state.
    """
    p = e.payload
    if e.kind == "profiler_off":
        ready = p.get("ready")
        return (ready if isinstance(ready, str) and ready else None), None
    prof = p.get("profiler")
    if not isinstance(prof, str) or not prof:
        return None, None
    native = p.get("mode") == "native"
    return ProfilerSetting(prof, 0.0, native).segment_profiler, _num(p.get("rate_hz"))


def _canon(v: Any) -> Any:
    """300.0 and 300 are one knob value."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _num(v: Any) -> float | None:
    """A finite number as float; None for anything else (no reading, or a bad value)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


# Knob names as segment names write them, in the order they are written.
KNOB_SHORT = {
    "threads": "threads",
    "gpu_layers": "ngl",
    "n_batch": "batch",
    "flash_attn": "fa",
    "kv_type": "kv",
    "model": "model",
    "power_limit_w": "limit",
    "cpu_max_mhz": "cpumax",
    "nvpmodel": "nvp",
}


def show_knob(name: str, value: Any) -> str:
    """A knob's value as the panel, the report and segment names write it."""
    if value is None:
        return "—"
    if name == "gpu_layers":
        return "all" if value == -1 else str(value)
    if name == "flash_attn":
        return "on" if value else "off"
    if name == "power_limit_w" and isinstance(value, int | float):
        return f"{value:g}W"
    if name == "cpu_max_mhz":
        return f"{value}MHz"
    if name == "model":
        base = str(value).replace("\\", "/").rsplit("/", 1)[-1]
        return base[:-5] if base.lower().endswith(".gguf") else base
    return str(value)


def setting_name(
    profiler: str | None,
    rate_hz: float | None,
    knobs: dict[str, Any] | None = None,
    initial: dict[str, Any] | None = None,
) -> str:
    """``baseline``, ``py-spy@100``, ``threads=1``, ``ngl=9 limit=300W py-spy@100``: the knobs
    named are those that differ from the session's start."""
    parts = []
    if knobs and initial is not None:
        order = [k for k in KNOB_SHORT if k in knobs] + sorted(set(knobs) - set(KNOB_SHORT))
        for k in order:
            if knobs.get(k) != initial.get(k):
                parts.append(f"{KNOB_SHORT.get(k, k)}={show_knob(k, knobs.get(k))}")
    if profiler is not None:
        parts.append(segment_label(profiler, rate_hz) or profiler)
    return " ".join(parts) or "baseline"


@dataclass
class _Acc:
    """Sums of one segment; the figures are derived from these."""

    dec_n: int = 0  # Σ(n − 1) over closed request pieces
    dec_ns: int = 0  # Σ(last − first) over closed request pieces
    piece_tps: list[float] = field(default_factory=list)
    energy_j: float = 0.0  # Σ ΔE over closed energy windows
    energy_tokens: int = 0
    energy_windows: int = 0
    meas_j: float = 0.0  # the same over the measured meters only (`measured_counters`)
    meas_tokens: int = 0
    meas_windows: int = 0
    power_sum: float = 0.0
    power_sq: float = 0.0
    power_n: int = 0
    temp_max: float | None = None
    flag_hits: dict[str, int] = field(default_factory=dict)
    flag_n: dict[str, int] = field(default_factory=dict)
    cpu_sum: float = 0.0
    cpu_n: int = 0


@dataclass
class Segment:
    """One setting over time, with its running sums (see the module docstring)."""

    index: int
    profiler: str | None
    rate_hz: float | None
    start_ns: int
    knobs: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, Any] | None = None  # the session's knobs at its start (for the name)
    cause: str | None = None  # "knob" when a knob change started it, "profiler", None
    tags: dict[str, Any] = field(default_factory=dict)  # a sweep step's role, repeat, treatment
    artifact: str | None = None  # the profiler's output file, named when it stopped
    # A sweep makes its change, then says which step it is: the segment between the change
    # and the sweep_step (a profiler stopping, a reload) is a sliver, no setting tried.
    sliver: bool = False
    end_ns: int = 0
    load_s: float | None = None  # model (re)loads in the segment: kept out of its figures
    tokens: int = 0  # decode tokens stamped in the segment's active time
    died: bool = False
    samples: int | None = None
    hot_frames: list[dict[str, Any]] = field(default_factory=list)
    acc: _Acc = field(default_factory=_Acc)
    # The open request piece: request id → [first stamp, last stamp, tokens].
    _req: list[int] | None = None
    _req_id: int | None = None
    # The open energy window: (energy, cumulative tokens) at its first reading,
    # and the latest mark taken at a token batch.
    _e0: tuple[float, int] | None = None
    _e1: tuple[float, int] | None = None
    _m0: tuple[float, int] | None = None  # the same for the measured meters' energy
    _m1: tuple[float, int] | None = None

    @property
    def baseline(self) -> bool:
        """Whether no profiler ran in this segment (knobs may differ from the start)."""
        return self.profiler is None

    @property
    def name(self) -> str:
        """The setting's name as every view prints it (`setting_name`: ``baseline``,
        ``py-spy@100``, ``threads=1``…).
        """
        return setting_name(self.profiler, self.rate_hz, self.knobs, self.initial)

    @property
    def key(self) -> tuple[Any, ...]:
        """One full setting: profiler, rate and every knob."""
        return (
            self.profiler,
            self.rate_hz,
            tuple(sorted((k, repr(_canon(v))) for k, v in self.knobs.items())),
        )


@dataclass
class Figures:
    """What a segment shows: every number the panel, replay and report print."""

    index: int
    name: str
    profiler: str | None
    rate_hz: float | None
    knobs: dict[str, Any]
    start_s: float
    end_s: float
    active_s: float
    decode_tokens: int
    decode_tps: float | None
    tps_spread: float | None  # std of the per-request tok/s
    power_w: float | None
    power_std_w: float | None
    energy_j: float | None
    j_per_token: float | None
    temp_max_c: float | None
    throttle_share: dict[str, float]
    profiler_cpu: float | None
    samples: int | None
    hot_frames: list[dict[str, Any]]
    died: bool
    enough_data: bool
    delta: dict[str, Any] | None = None
    baseline_index: int | None = None
    not_comparable: str | None = None
    cause: str | None = None
    load_s: float | None = None
    segments: int = 1  # how many segments a setting's figures merge
    pareto: bool = False
    # J/token over the measured meters only (None: no measured meter; see measured_counters)
    j_per_token_measured: float | None = None
    # 90 % half-widths of a setting's tok/s and J/token (`SegmentFold.settings` only)
    tps_ci: float | None = None
    jpt_ci: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None

    @property
    def baseline(self) -> bool:
        """Whether no profiler ran in this segment."""
        return self.profiler is None

    @property
    def flags(self) -> frozenset[str]:
        """The throttle flags active in any reading of the segment (``idle`` left out)."""
        return frozenset(f for f, s in self.throttle_share.items() if s > 0 and f != "idle")

    def plain(self) -> dict[str, Any]:
        """The figures as JSON types for ``report --json``: the fields by name (units as named:
        ``_s``, ``_w``, ``_j``, ``_c``), `died` as ``worker_died``; the index and baseline
        index are left out.
        """
        return {
            "name": self.name,
            "profiler": self.profiler,
            "rate_hz": self.rate_hz,
            "knobs": self.knobs,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "active_s": self.active_s,
            "decode_tps": self.decode_tps,
            "tps_spread": self.tps_spread,
            "decode_tokens": self.decode_tokens,
            "power_w": self.power_w,
            "power_std_w": self.power_std_w,
            "energy_j": self.energy_j,
            "j_per_token": self.j_per_token,
            "temp_max_c": self.temp_max_c,
            "throttle_share": self.throttle_share,
            "profiler_cpu": self.profiler_cpu,
            "samples": self.samples,
            "hot_frames": self.hot_frames,
            "worker_died": self.died,
            "enough_data": self.enough_data,
            "delta": self.delta,
            "not_comparable": self.not_comparable,
            "cause": self.cause,
            "load_s": self.load_s,
            "segments": self.segments,
            "pareto": self.pareto,
            "j_per_token_measured": self.j_per_token_measured,
            "tps_ci": self.tps_ci,
            "jpt_ci": self.jpt_ci,
            "tags": self.tags,
            "artifact": self.artifact,
        }


class SegmentFold:
    """Folds records (in time order) into segments. Not thread-safe: its owner locks."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self._power_i = self._energy_i = self._cpu_i = -1
        self._temp_i: list[int] = []
        self._throttle: list[tuple[int, Channel]] = []
        self._flag_cache: dict[int, dict[int, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
        self.segments: list[Segment] = [Segment(0, None, None, 0)]
        self.knobs: dict[str, Any] = {}
        self.initial_knobs: dict[str, Any] | None = None
        self._knob_changed = False
        self.t = 0
        self.active = False  # inside an active piece (a decode token came since the last gap)
        self.tokens_cum = 0  # decode tokens since the start: marks energy windows
        self._tokens_at_energy = 0
        self._energy_latest: float | None = None
        self._meas_i: list[int] = []  # the measured meters' energy counters
        self._tokens_at_meas = 0
        self._meas_latest: float | None = None
        self.ended = False

    # -- feeding --------------------------------------------------------------------------

    def consume(self, rec: Record) -> None:
        """Fold one record, in time order: a Header sets the channels (feed it first), a setting
        Event (`SETTING_EVENTS`: a profiler or knob change, a sweep step) starts a new
        segment, and a Footer closes the last one.
        """
        if isinstance(rec, Header):
            self._add_channels(rec.channels)
            ids = {c.id: i for i, c in enumerate(self.channels)}
            self._meas_i = [ids[c] for c in measured_counters(rec) if c in ids]
            return
        kind = type(rec)  # records are final dataclasses: `is` is the cheap isinstance
        if kind is ChannelsAdded:
            self._add_channels(rec.channels)  # type: ignore[union-attr]
        t = rec.t  # every record but the Header (above) has a stamp
        if t > self.t:
            self.t = t
        seg = self.segments[-1]
        if self.t > seg.end_ns:
            seg.end_ns = self.t
        if kind is Tokens:
            if rec.phase == "decode":  # type: ignore[union-attr]
                self._tokens(rec, seg)  # type: ignore[arg-type]
        elif kind is Sample:
            self._sample(rec, seg)  # type: ignore[arg-type]
        elif kind is Event:
            self._event(rec, seg)  # type: ignore[arg-type]
        elif kind is Footer:
            self._close_piece(seg)
            self.ended = True

    def consume_all(self, records: Iterable[Record]) -> SegmentFold:
        """`consume` every record of `records`; returns this fold, for chaining."""
        for r in records:
            self.consume(r)
        return self

    def _add_channels(self, chans: Sequence[Channel]) -> None:
        for c in chans:
            i = len(self.channels)
            self.channels.append(c)
            if c.id == "system.power":
                self._power_i = i
            elif c.id == "system.energy":
                self._energy_i = i
            elif c.id == "proc.profiler.cpu":
                self._cpu_i = i
            elif c.kind == "temperature":
                self._temp_i.append(i)
            elif c.kind == "throttle":
                self._throttle.append((i, c))

    def _flags(self, i: int, c: Channel, mask: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(every flag name of the channel, those lit in `mask`), cached: masks repeat."""
        cache = self._flag_cache.setdefault(i, {})
        hit = cache.get(mask)
        if hit is None:
            active, _ = decode_flags(c, mask)
            names = tuple(dict.fromkeys(c.meta.get("flags", {}).values()))
            hit = (names, tuple(n for n in names if n in active))
            if len(cache) < 4096:
                cache[mask] = hit
        return hit

    @staticmethod
    def _at(values: list[Any], i: int) -> float | None:
        return _num(values[i]) if 0 <= i < len(values) else None

    def _sample(self, rec: Sample, seg: Segment) -> None:
        vals = rec.values
        e = self._at(vals, self._energy_i)
        if e is not None:
            self._energy_latest = e
            self._tokens_at_energy = self.tokens_cum
            if self.active and seg._e0 is None:
                seg._e0 = (e, self.tokens_cum)
        if self._meas_i:
            ms = [self._at(vals, i) for i in self._meas_i]
            if all(m is not None for m in ms):
                m = sum(x for x in ms if x is not None)
                self._meas_latest = m
                self._tokens_at_meas = self.tokens_cum
                if self.active and seg._m0 is None:
                    seg._m0 = (m, self.tokens_cum)
        if not self.active:
            return
        a = seg.acc
        p = self._at(vals, self._power_i)
        if p is not None:
            a.power_sum += p
            a.power_sq += p * p
            a.power_n += 1
        for i in self._temp_i:
            v = self._at(vals, i)
            if v is not None and (a.temp_max is None or v > a.temp_max):
                a.temp_max = v
        for i, c in self._throttle:
            v = self._at(vals, i)
            if v is None or not 0 <= v < 2**64:
                continue
            names, active = self._flags(i, c, int(v))
            for name in names:
                a.flag_n[name] = a.flag_n.get(name, 0) + 1
            for name in active:
                a.flag_hits[name] = a.flag_hits.get(name, 0) + 1
        cpu = self._at(vals, self._cpu_i)
        if cpu is not None:
            a.cpu_sum += cpu
            a.cpu_n += 1

    def _tokens(self, rec: Tokens, seg: Segment) -> None:
        if not self.active:
            self.active = True
            # The first reading of this piece comes with the next sample.
        count = rec.count
        if rec.t_first < seg.start_ns < rec.t:
            # A batch across the segment's start: only its share after the start is ours.
            count = round(count * (rec.t - seg.start_ns) / (rec.t - rec.t_first))
        if seg._req_id != rec.request:
            self._close_request(seg)
            seg._req_id = rec.request
            seg._req = [max(rec.t_first, seg.start_ns), rec.t, 0]
        assert seg._req is not None
        seg._req[1] = rec.t
        seg._req[2] += count
        seg.tokens += count
        self.tokens_cum += rec.count
        if seg._e0 is not None and self._energy_latest is not None:
            # The latest reading precedes this batch: tokens up to that reading.
            seg._e1 = (self._energy_latest, self._tokens_at_energy)
        if seg._m0 is not None and self._meas_latest is not None:
            seg._m1 = (self._meas_latest, self._tokens_at_meas)

    def _frames_target(self, e: Event, seg: Segment) -> Segment:
        """The segment a profiler's findings belong to.

        Live findings belong to the current segment. Final ones can come after the
        segment ended (scalene writes its profile only once stopped): they belong
        to the latest segment that ran that profiler.
        """
        prof = e.payload.get("profiler")
        if not e.payload.get("final") or not isinstance(prof, str):
            return seg
        for s in reversed(self.segments):
            if s.profiler is not None and s.profiler.split(" ")[0] == prof:
                return s
        return seg

    def _close_request(self, seg: Segment) -> None:
        r = seg._req
        if r is not None and r[2] >= 2 and r[1] > r[0]:
            seg.acc.dec_n += r[2] - 1
            seg.acc.dec_ns += r[1] - r[0]
            seg.acc.piece_tps.append((r[2] - 1) / ((r[1] - r[0]) / 1e9))
        seg._req = None
        seg._req_id = None

    def _close_energy(self, seg: Segment) -> None:
        if seg._e0 is not None and seg._e1 is not None:
            de, dn = seg._e1[0] - seg._e0[0], seg._e1[1] - seg._e0[1]
            if dn > 0:
                seg.acc.energy_j += de
                seg.acc.energy_tokens += dn
                seg.acc.energy_windows += 1
        if seg._m0 is not None and seg._m1 is not None:
            de, dn = seg._m1[0] - seg._m0[0], seg._m1[1] - seg._m0[1]
            if dn > 0:
                seg.acc.meas_j += de
                seg.acc.meas_tokens += dn
                seg.acc.meas_windows += 1
        seg._e0 = seg._e1 = seg._m0 = seg._m1 = None

    def _close_piece(self, seg: Segment) -> None:
        self._close_request(seg)
        self._close_energy(seg)
        self.active = False

    def _event(self, e: Event, seg: Segment) -> None:
        """One Event: a description (knobs, a load, findings), a gap, a request's end, or a
        setting change that starts a new segment."""
        if e.kind in SETTING_EVENTS:
            self._setting(e, seg)
        elif e.kind in GAP_EVENTS:
            if e.kind == "worker_died":
                seg.died = True
            self._close_piece(seg)
        elif e.kind == "request_end":
            self._close_request(seg)
        elif e.kind == KNOBS_EVENT:
            self._knobs(e, seg)
        elif e.kind == "model_loaded":
            ls = _num(e.payload.get("load_s"))
            if ls is not None and ls >= 0:
                seg.load_s = (seg.load_s or 0.0) + ls
        elif e.kind == FRAMES_EVENT:
            self._frames(e, seg)

    def _knobs(self, e: Event, seg: Segment) -> None:
        """Every knob's value: a description, not a change (no new segment)."""
        values = e.payload.get("values")
        if not isinstance(values, dict):
            return
        self.knobs.update({k: v for k, v in values.items() if isinstance(k, str)})
        if self.initial_knobs is None:
            self.initial_knobs = {}
            for old in self.segments:
                old.initial = self.initial_knobs
        if not self._knob_changed:  # still the start: what it was (device knobs come late)
            self.initial_knobs.update(self.knobs)
        seg.knobs = dict(self.knobs)

    def _frames(self, e: Event, seg: Segment) -> None:
        target = self._frames_target(e, seg)
        frames = e.payload.get("frames")
        if isinstance(frames, list):
            target.hot_frames = [f for f in frames if isinstance(f, dict)][:10]
        n = e.payload.get("samples")
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            target.samples = n

    def _new_setting(
        self, e: Event, seg: Segment
    ) -> tuple[str | None, float | None, str, dict[str, Any]]:
        """(profiler, rate, cause, tags) of the segment a setting Event starts."""
        if e.kind == "sweep_step":
            tags = {k: v for k, v in e.payload.items() if k in ("role", "repeat", "treatment")}
            return seg.profiler, seg.rate_hz, "sweep", tags
        if e.kind == "knob":
            name = e.payload.get("name")
            if isinstance(name, str):
                self.knobs[name] = e.payload.get("value")
            self._knob_changed = True
            return seg.profiler, seg.rate_hz, "knob", seg.tags
        prof, rate = segment_setting(e)
        return prof, rate, "profiler", seg.tags

    def _setting(self, e: Event, seg: Segment) -> None:
        """A setting Event: the segment ends here and the next one starts."""
        done = e.payload.get("samples", e.payload.get("previous_samples"))
        if isinstance(done, int) and not isinstance(done, bool) and done >= 0:
            seg.samples = done
        art = e.payload.get("artifact")
        if e.kind == "profiler_off" and isinstance(art, str) and art:
            seg.artifact = art
        prof, rate, cause, tags = self._new_setting(e, seg)
        was_active = self.active
        self._close_piece(seg)
        seg.end_ns = e.t
        if e.kind == "sweep_step" and not e.payload.get("chunk"):
            # every change since the last step was this step's making (compare's chunk cuts
            # are no step: the segment before one is whole)
            for s in reversed(self.segments):
                if s.cause not in ("knob", "profiler"):
                    break
                s.sliver = True
        new = Segment(
            len(self.segments),
            prof,
            rate,
            e.t,
            knobs=dict(self.knobs),
            initial=self.initial_knobs,
            cause=cause,
            tags=dict(tags),
        )
        self.segments.append(new)
        # Inference goes on across a profiler switch: the new piece opens at once,
        # and its first energy reading is the next sample.
        self.active = was_active and e.kind != "profiler_ready"

    # -- reading ----------------------------------------------------------------------------

    def figures(self) -> list[Figures]:
        """Every segment's figures, with deltas against its nearest fair baseline."""
        last = self.segments[-1]
        figs = [
            _figures(s)
            for s in self.segments
            if not s.sliver
            and (s.end_ns > s.start_ns or s.tokens or (s is last and not self.ended))
        ]
        compare(figs)
        return figs

    def settings(self) -> list[Figures]:
        """One row per full setting tried (segments of the same setting merged), with the
        Pareto front of tok/s against J/token marked."""
        groups: dict[tuple[Any, ...], list[Segment]] = {}
        for s in self.segments:
            if s.tokens and not s.sliver:
                groups.setdefault(s.key, []).append(s)
        out = []
        parts: list[tuple[list[Figures], list[float]]] = []
        for i, segs in enumerate(groups.values()):
            acc = _Acc()
            for s in segs:
                _merge(acc, _effective(s))
            first = segs[0]
            merged = Segment(
                i,
                first.profiler,
                first.rate_hz,
                first.start_ns,
                knobs=dict(first.knobs),
                initial=first.initial,
                end_ns=segs[-1].end_ns,
                tokens=sum(s.tokens for s in segs),
                died=any(s.died for s in segs),
                samples=sum(s.samples or 0 for s in segs) if any(s.samples for s in segs) else None,
                acc=acc,
            )
            f = _figures(merged, acc)
            f.segments = len(segs)
            f.load_s = max((s.load_s for s in segs if s.load_s is not None), default=None)
            out.append(f)
            parts.append(([_figures(s) for s in segs], list(acc.piece_tps)))
        _intervals(out, parts)
        for f in pareto_front(out):
            f.pareto = True
        return out


def total(fold: SegmentFold) -> Figures:
    """Every segment's active time merged (slivers left out): the recording's figures by
    the segment arithmetic — decode tok/s over decode time, J/token over the energy
    windows of active pieces (model loads, pauses and gaps are outside them)."""
    acc = _Acc()
    segs = [s for s in fold.segments if s.tokens and not s.sliver]
    for s in segs:
        _merge(acc, _effective(s))
    whole = Segment(
        0,
        None,
        None,
        segs[0].start_ns if segs else 0,
        end_ns=segs[-1].end_ns if segs else 0,
        tokens=sum(s.tokens for s in segs),
        acc=acc,
    )
    f = _figures(whole, acc)
    f.segments = len(segs)
    return f


def _effective(s: Segment) -> _Acc:
    """The segment's sums with its open request piece and energy window counted in."""
    a = s.acc
    e = dataclasses.replace(
        a, piece_tps=list(a.piece_tps), flag_hits=dict(a.flag_hits), flag_n=dict(a.flag_n)
    )
    r = s._req
    if r is not None and r[2] >= 2 and r[1] > r[0]:  # the open request piece counts too
        e.dec_n += r[2] - 1
        e.dec_ns += r[1] - r[0]
        e.piece_tps.append((r[2] - 1) / ((r[1] - r[0]) / 1e9))
    if s._e0 is not None and s._e1 is not None and s._e1[1] > s._e0[1]:
        e.energy_j += s._e1[0] - s._e0[0]
        e.energy_tokens += s._e1[1] - s._e0[1]
        e.energy_windows += 1
    if s._m0 is not None and s._m1 is not None and s._m1[1] > s._m0[1]:
        e.meas_j += s._m1[0] - s._m0[0]
        e.meas_tokens += s._m1[1] - s._m0[1]
        e.meas_windows += 1
    return e


def _merge(into: _Acc, a: _Acc) -> None:
    into.dec_n += a.dec_n
    into.dec_ns += a.dec_ns
    into.piece_tps += a.piece_tps
    into.energy_j += a.energy_j
    into.energy_tokens += a.energy_tokens
    into.energy_windows += a.energy_windows
    into.meas_j += a.meas_j
    into.meas_tokens += a.meas_tokens
    into.meas_windows += a.meas_windows
    into.power_sum += a.power_sum
    into.power_sq += a.power_sq
    into.power_n += a.power_n
    if a.temp_max is not None and (into.temp_max is None or a.temp_max > into.temp_max):
        into.temp_max = a.temp_max
    for k, v in a.flag_hits.items():
        into.flag_hits[k] = into.flag_hits.get(k, 0) + v
    for k, v in a.flag_n.items():
        into.flag_n[k] = into.flag_n.get(k, 0) + v
    into.cpu_sum += a.cpu_sum
    into.cpu_n += a.cpu_n


def measured_counters(header: Header) -> list[str]:
    """Energy counters of the system power's measured parts (empty: nothing measured).

    The Header's ``config.system_power.channels`` are the chosen power channels;
    estimated ones are left out; a counter's derived power names its counter in
    ``meta["energy_channel"]``. A measured part without a counter (an
    instantaneous reading) cannot be integrated the same way: then the list is
    empty and no measured J/token exists.
    """
    sp = header.config.get("system_power") if isinstance(header.config, dict) else None
    if not isinstance(sp, dict):
        return []
    by_id = {c.id: c for c in header.channels}
    out: list[str] = []
    for cid in sp.get("channels") or []:
        c = by_id.get(cid) if isinstance(cid, str) else None
        if c is None or c.method == "estimated":
            continue
        if c.kind == "energy" and c.method == "counter":
            out.append(c.id)
        elif c.meta.get("energy_channel") in by_id:
            out.append(str(c.meta["energy_channel"]))
        else:
            return []
    return out


def lag1(xs: Sequence[float]) -> float:
    """Lag-1 autocorrelation of a series (0 for fewer than 3 values or no variance)."""
    n = len(xs)
    if n < 3:
        return 0.0
    m = sum(xs) / n
    den = sum((x - m) ** 2 for x in xs)
    if den <= 0:
        return 0.0
    return sum((xs[i] - m) * (xs[i + 1] - m) for i in range(n - 1)) / den


def effective_n(xs: Sequence[float]) -> float:
    """n·(1−r₁)/(1+r₁): the independent samples an AR(1) series of n is worth (Wilks,
    *Statistical Methods in the Atmospheric Sciences*, §5.2.3); r₁ < 0 is not credited."""
    r = max(0.0, min(lag1(xs), 0.99))
    return len(xs) * (1 - r) / (1 + r)


def _intervals(out: list[Figures], parts: list[tuple[list[Figures], list[float]]]) -> None:
    """Each setting's 90 % half-widths of tok/s and J/token (`tps_ci`, `jpt_ci`).

    tok/s: Student t over the per-request tok/s with an effective sample size
    (requests in a row are correlated); J/token carries the same relative
    noise (its energy is one counter difference, its tokens those tok/s
    counts). Both widen, in quadrature, by the drift between repeated
    segments of one setting (the start setting seen again at the end): the
    largest relative range over any setting with two or more segments.
    """
    from scipy import stats as sps  # only here: the live fold never needs it

    drift = {"decode_tps": 0.0, "j_per_token": 0.0}
    for segs, _ in parts:
        for key in drift:
            xs = [v for f in segs if f.enough_data and (v := getattr(f, key)) is not None]
            if len(xs) >= 2 and min(xs) > 0:
                drift[key] = max(drift[key], (max(xs) - min(xs)) / (sum(xs) / len(xs)))
    for f, (_, pieces) in zip(out, parts, strict=True):
        rel = 0.0
        tps = f.decode_tps
        if tps and len(pieces) >= 2:
            m = sum(pieces) / len(pieces)
            sd = math.sqrt(sum((x - m) ** 2 for x in pieces) / (len(pieces) - 1))
            ne = max(effective_n(pieces), 2.0)
            rel = float(sps.t.ppf(0.95, ne - 1)) * sd / math.sqrt(ne) / tps
        if tps:
            f.tps_ci = tps * math.hypot(rel, drift["decode_tps"])
        if f.j_per_token is not None:
            f.jpt_ci = f.j_per_token * math.hypot(rel, drift["j_per_token"])


def tied(a: Figures, b: Figures, key: str) -> bool:
    """Whether `a` and `b` differ on `key` ("decode_tps" or "j_per_token") by no more than
    their combined 90 % half-widths (none known: only equal values tie)."""
    va, vb = getattr(a, key), getattr(b, key)
    if va is None or vb is None:
        return False
    ci = "tps_ci" if key == "decode_tps" else "jpt_ci"
    return abs(va - vb) <= math.hypot(getattr(a, ci) or 0.0, getattr(b, ci) or 0.0)


def pareto_front(figs: Sequence[Figures]) -> list[Figures]:
    """Settings with enough data that no other beats on tok/s (higher) and J/token (lower):
    a setting is dominated by one at least as good on both, beyond the noise on one
    (a difference inside the combined intervals is a tie, see `tied`)."""
    cand = [
        f for f in figs if f.enough_data and f.decode_tps is not None and f.j_per_token is not None
    ]

    def dominates(g: Figures, f: Figures) -> bool:
        assert g.decode_tps is not None and g.j_per_token is not None
        assert f.decode_tps is not None and f.j_per_token is not None
        tps_tie, jpt_tie = tied(g, f, "decode_tps"), tied(g, f, "j_per_token")
        faster = g.decode_tps > f.decode_tps and not tps_tie
        leaner = g.j_per_token < f.j_per_token and not jpt_tie
        return (faster or tps_tie) and (leaner or jpt_tie) and (faster or leaner)

    return [f for f in cand if not any(g is not f and dominates(g, f) for g in cand)]


SPEED_BUDGET = 0.05  # the energy-optimal setting may be this much slower than the fastest


def energy_optimal(
    figs: Sequence[Figures], within: float = SPEED_BUDGET
) -> tuple[Figures | None, Figures | None]:
    """(the fastest setting, the lowest-J/token setting within `within` of its tok/s)."""
    ok = [f for f in figs if f.enough_data and f.decode_tps is not None]
    if not ok:
        return None, None
    fastest = max(ok, key=lambda f: f.decode_tps or 0.0)
    assert fastest.decode_tps is not None
    near = [
        f
        for f in ok
        if f.j_per_token is not None
        and f.decode_tps is not None
        and f.decode_tps >= (1 - within) * fastest.decode_tps
    ]
    best = min(near, key=lambda f: f.j_per_token or 0.0, default=None)
    return fastest, best


def energy_optimal_ties(
    figs: Sequence[Figures], within: float = SPEED_BUDGET
) -> tuple[list[Figures], list[Figures]]:
    """`energy_optimal` with ties: every setting whose tok/s ties the fastest's, and every
    setting within `within` of the fastest's tok/s whose J/token ties the lowest's."""
    fastest, best = energy_optimal(figs, within)
    if fastest is None:
        return [], []
    assert fastest.decode_tps is not None
    ok = [f for f in figs if f.enough_data and f.decode_tps is not None]
    fast = [f for f in ok if f is fastest or tied(f, fastest, "decode_tps")]
    near = [
        f
        for f in ok
        if f.j_per_token is not None
        and f.decode_tps is not None
        and f.decode_tps >= (1 - within) * fastest.decode_tps
    ]
    lean = [f for f in near if best is not None and (f is best or tied(f, best, "j_per_token"))]
    return fast, lean


def _figures(s: Segment, acc: _Acc | None = None) -> Figures:
    a = acc if acc is not None else _effective(s)
    dec_n, dec_ns, pieces = a.dec_n, a.dec_ns, a.piece_tps
    energy, etok, windows = a.energy_j, a.energy_tokens, a.energy_windows
    active_s = dec_ns / 1e9
    power = a.power_sum / a.power_n if a.power_n else None
    spread_w = (
        math.sqrt(max(0.0, a.power_sq / a.power_n - power * power))
        if power is not None and a.power_n >= 2
        else None
    )
    tps = dec_n / active_s if active_s > 0 else None
    tps_sd = None
    if len(pieces) >= 2:
        m = sum(pieces) / len(pieces)
        tps_sd = math.sqrt(sum((x - m) ** 2 for x in pieces) / len(pieces))
    share = {n: a.flag_hits.get(n, 0) / a.flag_n[n] for n in sorted(a.flag_n) if a.flag_n[n]}
    return Figures(
        index=s.index,
        name=s.name,
        profiler=s.profiler,
        rate_hz=s.rate_hz,
        knobs=dict(s.knobs),
        start_s=s.start_ns / 1e9,
        end_s=s.end_ns / 1e9,
        active_s=active_s,
        decode_tokens=s.tokens,
        decode_tps=tps,
        tps_spread=tps_sd,
        power_w=power,
        power_std_w=spread_w,
        energy_j=energy if windows else None,
        j_per_token=energy / etok if windows and etok else None,
        j_per_token_measured=a.meas_j / a.meas_tokens if a.meas_windows and a.meas_tokens else None,
        temp_max_c=a.temp_max,
        throttle_share=share,
        profiler_cpu=a.cpu_sum / a.cpu_n if a.cpu_n else None,
        samples=s.samples,
        hot_frames=list(s.hot_frames),
        died=s.died,
        enough_data=(active_s >= MIN_SECONDS and s.tokens >= MIN_TOKENS and not s.died),
        cause=s.cause,
        load_s=s.load_s,
        tags=dict(s.tags),
        artifact=s.artifact,
    )


def pct(x: float | None, y: float | None) -> float | None:
    """The change of `x` from `y` in % (100 × (x − y) ÷ y); None when either is None or y is 0."""
    return None if x is None or y is None or not y else 100.0 * (x - y) / y


def diff(x: float | None, y: float | None) -> float | None:
    """`x` − `y` in their unit (W, °C); None when either is None."""
    return None if x is None or y is None else x - y


def _decode_jpt(f: Figures) -> float | None:
    """Joules per decode token over decode time: mean system W ÷ decode tok/s."""
    return f.power_w / f.decode_tps if f.power_w is not None and f.decode_tps else None


def deltas(f: Figures, b: Figures) -> dict[str, Any]:
    """Δ of `f` against baseline `b`: tok/s and J/token in %, W and °C absolute."""
    return {
        "decode_tps_pct": pct(f.decode_tps, b.decode_tps),
        "power_w": diff(f.power_w, b.power_w),
        "j_per_token_pct": pct(f.j_per_token, b.j_per_token),
        "j_per_token_measured_pct": pct(f.j_per_token_measured, b.j_per_token_measured),
        # J/token over the decode time tok/s counts (mean W ÷ decode tok/s): with Δtok/s
        # and ΔW it cannot disagree, as the energy-counter J/token (prefill and gaps
        # between requests included) can.
        "j_per_decode_token_pct": pct(_decode_jpt(f), _decode_jpt(b)),
        "temp_max_c": diff(f.temp_max_c, b.temp_max_c),
        "tps_spread_pct": (
            100.0 * f.tps_spread / b.decode_tps
            if f.tps_spread is not None and b.decode_tps
            else None
        ),
        "baseline": b.name,
        "baseline_start_s": b.start_s,
    }


THROTTLE_TOLERANCE = 0.10  # share of readings a flag may differ by between fair windows


def throttle_mismatch(f: Figures, b: Figures) -> set[str]:
    """Flags (other than idle) whose share of readings differs by more than 10 points."""
    names = (set(f.throttle_share) | set(b.throttle_share)) - {"idle"}
    return {
        n
        for n in names
        if abs(f.throttle_share.get(n, 0.0) - b.throttle_share.get(n, 0.0)) > THROTTLE_TOLERANCE
    }


def _mid(f: Figures) -> float:
    return (f.start_s + f.end_s) / 2


class _Baselines:
    """The baselines with enough data, by midpoint: the nearest fair one is found by
    walking outwards from `f`'s midpoint, so a live panel with many segments stays cheap."""

    def __init__(self, figs: Sequence[Figures]) -> None:
        self.by_mid = sorted(
            (b for b in figs if b.baseline and b.enough_data), key=lambda b: (_mid(b), b.start_s)
        )
        self.mids = [_mid(b) for b in self.by_mid]

    def choose(self, f: Figures) -> tuple[Figures | None, str | None]:
        mid = _mid(f)
        i = bisect.bisect_left(self.mids, mid)
        lo, hi = i - 1, i
        best: Figures | None = None
        seen_same = False
        mismatch: set[str] = set()
        # Candidates in order of distance (ties: the earlier start first).
        while lo >= 0 or hi < len(self.by_mid):
            left = self.by_mid[lo] if lo >= 0 else None
            right = self.by_mid[hi] if hi < len(self.by_mid) else None
            if best is not None:
                d = abs(_mid(best) - mid)
                if (left is None or mid - _mid(left) > d) and (
                    right is None or _mid(right) - mid > d
                ):
                    break
            pick_left = right is None or (
                left is not None
                and ((mid - _mid(left), left.start_s) <= (_mid(right) - mid, right.start_s))
            )
            b = left if pick_left else right
            if pick_left:
                lo -= 1
            else:
                hi += 1
            assert b is not None
            if b.knobs != f.knobs:
                continue
            seen_same = True
            bad = throttle_mismatch(f, b)
            if bad:
                mismatch |= bad
                continue
            key = (abs(_mid(b) - mid), b.start_s)
            if best is None or key < (abs(_mid(best) - mid), best.start_s):
                best = b
        if best is not None:
            return best, None
        if not seen_same:
            return None, "no baseline with enough data"
        return None, "throttled: " + ",".join(sorted(mismatch))


def compare(figs: list[Figures]) -> None:
    """Fill each segment's delta in place (none without enough data or a fair baseline).

    A segment a knob change started is compared with the segment before it
    (the last one with enough data): the knob's effect. A profiler segment is
    compared with its nearest fair baseline: the profiler's cost.
    """
    bases = _Baselines(figs)
    previous: Figures | None = None
    for f in figs:
        prev, previous = previous, (f if f.enough_data else previous)
        knob_step = f.tags.get("role") == "treatment" and f.profiler is None
        if f.cause == "knob" or knob_step:
            if not f.enough_data:
                f.not_comparable = "worker died" if f.died else "too little data"
            elif prev is None:
                f.not_comparable = "no segment before with enough data"
            else:
                f.delta = {**deltas(f, prev), "against": "previous"}
                f.baseline_index = prev.index
            continue
        if f.baseline:
            continue
        if not f.enough_data:
            f.not_comparable = "worker died" if f.died else "too little data"
            continue
        b, why = bases.choose(f)
        if b is None:
            f.not_comparable = why
            continue
        f.delta = {**deltas(f, b), "against": "baseline"}
        f.baseline_index = b.index


def fold(records: Iterable[Record]) -> list[Figures]:
    """Figures of every segment of a recording (records in time order)."""
    return SegmentFold().consume_all(records).figures()
