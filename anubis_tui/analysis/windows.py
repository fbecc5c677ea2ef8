"""Figures over a time window of a recording: tok/s, power, energy, J/token, heat, throttle.

Every function takes a `Recording` and a window [a, b) in ns since the
session start. Decode tok/s counts decode tokens stamped in the window over
its length; energy is the change of the system energy channel across the
window (hardware counters where the machine has them), so J/token = ΔE /
decode tokens in the same window.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from anubis_tui.recording.reader import Recording
from anubis_tui.records import decode_flags


@dataclass
class Window:
    start_s: float
    end_s: float
    decode_tokens: int
    prompt_tokens: int
    decode_tps: float | None
    power_w: float | None
    power_std_w: float | None
    energy_j: float | None
    j_per_token: float | None
    temp_max_c: float | None
    throttle_share: dict[str, float] = field(default_factory=dict)
    power_by_channel: dict[str, float] = field(default_factory=dict)


def _mask(t: np.ndarray, a: int, b: int) -> np.ndarray:
    return (t >= a) & (t < b)


def tokens_in(rec: Recording, a: int, b: int, decode: bool = True) -> int:
    m = _mask(rec.tok_t, a, b) & (rec.tok_decode == decode)
    return int(rec.tok_count[m].sum())


def decode_tps(rec: Recording, a: int, b: int) -> float | None:
    """Decode tokens per second in [a, b), excluding prompt processing and gaps.

    Requests that ran wholly inside the window count exactly (tokens − 1 over
    first-to-last token time, as the worker stamped them). A window holding
    no whole request falls back to the stamps of its decode batches.
    """
    starts = {e.payload.get("request"): e.t for e in rec.events if e.kind == "request_start"}
    n = 0
    ns = 0
    for e in rec.events:
        if e.kind != "request_end" or not (a <= e.t < b):
            continue
        if starts.get(e.payload.get("request"), -1) < a or not e.payload.get("decode_ns"):
            continue
        n += int(e.payload["generated"]) - 1
        ns += int(e.payload["decode_ns"])
    if ns:
        return n / (ns / 1e9)
    m = _mask(rec.tok_t, a, b) & rec.tok_decode
    if not m.any():
        return None
    first = max(a, int(rec.tok_t_first[m].min()))
    last = min(b, int(rec.tok_t[m].max()))
    count = int(rec.tok_count[m].sum())
    if last <= first or count < 2:
        return None
    return (count - 1) / ((last - first) / 1e9)


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
        i, edge = 0, tt[0]
    else:
        i, edge = len(tt) - 2, tt[-1]
    dt = float(tt[i + 1] - tt[i])
    rate = float(vv[i + 1] - vv[i]) / dt if dt > 0 else 0.0
    out = float(t) - float(edge)
    out = max(-EXTEND_PERIODS * step, min(EXTEND_PERIODS * step, out))
    return float(vv[0] if t < tt[0] else vv[-1]) + rate * out


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


def mean_std(rec: Recording, cid: str, a: int, b: int) -> tuple[float | None, float | None]:
    col = rec.column(cid)
    if col is None:
        return None, None
    v = col[_mask(rec.t, a, b)]
    v = v[~np.isnan(v)]
    if not len(v):
        return None, None
    return float(v.mean()), float(v.std())


def throttle_share(rec: Recording, a: int, b: int) -> dict[str, float]:
    """Share of readings in [a, b) in which each canonical flag was active (any source)."""
    m = _mask(rec.t, a, b)
    counts: dict[str, int] = {}
    total: dict[str, int] = {}
    for c in rec.channels:
        if c.kind != "throttle":
            continue
        col = rec.values[m, rec.index[c.id]]
        col = col[~np.isnan(col)]
        names = set(c.meta.get("flags", {}).values())
        for name in names:
            total[name] = total.get(name, 0) + len(col)
        # Masks repeat: decode each distinct one once.
        masks, n = np.unique(col[(col >= 0) & (col < 2.0**64)], return_counts=True)
        for v, k in zip(masks, n, strict=True):
            active, _ = decode_flags(c, int(v))
            for name in set(active):
                counts[name] = counts.get(name, 0) + int(k)
    return {n: counts.get(n, 0) / total[n] for n in sorted(total) if total[n]}


def window(rec: Recording, a: int, b: int) -> Window:
    dec = tokens_in(rec, a, b, True)
    e = energy_j(rec, a, b)
    p, sd = mean_std(rec, "system.power", a, b)
    temps = [
        mean_max
        for c in rec.channels
        if c.kind == "temperature"
        if (mean_max := _max(rec, c.id, a, b)) is not None
    ]
    by_ch = {}
    for c in rec.channels:
        if c.kind == "power" and not c.meta.get("is_limit") and c.id != "system.power":
            mean, _ = mean_std(rec, c.id, a, b)
            if mean is not None:
                by_ch[c.id] = mean
    return Window(
        start_s=a / 1e9,
        end_s=b / 1e9,
        decode_tokens=dec,
        prompt_tokens=tokens_in(rec, a, b, False),
        decode_tps=decode_tps(rec, a, b),
        power_w=p,
        power_std_w=sd,
        energy_j=e,
        j_per_token=(e / dec) if e is not None and dec else None,
        temp_max_c=max(temps) if temps else None,
        throttle_share=throttle_share(rec, a, b),
        power_by_channel=by_ch,
    )


def _max(rec: Recording, cid: str, a: int, b: int) -> float | None:
    col = rec.column(cid)
    if col is None:
        return None
    v = col[_mask(rec.t, a, b)]
    v = v[~np.isnan(v)]
    return float(v.max()) if len(v) else None


IDLE_SETTLE_S = 1.0  # power falls for about a second after inference stops


def idle_power(rec: Recording) -> dict[str, float | int | None] | None:
    """Idle power measured in the recording's pauses (``paused`` to ``resumed``, the first
    `IDLE_SETTLE_S` left out): ``seconds``, ``pauses``, ``system_w`` (system power, estimate
    included) and ``measured_w`` (the system power's measured channels only; None when
    none is measured). None when the pauses hold under a second of readings.
    """
    spans = []
    start = None
    for e in rec.events:
        if e.kind == "paused":
            start = e.t
        elif e.kind in ("resumed", "worker_stopped") and start is not None:
            a = start + int(IDLE_SETTLE_S * 1e9)
            if e.t - a >= 5e8:
                spans.append((a, e.t))
            start = None
    if not spans:
        return None
    sp = rec.header.config.get("system_power") or {}
    by_id = {c.id: c for c in rec.channels}
    meas = [
        cid
        for cid in sp.get("channels") or []
        if cid in by_id and by_id[cid].kind == "power" and by_id[cid].method != "estimated"
    ]

    def mean(cid: str) -> float | None:
        col = rec.column(cid)
        if col is None:
            return None
        m = np.zeros(len(rec.t), dtype=bool)
        for a, b in spans:
            m |= _mask(rec.t, a, b)
        v = col[m]
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else None

    parts = [mean(c) for c in meas]
    return {
        "seconds": sum(b - a for a, b in spans) / 1e9,
        "pauses": len(spans),
        "system_w": mean("system.power"),
        "measured_w": sum(p for p in parts if p is not None)
        if meas and all(p is not None for p in parts)
        else None,
    }


def request_energy(rec: Recording, cid: str = "system.energy") -> dict[str, Any]:
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
    starts: dict[int, int] = {}
    spans: list[tuple[int, int, int, int]] = []  # (request, start, end, generated)
    for e in rec.events:
        r = e.payload.get("request")
        if not isinstance(r, int):
            continue
        if e.kind == "request_start":
            starts[r] = e.t
        elif e.kind == "request_end" and r in starts:
            spans.append((r, starts.pop(r), e.t, int(e.payload.get("generated") or 0)))
    spans.sort(key=lambda s: s[1])
    overlap, reach = False, -1
    for _, a, b, _ in spans:
        overlap, reach = overlap or a < reach, max(reach, b)
    joules: dict[int, float | None] = {}
    if not overlap:
        for r, a, b, _ in spans:
            ea, eb = counter_at(rec, cid, a), counter_at(rec, cid, b)
            joules[r] = (eb - ea) if ea is not None and eb is not None else None
    else:
        cuts = sorted({t for _, a, b, _ in spans for t in (a, b)})
        joules = {r: 0.0 for r, *_ in spans}
        for a, b in itertools.pairwise(cuts):
            live = [r for r, s, e, _ in spans if s <= a and e >= b]
            ea, eb = counter_at(rec, cid, a), counter_at(rec, cid, b)
            if not live:
                continue
            if ea is None or eb is None:
                for r in live:
                    joules[r] = None
                continue
            m = _mask(rec.tok_t, a, b) & rec.tok_decode
            toks = {r: int(rec.tok_count[m & (rec.tok_request == r)].sum()) for r in live}
            total = sum(toks.values())
            for r in live:
                share = toks[r] / total if total else 1 / len(live)
                j = joules[r]
                joules[r] = None if j is None else j + (eb - ea) * share
    rows = []
    for r, a, b, gen in spans:
        j = joules.get(r)
        rows.append(
            {
                "request": r,
                "start_s": a / 1e9,
                "end_s": b / 1e9,
                "generated": gen,
                "joules": j,
                "j_per_token": (j / gen) if j is not None and gen else None,
            }
        )
    js = [x["joules"] for x in rows if isinstance(x["joules"], float)]
    jpt = [x["j_per_token"] for x in rows if isinstance(x["j_per_token"], float)]
    return {
        "method": "apportioned by tokens" if overlap else "window",
        "channel": cid if rec.column(cid) is not None else None,
        "requests": rows,
        "median_j": float(np.median(js)) if js else None,
        "median_j_per_token": float(np.median(jpt)) if jpt else None,
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
