"""The whole run's figures, folded in one pass: tok/s, energy, J/token, power, heat,
throttle, idle power and each request's energy.

`RunFold` takes records in time order (`recording.reader.in_time_order`) and keeps
sums, not samples, so a day-long recording folds in bounded memory (issue 20).
Stamps are ns since the session start. Energy is the change of an energy counter
across a window [a, b), its value at each edge interpolated between readings
(`counter_at`), so J/token = ΔE ÷ the decode tokens stamped in the window. The
array functions (`counter_at`, `energy_j`) take a loaded `Recording`.
"""

from __future__ import annotations

import bisect
import csv
import itertools
from array import array
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from anubis_tui.recording.reader import Recording
from anubis_tui.records import (
    PLAUSIBLE,
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


def _mask(t: np.ndarray, a: int, b: int) -> np.ndarray:
    return (t >= a) & (t < b)


def value_at(rec: Recording, cid: str, t: int) -> float | None:
    """Linear interpolation of a channel at `t` between its nearest readings."""
    col = rec.column(cid)
    if col is None:
        return None
    ok = ~np.isnan(col)
    if not ok.any():
        return None
    tt, vv = rec.t[ok], col[ok]
    if t <= tt[0] or t >= tt[-1]:
        return float(vv[0] if t <= tt[0] else vv[-1])
    return float(np.interp(t, tt, vv))


def counter_at(rec: Recording, cid: str, t: int) -> float | None:
    """An energy counter's value at `t` (J): linear between its readings, and before the
    first or after the last reading extended by the nearest interval's rate (the power
    then), at most `EXTEND_PERIODS` reading intervals out; beyond that, clamped.

    A counter read once a second (NVML's total energy) would otherwise lose up to a
    second at each end of a recording.
    """
    col = rec.column(cid)
    if col is None:
        return None
    ok = ~np.isnan(col)
    if ok.sum() < 2:
        return value_at(rec, cid, t)
    tt, vv = rec.t[ok], col[ok]
    if tt[0] <= t <= tt[-1]:
        return float(np.interp(t, tt, vv))
    step = float(np.median(np.diff(tt)))
    if t < tt[0]:
        return _extend(t, (int(tt[0]), float(vv[0])), (int(tt[1]), float(vv[1])), step, True)
    return _extend(t, (int(tt[-2]), float(vv[-2])), (int(tt[-1]), float(vv[-1])), step, False)


def _extend(
    t: int, p0: tuple[int, float], p1: tuple[int, float], step: float, before: bool
) -> float:
    """A counter at `t` outside its readings: the reading at the near edge (`p0` before the
    first, `p1` after the last) plus the rate between `p0` and `p1` times the distance,
    at most `EXTEND_PERIODS` × `step` (the median reading interval, ns) out (J)."""
    dt = float(p1[0] - p0[0])
    rate = float(p1[1] - p0[1]) / dt if dt > 0 else 0.0
    edge, base = p0 if before else p1
    out = float(t) - float(edge)
    out = max(-EXTEND_PERIODS * step, min(EXTEND_PERIODS * step, out))
    return float(base) + rate * out


EXTEND_PERIODS = 2.0


def energy_j(rec: Recording, a: int, b: int, cid: str = "system.energy") -> float | None:
    """Energy (J) of counter `cid` over [a, b), its values taken at the exact edges
    (`counter_at`); None with fewer than two readings inside."""
    col = rec.column(cid)
    if col is None:
        return None
    ok = ~np.isnan(col) & _mask(rec.t, a, b)
    if ok.sum() < 2:
        return None
    ea, eb = counter_at(rec, cid, a), counter_at(rec, cid, b)
    if ea is None or eb is None:
        return None
    return eb - ea


IDLE_SETTLE_S = 1.0  # power falls for about a second after inference stops


def request_energy(rec: Recording, cid: str = "system.energy") -> dict[str, Any]:
    """Each request's energy (J) and J/token: `RequestFold` over the recording's records
    (see `RequestFold.energy` for the methods and the shape)."""
    return _fold_run(rec, cid).requests.energy()


def _fold_run(rec: Recording, cid: str = "system.energy") -> RunFold:
    run = RunFold(rec.header, cid)
    for r in rec.records[1:] if rec.records else ():
        run.consume(r)
    run.finish()
    return run


def _finite(v: Any) -> float | None:
    """A reading as float; None for nil, a bool, NaN or ±inf (no reading)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if np.isfinite(f) else None


class CounterTrack:
    """One energy counter's readings folded in time order, so that `counter_at` can be
    taken at edges (ns) named as the fold passes them, without keeping the readings.

    Call `edge(x)` when the fold reaches stamp x (before that stamp's readings),
    `reading(t, joules)` for every reading, `finish()` at the end; then `value(x)`
    gives `counter_at(rec, cid, x)` (J, None without readings): between readings by
    `np.interp` on the two around x, outside by `_extend` with the median reading
    interval (so the intervals are kept: 8 bytes a reading).
    """

    def __init__(self) -> None:
        self.n = 0
        self.head: list[tuple[int, float]] = []  # the first two readings (t ns, J)
        self.tail: list[tuple[int, float]] = []  # the last two
        self.diffs = array("q")  # every interval between readings, ns
        self._pending: list[int] = []  # edges waiting for the first reading after them
        self._early: list[int] = []  # edges before the first reading
        self.at: dict[int, float | None] = {}
        self.finished = False

    def edge(self, x: int) -> None:
        """Name stamp `x` (ns) as an edge whose value `value` will give; call it before the
        readings stamped at `x`. An edge named twice is kept once.
        """
        if x not in self.at and (not self._pending or self._pending[-1] != x):
            self._pending.append(x)
            self.at[x] = None

    def reading(self, t: int, v: float) -> None:
        """Fold one reading of the counter: `t` ns, `v` J. Pending edges before `t` get their
        value by `np.interp` between the previous reading and this one.
        """
        if self._pending and t > self._pending[0]:
            keep = [x for x in self._pending if x >= t]
            for x in self._pending[: len(self._pending) - len(keep)]:
                if self.tail:
                    p = self.tail[-1]
                    self.at[x] = float(np.interp(x, [p[0], t], [p[1], v]))
                else:
                    self._early.append(x)
            self._pending = keep
        if self.tail:
            self.diffs.append(t - self.tail[-1][0])
        if len(self.head) < 2:
            self.head.append((t, v))
        self.tail = [*self.tail[-1:], (t, v)]
        self.n += 1

    def finish(self) -> None:
        """Give the edges no reading came after (or before) their value by `_extend` with the
        median reading interval; `value` answers for them from now on.
        """
        self.finished = True
        for x in (*self._early, *self._pending):
            self.at[x] = self._outside(x)
        self._early, self._pending = [], []

    def value(self, x: int) -> float | None:
        """The counter at `x`: an edge named before, or any stamp at or after the last
        reading once finished."""
        if x in self.at and self.finished:
            return self.at[x]
        return self._outside(x)

    def _outside(self, x: int) -> float | None:
        if self.n == 0:
            return None
        if self.n == 1:
            return self.head[0][1]
        first, last = self.head[0], self.tail[-1]
        if first[0] <= x <= last[0]:
            # Only the last stamp is left here (an edge passed on earlier is resolved); a
            # stamp before it is an edge not named in time: the nearest reading.
            return last[1] if x == last[0] else None
        step = float(np.median(np.frombuffer(self.diffs, dtype=np.int64)))
        if x < first[0]:
            return _extend(x, self.head[0], self.head[1], step, True)
        return _extend(x, self.tail[0], self.tail[1], step, False)


class IdleFold:
    """Idle power in the pauses (``paused`` to ``resumed`` or ``worker_stopped``, the first
    `IDLE_SETTLE_S` left out), folded in time order: `result` is ``seconds``, ``pauses``,
    ``system_w`` (system power, estimate included) and ``measured_w`` (the system power's
    measured channels only; None when none is measured), W; None when the pauses hold
    under a second of readings. Feed a stamp's Events before its Samples.
    """

    def __init__(self, header: Header) -> None:
        sp = header.config.get("system_power") or {}
        chans = sp.get("channels") if isinstance(sp, dict) else None
        self.wanted = [c for c in chans or [] if isinstance(c, str)]
        self.spans: list[tuple[int, int]] = []
        self._start: int | None = None
        self._sums: dict[str, list[float]] = {}  # id → [sum, n] over closed spans
        self._open: dict[str, list[float]] = {}  # the same in the open pause
        self._bt = -1  # the stamp of `_bucket`: readings that a close at that stamp leaves out
        self._bucket: dict[str, list[float]] = {}

    def event(self, e: Event) -> None:
        """A ``paused`` opens a pause; ``resumed`` or ``worker_stopped`` closes it, kept only
        when it holds at least 0.5 s after its first `IDLE_SETTLE_S`.
        """
        if e.kind == "paused":
            self._start = e.t
            self._open, self._bucket = {}, {}
        elif e.kind in ("resumed", "worker_stopped") and self._start is not None:
            a = self._start + int(IDLE_SETTLE_S * 1e9)
            if self._bt < e.t:
                _add(self._open, self._bucket)
            self._bucket = {}
            if e.t - a >= 5e8:
                self.spans.append((a, e.t))
                _add(self._sums, self._open)
            self._start = None
            self._open = {}

    def sample(self, t: int, values: list[Any], index: dict[str, int]) -> None:
        """Add one Sample's system power and system-power channel readings (W) to the open pause,
        once `IDLE_SETTLE_S` into it; `index` maps channel id to position in `values`.
        """
        if self._start is None or t < self._start + int(IDLE_SETTLE_S * 1e9):
            return
        if t != self._bt:
            _add(self._open, self._bucket)
            self._bt, self._bucket = t, {}
        for cid in ("system.power", *self.wanted):
            j = index.get(cid)
            v = _finite(values[j]) if j is not None and j < len(values) else None
            if v is not None:
                acc = self._bucket.setdefault(cid, [0.0, 0])
                acc[0] += v
                acc[1] += 1

    def result(self, channels: Sequence[Channel] | None = None) -> dict[str, Any] | None:
        """The pauses' idle power (see the class): ``seconds`` (s), ``pauses``, ``system_w`` and
        ``measured_w`` (W, means over the pauses' readings); None without a kept pause.

        `channels` tells measured channels from estimated ones (kind ``power``, method not
        ``estimated``); without it ``measured_w`` is None.
        """
        if not self.spans:
            return None
        by_id = {c.id: c for c in channels or []}
        meas = [
            cid
            for cid in self.wanted
            if cid in by_id and by_id[cid].kind == "power" and by_id[cid].method != "estimated"
        ]

        def mean(cid: str) -> float | None:
            acc = self._sums.get(cid)
            return acc[0] / acc[1] if acc and acc[1] else None

        parts = [mean(c) for c in meas]
        return {
            "seconds": sum(b - a for a, b in self.spans) / 1e9,
            "pauses": len(self.spans),
            "system_w": mean("system.power"),
            "measured_w": sum(p for p in parts if p is not None)
            if meas and all(p is not None for p in parts)
            else None,
        }


def _add(into: dict[str, list[float]], sums: dict[str, list[float]]) -> None:
    """Add [sum, n] pairs by channel."""
    for cid, (v, n) in sums.items():
        acc = into.setdefault(cid, [0.0, 0])
        acc[0] += v
        acc[1] += n


class RequestFold:
    """Requests folded in time order: the whole run's decode tok/s, TTFT and prompt speed
    inputs, and each request's energy (`energy`). Feed a stamp's Events before its Tokens.

    `track` is the energy counter whose value is taken at each request's edges.
    """

    def __init__(self, track: CounterTrack) -> None:
        self.track = track
        self.starts: dict[int, int] = {}  # every request_start, the last per id (decode_tps)
        self.decoded: list[tuple[int, int, int]] = []  # (request, generated, decode_ns)
        self.ends = 0
        self.ttfts: list[float] = []  # s, in time order
        self.prompt_ns = 0
        self.prompt_tok = 0
        self._open: dict[int, int] = {}
        self.spans: list[tuple[int, int, int, int]] = []  # (request, start, end, generated)
        self._cuts: list[int] = []  # every request edge: where a piece of the timeline starts
        self._cut_tokens: list[dict[int, int]] = []  # decode tokens per request in each piece
        self._tt = -1  # the latest token stamp, and its batches (a cut there takes them)
        self._tok_bucket: list[Tokens] = []

    def event(self, e: Event) -> None:
        """Fold a ``request_start`` or ``request_end`` (other kinds are ignored): open or close
        the request's span, name its stamp as an edge of the energy counter, and cut the
        timeline there.
        """
        if e.kind not in ("request_start", "request_end"):
            return
        r = e.payload.get("request")
        if e.kind == "request_end":
            self._end(e, r)
        elif isinstance(r, int):
            self.starts[r] = e.t
        if not isinstance(r, int):
            return
        if e.kind == "request_start":
            self._open[r] = e.t
        elif r in self._open:
            self.spans.append((r, self._open.pop(r), e.t, int(e.payload.get("generated") or 0)))
        self.track.edge(e.t)
        if not self._cuts or self._cuts[-1] != e.t:
            moved: dict[int, int] = {}
            for tok in self._tok_bucket if self._tt == e.t else ():
                moved[tok.request] = moved.get(tok.request, 0) + tok.count
            if self._cut_tokens:
                prev = self._cut_tokens[-1]
                for r2, k in moved.items():
                    prev[r2] -= k
            self._cuts.append(e.t)
            self._cut_tokens.append(moved)

    def _end(self, e: Event, r: Any) -> None:
        p = e.payload
        self.ends += 1
        if p.get("decode_ns"):
            self.decoded.append((r, int(p["generated"]), int(p["decode_ns"])))
        if p.get("ttft_ns"):
            self.ttfts.append(p["ttft_ns"] / 1e9)
            self.prompt_ns += p["ttft_ns"]
            self.prompt_tok += int(p.get("prompt_tokens") or 0)

    def tokens(self, rec: Tokens) -> None:
        """A decode batch (prompt batches are not apportioned)."""
        if rec.t != self._tt:
            self._tt = rec.t
            self._tok_bucket.clear()
        self._tok_bucket.append(rec)
        if self._cuts:
            d = self._cut_tokens[-1]
            d[rec.request] = d.get(rec.request, 0) + rec.count

    def decode_rate(self) -> tuple[int, int]:
        """(Σ(generated − 1), Σ decode ns) over requests whose start was seen (`decode_tps`)."""
        n = ns = 0
        for r, gen, dns in self.decoded:
            if self.starts.get(r, -1) < 0:
                continue
            n += gen - 1
            ns += dns
        return n, ns

    def energy(self, cid: str = "system.energy", has_channel: bool = True) -> dict[str, Any]:
        """Each request's energy (J) and J/token over its own ``request_start``–``request_end``
        window (issue 23), and how it was taken.

        * ``window``: requests never overlap (one in flight at a time, the worker's
          way and ``--concurrency 1``): J = E(end) − E(start) of counter `cid`, its
          values interpolated at the exact edges (`counter_at`).
        * ``apportioned by tokens``: requests overlap (``--concurrency N``): the
          timeline is cut at every start and end; each piece's energy is shared
          among the requests in flight in it by the decode tokens each was
          stamped with in that piece (equally when none was), and a request's J is
          the sum of its shares. The whole is exact; the split is a model (see
          docs/attach.md).

        Returns ``{"method", "channel", "requests": [{request, start_s, end_s,
        generated, joules, j_per_token}], "median_j", "median_j_per_token"}``;
        joules None where the counter has no reading around the window.
        """
        spans = sorted(self.spans, key=lambda s: s[1])
        overlap, reach = False, -1
        for _, a, b, _ in spans:
            overlap, reach = overlap or a < reach, max(reach, b)
        joules = self._apportioned(spans) if overlap else self._windows(spans)
        rows = [_request_row(r, a, b, gen, joules.get(r)) for r, a, b, gen in spans]
        js = [x["joules"] for x in rows if isinstance(x["joules"], float)]
        jpt = [x["j_per_token"] for x in rows if isinstance(x["j_per_token"], float)]
        return {
            "method": "apportioned by tokens" if overlap else "window",
            "channel": cid if has_channel else None,
            "requests": rows,
            "median_j": float(np.median(js)) if js else None,
            "median_j_per_token": float(np.median(jpt)) if jpt else None,
        }

    def _delta(self, a: int, b: int) -> float | None:
        ea, eb = self.track.value(a), self.track.value(b)
        return (eb - ea) if ea is not None and eb is not None else None

    def _windows(self, spans: list[tuple[int, int, int, int]]) -> dict[int, float | None]:
        return {r: self._delta(a, b) for r, a, b, _ in spans}

    def _apportioned(self, spans: list[tuple[int, int, int, int]]) -> dict[int, float | None]:
        cuts = sorted({t for _, a, b, _ in spans for t in (a, b)})
        joules: dict[int, float | None] = {r: 0.0 for r, *_ in spans}
        for a, b in itertools.pairwise(cuts):
            live = [r for r, s, e, _ in spans if s <= a and e >= b]
            if not live:
                continue
            de = self._delta(a, b)
            if de is None:
                for r in live:
                    joules[r] = None
                continue
            toks = self._piece_tokens(a, b, live)
            total = sum(toks.values())
            for r in live:
                share = toks[r] / total if total else 1 / len(live)
                j = joules[r]
                joules[r] = None if j is None else j + de * share
        return joules

    def _piece_tokens(self, a: int, b: int, live: list[int]) -> dict[int, int]:
        """Decode tokens stamped in [a, b) per request in `live`."""
        i0, i1 = bisect.bisect_left(self._cuts, a), bisect.bisect_left(self._cuts, b)
        toks = dict.fromkeys(live, 0)
        for d in self._cut_tokens[i0:i1]:
            for r in live:
                toks[r] += d.get(r, 0)
        return toks


def _request_row(r: int, a: int, b: int, gen: int, j: float | None) -> dict[str, Any]:
    return {
        "request": r,
        "start_s": a / 1e9,
        "end_s": b / 1e9,
        "generated": gen,
        "joules": j,
        "j_per_token": (j / gen) if j is not None and gen else None,
    }


class RunFold:
    """The whole run folded in time order (`in_time_order`), for the report: requests
    (`RequestFold`), pauses (`IdleFold`), the energy counters (`CounterTrack`, one per
    counter channel), tokens, and every Sample's columns (`ColumnFold`). A window
    [a, b) cut at an Event's stamp takes what is stamped at a and leaves what is
    stamped at b, whichever comes first in the file, as the array functions above do.
    """

    def __init__(self, header: Header, cid: str = "system.energy") -> None:
        self.header = header
        self.channels: list[Channel] = []
        self.index: dict[str, int] = {}
        self.cid = cid
        self.tracks: dict[str, CounterTrack] = {}
        self._track_cols: list[tuple[int, CounterTrack]] = []
        self.energy = self._track(cid)
        self.energy.edge(0)
        self.idle = IdleFold(header)
        self.requests = RequestFold(self.energy)
        self.decode = [0, 0]  # tokens: [decode, prompt]
        self.dec_first: int | None = None  # the first decode batch's first token stamp
        self.dec_last: int | None = None  # the last decode batch's stamp
        self.first: int | None = None  # the first Sample, Tokens or Event stamp
        self.last = 0  # the latest stamp of any record
        self.columns = ColumnFold()
        self.add_channels(header.channels)

    def _track(self, cid: str) -> CounterTrack:
        if cid not in self.tracks:
            self.tracks[cid] = CounterTrack()
        return self.tracks[cid]

    def add_channels(self, chans: Sequence[Channel]) -> None:
        """Append channels (the Header's, then each ``ChannelsAdded``): new Sample columns, and a
        `CounterTrack` for each energy channel read from a counter (method ``counter``).
        """
        self.columns.add_channels(chans)
        for c in chans:
            self.index[c.id] = len(self.channels)
            self.channels.append(c)
            if c.kind == "energy" and c.method == "counter":
                self._track(c.id).edge(0)
        self._track_cols = [
            (self.index[cid], tr) for cid, tr in self.tracks.items() if cid in self.index
        ]

    def consume(self, rec: Record) -> None:
        """Fold one record; records come in time order (`in_time_order`)."""
        kind = type(rec)
        if kind is Tokens:
            self._tokens(rec)  # type: ignore[arg-type]
        elif kind is Sample:
            self._sample(rec)  # type: ignore[arg-type]
        elif kind is Event:
            self.requests.event(rec)  # type: ignore[arg-type]
            self.idle.event(rec)  # type: ignore[arg-type]
        elif kind is ChannelsAdded:
            self.add_channels(rec.channels)  # type: ignore[union-attr]
            return
        elif kind is not Footer:
            return
        if self.first is None and kind is not Footer:
            self.first = rec.t  # type: ignore[union-attr]
        self.last = rec.t  # type: ignore[union-attr]

    def _sample(self, r: Sample) -> None:
        vals = r.values
        for j, tr in self._track_cols:
            if j < len(vals) and (v := _finite(vals[j])) is not None:
                tr.reading(r.t, v)
        self.idle.sample(r.t, vals, self.index)
        self.columns.sample(r.t, vals)

    def _tokens(self, r: Tokens) -> None:
        if r.phase != "decode":
            self.decode[1] += r.count
            return
        self.decode[0] += r.count
        self.requests.tokens(r)
        if self.dec_first is None or r.t_first < self.dec_first:
            self.dec_first = r.t_first
        self.dec_last = r.t

    def finish(self) -> None:
        """End the fold: the last chunk of columns is folded and every counter's open edges
        resolved. Call once, after the last record and before the figures.
        """
        self.columns.finish()
        for tr in self.tracks.values():
            tr.finish()

    def decode_tps(self, end: int) -> float | None:
        """Decode tokens per second over the whole run [0, `end`) ns, prompt processing and
        gaps excluded: requests whose start was seen count exactly (Σ(generated − 1) over
        Σ decode_ns, as the worker stamped them); a run without one falls back to its
        decode batches ((tokens − 1) over first-to-last stamp). None without either."""
        n, ns = self.requests.decode_rate()
        if ns:
            return n / (ns / 1e9)
        if self.dec_first is None or self.dec_last is None:
            return None
        first, last = max(0, self.dec_first), min(end, self.dec_last)
        if last <= first or self.decode[0] < 2:
            return None
        return (self.decode[0] - 1) / ((last - first) / 1e9)

    def energy_j(self, end: int, cid: str | None = None) -> float | None:
        """Energy (J) of counter `cid` (the system energy by default) over [0, `end`) ns, its
        values at the edges by `counter_at`; None with fewer than two readings."""
        tr = self.tracks.get(cid or self.cid)
        if tr is None or tr.n < 2 or (cid or self.cid) not in self.index:
            return None
        ea, eb = tr.value(0), tr.value(end)
        return None if ea is None or eb is None else eb - ea


CHUNK_ROWS = 4096


class ColumnFold:
    """Per-channel sums of every Sample, folded `CHUNK_ROWS` rows at a time with numpy:
    each channel's count, sum and maximum of its plausible readings (`records.PLAUSIBLE`
    by the channel's kind; NaN, ±inf and nil are no reading), and each throttle flag's
    share of readings (`throttle_share`). Memory is one chunk.

    A value past the channel table as it stands when its chunk is folded is no reading.
    """

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self._rows: list[list[Any]] = []
        self.n: np.ndarray = np.zeros(0, dtype=np.int64)
        self.sum: np.ndarray = np.zeros(0)
        self.max: np.ndarray = np.zeros(0)
        self._lo: np.ndarray = np.zeros(0)
        self._hi: np.ndarray = np.zeros(0)
        self.flag_hits: dict[str, int] = {}
        self.flag_n: dict[str, int] = {}
        self._flags: dict[tuple[int, int], list[str]] = {}

    def add_channels(self, chans: Sequence[Channel]) -> None:
        """Append `chans` as new columns (the pending rows are folded first, under the old
        table); their plausible range is `records.PLAUSIBLE` by kind.
        """
        self._fold()
        self.channels.extend(chans)
        k = len(chans)
        lo = [PLAUSIBLE.get(c.kind, (-np.inf, np.inf))[0] for c in chans]
        hi = [PLAUSIBLE.get(c.kind, (-np.inf, np.inf))[1] for c in chans]
        self.n = np.concatenate([self.n, np.zeros(k, dtype=np.int64)])
        self.sum = np.concatenate([self.sum, np.zeros(k)])
        self.max = np.concatenate([self.max, np.full(k, -np.inf)])
        self._lo = np.concatenate([self._lo, lo])
        self._hi = np.concatenate([self._hi, hi])

    def sample(self, t: int, values: list[Any]) -> None:
        """Keep one Sample's `values` (in channel order); every `CHUNK_ROWS` rows are folded. `t`
        (ns) is not used.
        """
        self._rows.append(values)
        if len(self._rows) >= CHUNK_ROWS:
            self._fold()

    def _matrix(self) -> np.ndarray:
        n = len(self.channels)
        rows = self._rows
        if all(len(r) == n for r in rows):
            return np.array(rows, dtype=np.float64)  # nil → NaN
        arr = np.full((len(rows), n), np.nan)
        for i, r in enumerate(rows):
            k = min(len(r), n)
            arr[i, :k] = np.array(r[:k], dtype=np.float64)
        return arr

    def _fold(self) -> None:
        if not self._rows or not self.channels:
            self._rows = []
            return
        v = self._matrix()
        self._rows = []
        ok = np.isfinite(v)
        good = ok & (v >= self._lo) & (v <= self._hi)
        self.n += good.sum(axis=0)
        self.sum += np.where(good, v, 0.0).sum(axis=0)
        self.max = np.maximum(self.max, np.where(good, v, -np.inf).max(axis=0))
        for j, c in enumerate(self.channels):
            if c.kind == "throttle":
                self._throttle(j, c, v[ok[:, j], j])

    def _throttle(self, j: int, c: Channel, col: np.ndarray) -> None:
        names = set(c.meta.get("flags", {}).values())
        for name in names:
            self.flag_n[name] = self.flag_n.get(name, 0) + len(col)
        masks, counts = np.unique(col[(col >= 0) & (col < 2.0**64)], return_counts=True)
        for v, k in zip(masks, counts, strict=True):
            key = (j, int(v))
            active = self._flags.get(key)
            if active is None:
                active = sorted(set(decode_flags(c, int(v))[0]))
                if len(self._flags) < 4096:
                    self._flags[key] = active
            for name in active:
                self.flag_hits[name] = self.flag_hits.get(name, 0) + int(k)

    def finish(self) -> None:
        """Fold the rows still held; call before `stats` and `throttle_share`."""
        self._fold()

    def stats(self, j: int) -> tuple[float | None, float | None]:
        """(mean, max) of column `j`'s plausible readings; (None, None) without any."""
        n = int(self.n[j]) if 0 <= j < len(self.n) else 0
        return (float(self.sum[j] / n), float(self.max[j])) if n else (None, None)

    def throttle_share(self) -> dict[str, float]:
        """Each canonical throttle flag's share of readings (0..1) in which it was active,
        any source (`records.decode_flags`; unknown bits count as ``throttled``)."""
        return {
            n: self.flag_hits.get(n, 0) / self.flag_n[n]
            for n in sorted(self.flag_n)
            if self.flag_n[n]
        }


def write_requests_csv(rec: Recording, f: IO[str]) -> None:
    """`request_energy` as CSV, one row a request: request, start_s, end_s, generated,
    joules, j_per_token, method (empty cells where a value is unknown)."""
    q = request_energy(rec)
    w = csv.writer(f)
    w.writerow(["request", "start_s", "end_s", "generated", "joules", "j_per_token", "method"])
    for r in q["requests"]:
        w.writerow(
            [
                r["request"],
                f"{r['start_s']:.6f}",
                f"{r['end_s']:.6f}",
                r["generated"],
                "" if r["joules"] is None else f"{r['joules']:.6f}",
                "" if r["j_per_token"] is None else f"{r['j_per_token']:.6f}",
                q["method"],
            ]
        )
