"""`anubis compare`: two recordings' baselines on decode tok/s, J/token and power, with noise.

Each recording's baseline time (no profiler, the knobs it started with; in a
sweep, its baseline segments) is cut into chunks of `CHUNK_S` seconds, each
folded with the one segment arithmetic. A chunk is one measurement: the
mean over chunks is the figure, their spread its noise (standard error).
B regresses when it is worse than A by more than the threshold *and* by
more than the noise (twice the combined standard error, about 95 %). The
gate is on tok/s and J/token; power is shown, not gated (a faster setting
may rightly draw more).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anubis_tui.analysis.segments import Figures, SegmentFold
from anubis_tui.records import Event, Record

CHUNK_S = 5.0
METRICS = (  # key, label, higher is better, gated
    ("decode_tps", "decode tok/s", True, True),
    ("j_per_token", "J/token", False, True),
    ("power_w", "power W", False, False),
)


@dataclass
class Stat:
    mean: float | None
    sd: float | None
    n: int

    @property
    def se(self) -> float | None:
        return self.sd / math.sqrt(self.n) if self.sd is not None and self.n else None

    def plain(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "se": self.se}


def baseline_chunks(records: Iterable[Record], chunk_s: float = CHUNK_S) -> list[Figures]:
    """The recording's baseline time in chunks of `chunk_s` seconds, each with its figures."""
    fold = SegmentFold()
    step = int(chunk_s * 1e9)
    cut = step
    tags: dict[str, Any] = {}
    for r in records:
        t = getattr(r, "t", None)
        while isinstance(t, int) and t >= cut:
            # a boundary that changes nothing but the segment: the same step's tags again
            fold.consume(Event(cut, "sweep_step", {**tags, "chunk": True}))
            cut += step
        if isinstance(r, Event) and r.kind == "sweep_step":
            tags = {k: v for k, v in r.payload.items() if k in ("role", "repeat", "treatment")}
        fold.consume(r)
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


def stat(figs: list[Figures], key: str) -> Stat:
    xs = [getattr(f, key) for f in figs if getattr(f, key) is not None]
    if not xs:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) >= 2 else None, len(xs))


def compare(
    a: Iterable[Record], b: Iterable[Record], max_regression_pct: float, chunk_s: float = CHUNK_S
) -> dict[str, Any]:
    ca, cb = baseline_chunks(a, chunk_s), baseline_chunks(b, chunk_s)
    rows = []
    failed = []
    for key, label, higher, gated in METRICS:
        sa, sb = stat(ca, key), stat(cb, key)
        row: dict[str, Any] = {"metric": key, "label": label, "a": sa.plain(), "b": sb.plain()}
        row["gated"] = gated
        if sa.mean and sb.mean is not None:
            change = 100 * (sb.mean - sa.mean) / sa.mean
            worse = -change if higher else change
            ses = [s for s in (sa.se, sb.se) if s is not None]
            noise = 200 * math.sqrt(sum(s * s for s in ses)) / abs(sa.mean) if ses else None
            row.update(change_pct=change, worse_pct=worse, noise_pct=noise)
            beyond_noise = noise is None or worse > noise
            row["regression"] = bool(worse > max_regression_pct and beyond_noise)
            row["verdict"] = (
                "REGRESSION"
                if row["regression"]
                else "within noise"
                if worse > max_regression_pct
                else "ok"
            )
            if row["regression"] and gated:
                failed.append(label)
        else:
            row.update(change_pct=None, worse_pct=None, noise_pct=None, regression=False)
            row["verdict"] = "no data"
        rows.append(row)
    return {
        "max_regression_pct": max_regression_pct,
        "chunk_s": chunk_s,
        "chunks": {"a": len(ca), "b": len(cb)},
        "rows": rows,
        "failed": failed,
        "ok": not failed and bool(ca) and bool(cb),
    }


def render_compare(r: dict[str, Any], name_a: str, name_b: str) -> str:
    lines = [
        f"A {name_a}: {r['chunks']['a']} baseline chunks of {r['chunk_s']:g} s",
        f"B {name_b}: {r['chunks']['b']} baseline chunks",
        f"{'metric':<13} {'A':>16} {'B':>16} {'change':>8} {'noise':>7}  verdict "
        f"(max regression {r['max_regression_pct']:g} %)",
    ]

    def show(s: dict[str, Any]) -> str:
        if s["mean"] is None:
            return "—"
        sd = f"±{s['sd']:.3g}" if s["sd"] is not None else ""
        return f"{s['mean']:.4g}{sd}"

    for row in r["rows"]:
        ch = row["change_pct"]
        nz = row["noise_pct"]
        verdict = row["verdict"] + ("" if row["gated"] else " (not gated)")
        lines.append(
            f"{row['label']:<13} {show(row['a']):>16} {show(row['b']):>16} "
            f"{'—' if ch is None else f'{ch:+.1f}%':>8} {'—' if nz is None else f'±{nz:.1f}%':>7}  "
            f"{verdict}"
        )
    if not r["chunks"]["a"] or not r["chunks"]["b"]:
        lines.append("no baseline time with enough data in one of them: nothing to compare")
    lines.append(
        "FAIL: " + ", ".join(r["failed"]) if r["failed"] else ("PASS" if r["ok"] else "FAIL")
    )
    return "\n".join(lines)
