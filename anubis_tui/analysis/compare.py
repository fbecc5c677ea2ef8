"""`anubis compare`: is B worse than A (decode tok/s, J/token) beyond a threshold and the noise?

A recording's *baseline time* (no profiler, the knobs it started with; in a
sweep, its baseline segments) is cut into chunks of `CHUNK_S` seconds, each
folded with the one segment arithmetic (`analysis.segments`).

The unit of measurement:

* **runs**, when a side has two or more recordings: a run's figure is the
  mean of its chunks; the change B − A gets a Welch t interval on the run
  figures (a side with one run borrows the other side's run-to-run
  variance). Drift between runs (temperature, clocks, another tenant) is in
  this interval, which is why several runs a side are the honest gate.
* **chunks**, when each side is one recording: chunks of one run are not
  independent (temperature and clocks drift), so each side's standard error
  uses an effective sample size ``n·(1−r₁)/(1+r₁)`` from the lag-1
  autocorrelation r₁ of its chunk series (the AR(1) variance inflation, see
  Wilks, *Statistical Methods in the Atmospheric Sciences*, §5.2.3), with
  ``n_eff − 1`` degrees of freedom. Drift *between* the two runs is not in
  it; `bench/gate_calibration.py` measures what that costs on a machine.

The interval is two-sided 90 % (scipy.stats.t), i.e. two one-sided 95 %
bounds, on the relative change ``(B − A)/A`` in % (A's mean taken as exact,
the first-order delta method). With "worse" meaning lower tok/s or higher
J/token, each gated metric is one of:

* ``REGRESSION``: the better end of the interval is worse than the threshold;
* ``no regression``: the worse end is within the threshold;
* ``inconclusive``: the interval straddles the threshold; the row says how
  many runs (or seconds of baseline per side) would make it narrow enough,
  from the 1/√n shrinking of its half-width.

Power is shown, never gated (a faster setting may rightly draw more). J/token
is not gated when the system power is entirely estimated (tier
``estimate``): an estimate from CPU load says nothing the tok/s row does not.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sps

from anubis_tui.analysis.segments import Figures, SegmentFold, effective_n
from anubis_tui.records import Event, Record

CHUNK_S = 5.0
MAX_RUNS_SHOWN = 50  # beyond this, "needs N runs" is no practical advice
CONFIDENCE = 0.90  # two-sided: each bound is one-sided 95 %
METRICS = (  # key, label, higher is better, gated
    ("decode_tps", "decode tok/s", True, True),
    ("j_per_token", "J/token", False, True),
    ("power_w", "power W", False, False),
)
REGRESSION, NO_REGRESSION, INCONCLUSIVE = "REGRESSION", "no regression", "inconclusive"
EXIT = {NO_REGRESSION: 0, REGRESSION: 1, INCONCLUSIVE: 3}
"""Exit status per outcome; 2 is a refusal (different recordings, no baseline, bad input)."""


def chunked_fold(records: Iterable[Record], chunk_s: float = CHUNK_S) -> SegmentFold:
    """`records` folded with a segment boundary every `chunk_s` seconds.

    A boundary is a ``sweep_step`` that repeats the current step's tags, so the
    fold starts a new segment there and nothing else changes. `compare` gates
    on these chunks and result rows take their intervals from them.
    """
    fold = SegmentFold()
    step = int(chunk_s * 1e9)
    cut = step
    tags: dict[str, Any] = {}
    for r in records:
        t = getattr(r, "t", None)
        while isinstance(t, int) and t >= cut:
            fold.consume(Event(cut, "sweep_step", {**tags, "chunk": True}))
            cut += step
        if isinstance(r, Event) and r.kind == "sweep_step":
            tags = {k: v for k, v in r.payload.items() if k in ("role", "repeat", "treatment")}
        fold.consume(r)
    return fold


def baseline_chunks(records: Iterable[Record], chunk_s: float = CHUNK_S) -> list[Figures]:
    """The recording's baseline time in chunks of `chunk_s` seconds, each with its figures."""
    fold = chunked_fold(records, chunk_s)
    figs = fold.figures()
    swept = any(f.tags.get("role") for f in figs)
    init = fold.initial_knobs or {}
    return [
        f
        for f in figs
        if f.enough_data
        and f.profiler is None
        and all(f.knobs.get(k) == v for k, v in init.items())
        and (f.tags.get("role") == "baseline" if swept else True)
    ]


@dataclass
class Side:
    """One side's figure: the mean, its standard error and degrees of freedom."""

    mean: float | None
    se: float | None
    df: float | None
    n: int  # runs or chunks
    n_eff: float | None = None
    sd: float | None = None
    seconds: float = 0.0

    def plain(self) -> dict[str, Any]:
        """The fields as a dict of JSON types, a row's ``a`` or ``b`` in `compare`'s result."""
        return {
            "mean": self.mean,
            "se": self.se,
            "df": self.df,
            "n": self.n,
            "n_eff": self.n_eff,
            "sd": self.sd,
            "seconds": self.seconds,
        }


def _values(figs: list[Figures], key: str) -> list[float]:
    return [float(v) for f in figs if (v := getattr(f, key)) is not None and math.isfinite(v)]


def chunk_side(figs: list[Figures], key: str) -> Side:
    """A single run's figure from its chunks, autocorrelation-aware."""
    xs = _values(figs, key)
    secs = sum(f.active_s for f in figs)
    if not xs:
        return Side(None, None, None, 0, seconds=secs)
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return Side(m, None, None, 1, seconds=secs)
    sd = statistics.stdev(xs)
    ne = effective_n(xs)
    return Side(m, sd / math.sqrt(ne), max(ne - 1, 1.0), len(xs), ne, sd, secs)


def run_side(runs: list[list[Figures]], key: str) -> Side:
    """Several runs' figure: the mean of run means; their spread is the noise."""
    means = [statistics.fmean(v) for r in runs if (v := _values(r, key))]
    secs = sum(f.active_s for r in runs for f in r)
    if not means:
        return Side(None, None, None, 0, seconds=secs)
    m = statistics.fmean(means)
    if len(means) < 2:
        return Side(m, None, None, 1, seconds=secs)
    sd = statistics.stdev(means)
    return Side(m, sd / math.sqrt(len(means)), len(means) - 1.0, len(means), sd=sd, seconds=secs)


def interval(a: Side, b: Side, unit: str) -> tuple[float, float, float] | None:
    """(change %, low %, high %) of (B − A)/A at `CONFIDENCE`, or None without noise.

    Runs: Welch–Satterthwaite degrees of freedom; a side of one run borrows
    the other side's run-to-run sd. Chunks: each side's autocorrelation-aware
    standard error.
    """
    if a.mean is None or b.mean is None or a.mean == 0:
        return None
    change = 100 * (b.mean - a.mean) / abs(a.mean)
    sa, sb = a, b
    if unit == "runs" and (a.se is None) != (b.se is None):
        known = a if a.se is not None else b
        assert known.sd is not None and known.df is not None
        borrow = Side(None, known.sd, known.df, 1)  # one run: se = sd
        sa, sb = (borrow, b) if a.se is None else (a, borrow)
    if sa.se is None or sb.se is None or sa.df is None or sb.df is None:
        return None
    var = sa.se**2 + sb.se**2
    if var == 0:
        return change, change, change
    den = (sa.se**4 / sa.df if sa.se else 0) + (sb.se**4 / sb.df if sb.se else 0)
    df = var**2 / den if den > 0 else min(sa.df, sb.df)
    q = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df))
    half = 100 * q * math.sqrt(var) / abs(a.mean)
    return change, change - half, change + half


def verdict(worse: float, lo: float, hi: float, threshold: float) -> str:
    """From the worse-is-positive change and its interval [lo, hi] (both in %)."""
    if lo > threshold:
        return REGRESSION
    if hi <= threshold:
        return NO_REGRESSION
    return INCONCLUSIVE


def needed(worse: float, lo: float, hi: float, threshold: float, n: float) -> float | None:
    """How many times `n` would narrow the interval enough to decide (1/√n scaling)."""
    half = (hi - lo) / 2
    gap = abs(worse - threshold)
    if gap < 1e-9 or half <= 0:
        return None
    return n * (half / gap) ** 2


def compare(
    a_runs: Sequence[Iterable[Record]],
    b_runs: Sequence[Iterable[Record]],
    max_regression_pct: float,
    chunk_s: float = CHUNK_S,
    gate_energy: bool = True,
) -> dict[str, Any]:
    """Side A (reference runs) against side B; ``outcome`` is one of the three verdicts.

    `gate_energy` False shows J/token without gating it (an estimated system
    power). Raises nothing: a side without baseline time gives ``outcome``
    "no baseline" and the files in ``no_baseline``.
    """
    ca = [baseline_chunks(r, chunk_s) for r in a_runs]
    cb = [baseline_chunks(r, chunk_s) for r in b_runs]
    return compare_chunks(ca, cb, max_regression_pct, chunk_s, gate_energy)


def _need(w: float, wlo: float, whi: float, threshold: float, unit: str, n: float) -> str:
    """What would decide an inconclusive metric: more runs or more baseline time (`needed`)."""
    k = needed(w, wlo, whi, threshold, n)
    many = MAX_RUNS_SHOWN if unit == "runs" else MAX_RUNS_SHOWN * max(1.0, n)
    if k is None:
        return "the change sits on the threshold: no length decides it"
    if k > many:
        more = (
            f"over {MAX_RUNS_SHOWN} runs a side"
            if unit == "runs"
            else f"over {MAX_RUNS_SHOWN}× this baseline time"
        )
        return more + ": the change is about the threshold, or the noise far above it"
    if unit == "runs":
        return f"about {math.ceil(k)} runs a side"
    return f"about {math.ceil(k)} s of baseline a side, or several runs a side"


def _metric_row(
    sa: Side, sb: Side, unit: str, higher: bool, max_regression_pct: float
) -> dict[str, Any]:
    """One metric's change of B against A, its interval, verdict and what would decide it."""
    row: dict[str, Any] = {}
    ci = interval(sa, sb, unit)
    if ci is None:
        row.update(change_pct=None, low_pct=None, high_pct=None)
        if sa.mean is None or sb.mean is None:
            row["verdict"] = "no data"
        else:
            row["change_pct"] = 100 * (sb.mean - sa.mean) / abs(sa.mean) if sa.mean else None
            row["verdict"] = INCONCLUSIVE
            row["need"] = "at least 2 runs a side" if unit == "runs" else "longer runs"
        return row
    change, lo, hi = ci
    # worse is positive: lower tok/s, higher J/token
    w, wlo, whi = (-change, -hi, -lo) if higher else (change, lo, hi)
    row.update(change_pct=change, low_pct=lo, high_pct=hi, worse_pct=w)
    row["verdict"] = verdict(w, wlo, whi, max_regression_pct)
    if row["verdict"] == INCONCLUSIVE:
        n = max(sa.n, sb.n) if unit == "runs" else max(sa.seconds, sb.seconds)
        row["need"] = _need(w, wlo, whi, max_regression_pct, unit, n)
    return row


def _outcome(rows: Sequence[dict[str, Any]]) -> str:
    verdicts = [r["verdict"] for r in rows if r["gated"]]
    if REGRESSION in verdicts:
        return REGRESSION
    if all(v == NO_REGRESSION for v in verdicts):
        return NO_REGRESSION
    return INCONCLUSIVE


def compare_chunks(
    ca: list[list[Figures]],
    cb: list[list[Figures]],
    max_regression_pct: float,
    chunk_s: float = CHUNK_S,
    gate_energy: bool = True,
) -> dict[str, Any]:
    """`compare` on each run's `baseline_chunks`, already cut (a bench reuses them)."""
    empty = {
        "a": [i for i, c in enumerate(ca) if not c],
        "b": [i for i, c in enumerate(cb) if not c],
    }
    unit = "runs" if max(len(ca), len(cb)) >= 2 else "chunks"
    out: dict[str, Any] = {
        "max_regression_pct": max_regression_pct,
        "chunk_s": chunk_s,
        "confidence": CONFIDENCE,
        "unit": unit,
        "runs": {"a": len(ca), "b": len(cb)},
        "chunks": {"a": sum(map(len, ca)), "b": sum(map(len, cb))},
        "no_baseline": empty,
        "rows": [],
    }
    if empty["a"] or empty["b"]:
        out["outcome"] = "no baseline"
        return out
    rows = []
    for key, label, higher, gated in METRICS:
        if unit == "runs":
            sa, sb = run_side(ca, key), run_side(cb, key)
        else:
            sa, sb = chunk_side(ca[0], key), chunk_side(cb[0], key)
        row: dict[str, Any] = {
            "metric": key,
            "label": label,
            "gated": gated and (gate_energy or key != "j_per_token"),
            "a": sa.plain(),
            "b": sb.plain(),
        }
        row.update(_metric_row(sa, sb, unit, higher, max_regression_pct))
        rows.append(row)
    out["rows"] = rows
    out["outcome"] = _outcome(rows)
    out["failed"] = [r["label"] for r in rows if r["gated"] and r["verdict"] == REGRESSION]
    return out


def render_compare(r: dict[str, Any], names_a: list[str], names_b: list[str]) -> str:
    """The comparison as text: one row per metric, the outcome last."""
    what = "runs" if r["unit"] == "runs" else f"chunks of {r['chunk_s']:g} s (one run a side)"
    lines = [
        f"A: {', '.join(names_a)}: {r['chunks']['a']} baseline chunks",
        f"B: {', '.join(names_b)}: {r['chunks']['b']} baseline chunks",
        f"unit: {what}; interval {100 * r['confidence']:.0f} % (each end one-sided "
        f"{50 + 50 * r['confidence']:.0f} %); max regression {r['max_regression_pct']:g} %",
        f"{'metric':<13} {'A':>16} {'B':>16} {'change':>8} {'interval':>17}  verdict",
    ]

    def show(s: dict[str, Any]) -> str:
        if s["mean"] is None:
            return "—"
        sd = f"±{s['sd']:.3g}" if s["sd"] is not None else ""
        return f"{s['mean']:.4g}{sd}"

    for row in r["rows"]:
        ch = row["change_pct"]
        iv = "—" if row["low_pct"] is None else f"[{row['low_pct']:+.1f}, {row['high_pct']:+.1f}]%"
        verdict_s = row["verdict"] + ("" if row["gated"] else " (not gated)")
        if row.get("need"):
            verdict_s += f": needs {row['need']}"
        lines.append(
            f"{row['label']:<13} {show(row['a']):>16} {show(row['b']):>16} "
            f"{'—' if ch is None else f'{ch:+.1f}%':>8} {iv:>17}  {verdict_s}"
        )
    lines.append(
        r["outcome"].upper()
        if r["outcome"] != REGRESSION
        else "REGRESSION: " + ", ".join(r["failed"])
    )
    return "\n".join(lines)
