"""Decode tok/s and J/token "now": one definition for the panel, the charts, the CSV and
the Prometheus exporter.

* **tok/s now** at time T: the decode tokens stamped in (T − `WINDOW_NS`, T]
  ÷ the window; none while inference is paused (``paused`` … ``resumed``) or
  with fewer than 2 tokens in the window (the panel shows "—", the exporter
  NaN, the CSV an empty cell).
* **J/token now** at T: between the first and the last ``system.energy``
  reading in [T − `JPT_WINDOW_NS`, T]: ΔE ÷ the decode tokens stamped between
  them (the tokens counted when each reading came); none without tokens
  between.

`Rolling` folds records as they come (live, replay, the exporter); the
`*_series` functions give the same figures at many instants of a whole
recording at once (CSV, charts). A test feeds a committed recording both ways
and checks they agree.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from anubis_tui.records import ChannelIndex, ChannelsAdded, Event, Header, Record, Sample, Tokens

WINDOW_NS = 2_000_000_000
JPT_WINDOW_NS = 10_000_000_000
_KEEP_NS = WINDOW_NS + 1_000_000_000  # a chart bin may ask up to a second back


class Rolling:
    """The incremental form. Not thread-safe: its owner locks."""

    def __init__(self) -> None:
        self.t = 0
        self.paused = False
        self.tokens = 0  # decode tokens so far
        self.batches: deque[tuple[int, int]] = deque()  # (stamp, count) of recent decode batches
        self.points: deque[tuple[int, float, int]] = deque()  # (t, energy J, tokens so far)
        self.index = ChannelIndex()  # where system.energy is in each Sample
        self._energy_i: int | None = None

    def consume(self, rec: Record) -> None:
        """Fold one record: channel tables (to find ``system.energy``), Samples, Tokens and pause
        Events.

        Decode batches older than the tok/s window (plus a second for chart bins)
        and energy points older than `JPT_WINDOW_NS` are let go, so memory stays
        bounded on a long run.
        """
        if isinstance(rec, Header | ChannelsAdded):
            self.index.consume(rec)
            self._energy_i = self.index.position("system.energy")
            return
        t = getattr(rec, "t", None)
        if isinstance(t, int):
            self.t = max(self.t, t)
        if isinstance(rec, Tokens):
            if rec.phase == "decode":
                self.tokens += rec.count
                self.batches.append((rec.t, rec.count))
                while self.batches and self.batches[0][0] <= self.t - _KEEP_NS:
                    self.batches.popleft()
        elif isinstance(rec, Sample):
            v = self.index.value(rec.values, self._energy_i)
            if v is not None:
                self.points.append((rec.t, v, self.tokens))
                while self.points and self.points[0][0] < self.t - JPT_WINDOW_NS - _KEEP_NS:
                    self.points.popleft()
        elif isinstance(rec, Event):
            if rec.kind == "paused":
                self.paused = True
            elif rec.kind == "resumed":
                self.paused = False

    def decode_tps(self, at: int | None = None) -> float | None:
        """tok/s now at `at` (default: the latest record's time), or None (module doc)."""
        if self.paused:
            return None
        at = self.t if at is None else at
        n = sum(c for t, c in self.batches if at - WINDOW_NS < t <= at)
        return n / (WINDOW_NS / 1e9) if n >= 2 else None

    def j_per_token(self, at: int | None = None) -> float | None:
        """J/token now at `at` (default: the latest record's time), or None (module doc)."""
        at = self.t if at is None else at
        pts = [p for p in self.points if at - JPT_WINDOW_NS <= p[0] <= at]
        if len(pts) < 2 or pts[-1][2] <= pts[0][2]:
            return None
        (_, e0, n0), (_, e1, n1) = pts[0], pts[-1]
        return (e1 - e0) / (n1 - n0)


def paused_at(events: list[Event], at: np.ndarray) -> np.ndarray:
    """Whether inference was paused at each instant of `at` (ns), from the pause Events."""
    flips = [(e.t, e.kind == "paused") for e in events if e.kind in ("paused", "resumed")]
    out = np.zeros(len(at), dtype=bool)
    if not flips:
        return out
    ts = np.array([t for t, _ in flips], dtype=np.int64)
    state = np.array([p for _, p in flips], dtype=bool)
    k = np.searchsorted(ts, at, side="right") - 1
    has = k >= 0
    out[has] = state[k[has]]
    return out


def decode_tps_series(
    tok_t: np.ndarray, tok_count: np.ndarray, at: np.ndarray, paused: np.ndarray
) -> np.ndarray:
    """tok/s now at each instant of `at` (NaN for none) from the decode batches' stamps and
    counts (in stamp order), `paused` from `paused_at`."""
    cum = np.concatenate([[0], np.cumsum(tok_count)])
    hi = np.searchsorted(tok_t, at, side="right")
    lo = np.searchsorted(tok_t, at - WINDOW_NS, side="right")
    n = (cum[hi] - cum[lo]).astype(float)
    out = n / (WINDOW_NS / 1e9)
    out[(n < 2) | paused] = np.nan
    return out


def jpt_series(
    e_t: np.ndarray, e_j: np.ndarray, tokens_at_e: np.ndarray, at: np.ndarray
) -> np.ndarray:
    """J/token now at each instant of `at` (NaN for none) from the system energy readings
    (times, joules) and the decode tokens counted when each came."""
    out = np.full(len(at), np.nan)
    if len(e_t) < 2:
        return out
    first = np.searchsorted(e_t, at - JPT_WINDOW_NS, side="left")
    last = np.searchsorted(e_t, at, side="right") - 1
    ok = last > first
    f, la = first[ok], last[ok]
    dn = tokens_at_e[la] - tokens_at_e[f]
    good = dn > 0
    vals = np.full(len(f), np.nan)
    vals[good] = (e_j[la][good] - e_j[f][good]) / dn[good]
    out[ok] = vals
    return out
