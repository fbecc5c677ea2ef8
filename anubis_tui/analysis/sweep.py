"""The report of a sweep: each treatment against its interleaved baselines, over repeats.

For every profiler at every rate: Δ decode tok/s, Δ system power (W and %),
Δ J/token, Δ max °C, throttle share, the profiler's CPU, and what it found
(samples, distinct stacks, samples per joule of overhead), each with its
spread over repeats.

Recommendations come from bounds, not from point estimates. A treatment's
overhead is, per repeat, its Δ against the baseline beside it: the tok/s
cost (−Δtok/s %) and the J/token cost (Δ J/token % on the *measured*
meters only: the system power's channels that are not estimated, through
their energy counters; an estimated part, such as a CPU estimated from load,
rises with the profiler's own CPU and is shown apart, never deciding). Over
the repeats, each cost gets a one-sided 95 % upper and lower bound (Student
t, scipy.stats), whose spread is never taken below √2 × the baselines' own
spread (a difference of two segments; see `bounds`). A rate is

* **within budget** when both upper bounds are within the budget;
* **over budget** when a lower bound is beyond it;
* **inconclusive** otherwise, or with one repeat (no interval): the row says
  about how many repeats would decide it (the 1/√n shrinking of the bound).

The recommended rate of a profiler is its highest rate that is within budget
with every lower rate; a warm-up that did not reach steady state is named in
each recommendation.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats as sps

from anubis_tui.analysis.segments import Figures
from anubis_tui.config import read_regular
from anubis_tui.profilerspec import ProfilerSetting

BUDGET_PCT = 2.0
MAX_ARTIFACT = 256 << 20
NO_OVERHEAD = "no measurable overhead"
MAX_REPEATS_SHOWN = 50  # beyond this, "more repeats" is no practical advice


def distinct_stacks(path: str | None) -> int | None:
    """Distinct call stacks in a py-spy speedscope file, or lines with CPU time in scalene's
    JSON; None when there is no readable artifact."""
    if not path:
        return None
    try:
        d = json.loads(read_regular(Path(path), MAX_ARTIFACT, "a profile"))
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("profiles"), list):  # speedscope
        stacks = set()
        for prof in d["profiles"]:
            for st in prof.get("samples") or [] if isinstance(prof, dict) else []:
                if isinstance(st, list):
                    stacks.add(tuple(st))
        return len(stacks)
    files = d.get("files")
    if isinstance(files, dict):  # scalene
        n = 0
        for f in files.values():
            for line in f.get("lines", []) if isinstance(f, dict) else []:
                if not isinstance(line, dict):
                    continue
                cpu = (line.get("n_cpu_percent_python") or 0) + (line.get("n_cpu_percent_c") or 0)
                if isinstance(cpu, int | float) and cpu > 0:
                    n += 1
        return n
    return None


def _mean_sd(xs: Sequence[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) >= 2 else None)


def _spread_pct(values: Sequence[float]) -> float | None:
    """The baselines' own spread between repeats: their standard deviation, % of their mean."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    m = statistics.fmean(vals)
    return 100 * statistics.stdev(vals) / m if m else None


def _rate_of(name: str) -> tuple[str, float | None]:
    """``py-spy@100n`` → (``py-spy --native``, 100.0); knob settings → (name, None).

    The treatment's name is parsed by `ProfilerSetting.parse`, the one parser.
    """
    if "@" not in name:
        return name, None
    try:
        setting = ProfilerSetting.parse(name)
    except ValueError:
        return name, None
    if setting.segment_profiler is None:
        return name, None
    return setting.segment_profiler, setting.rate_hz


def bounds(
    xs: Sequence[float], floor: tuple[float, int] | None = None
) -> tuple[float | None, float | None, float | None]:
    """(mean, one-sided 95 % lower bound, upper bound) over repeats; bounds None below two.

    `floor` is (sd, degrees of freedom) of the noise no repeat can be below: a
    cost is a treatment segment minus the baseline beside it, so its standard
    deviation is at least √2 × the baselines' own spread. With two repeats the
    sample sd alone can come out near zero by chance (two identical H200 sweeps
    once gave py-spy@1000 "+0.0 % ±0.0" in one and +2.9 % in the other, and
    recommended different rates); the larger of the two estimates is used, with
    the degrees of freedom of the one used.
    """
    if not xs:
        return None, None, None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, None, None
    sd, df = statistics.stdev(xs), len(xs) - 1
    if floor is not None and floor[0] > sd and floor[1] >= 1:
        sd, df = floor
    half = float(sps.t.ppf(0.95, df)) * sd / math.sqrt(len(xs))
    return m, m - half, m + half


def decide(
    costs: dict[str, list[float]],
    budget_pct: float,
    floors: dict[str, tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Within / over budget / inconclusive from the costs' bounds (see the module doc).

    `floors` gives, per cost, the least noise a repeat has (`bounds`), from the baselines.
    """
    out: dict[str, Any] = {"decision": "inconclusive", "more_repeats": None, "why": ""}
    n = min((len(v) for v in costs.values()), default=0)
    if n < 2:
        out["why"] = "one repeat: no interval" if n == 1 else "no repeat with data"
        out["more_repeats"] = 1 if n == 1 else None
        return out
    ubs, over, need = {}, [], []
    for key, xs in costs.items():
        m, lo, hi = bounds(xs, (floors or {}).get(key))
        assert m is not None and lo is not None and hi is not None
        ubs[key] = hi
        if lo > budget_pct:
            over.append(key)
        elif hi > budget_pct:  # straddles: repeats for the bound to reach the budget
            half, gap = hi - m, abs(budget_pct - m)
            need.append(math.ceil(n * (half / gap) ** 2) - n if gap > 1e-9 else None)
    out["upper"] = ubs
    if over:
        out["decision"] = "over"
        out["why"] = " and ".join(over) + " cost beyond the budget at 95 %"
    elif not need:
        out["decision"] = "within"
    elif None in need:
        out["why"] = "the cost sits on the budget: no number of repeats decides it"
    else:
        k = max(1, *[k for k in need if k is not None])
        out["more_repeats"] = k
        out["why"] = (
            f"about {k} more repeats would decide it"
            if k <= MAX_REPEATS_SHOWN
            else f"over {MAX_REPEATS_SHOWN} more repeats: the cost is about the budget"
        )
    return out


def _pair_figures(
    done: Sequence[tuple[Figures, dict[str, Any]]], by_index: dict[int, Figures]
) -> tuple[list[float], list[float], list[float]]:
    """Per repeat, against the baseline beside it: ΔW in % of its power, samples per joule of
    extra energy, and the profile's distinct stacks."""
    d_w_pct: list[float] = []
    per_joule: list[float] = []
    stacks: list[float] = []
    for f, d in done:
        b = by_index.get(f.baseline_index) if f.baseline_index is not None else None
        if b is not None and b.power_w and d.get("power_w") is not None:
            d_w_pct.append(100 * d["power_w"] / b.power_w)
        n = distinct_stacks(f.artifact)
        if n is not None:
            stacks.append(float(n))
        if b is not None and f.samples and f.j_per_token and b.j_per_token:
            extra_j = (f.j_per_token - b.j_per_token) * f.decode_tokens
            if extra_j > 0:
                per_joule.append(f.samples / extra_j)
    return d_w_pct, per_joule, stacks


def _series(segs: Sequence[Figures], by_index: dict[int, Figures]) -> dict[str, list[float]]:
    """A treatment's values over its repeats, by row key (`sweep_report`)."""
    done = [(f, f.delta) for f in segs if f.delta is not None]

    def vals(key: str) -> list[float]:
        return [d[key] for _, d in done if d.get(key) is not None]

    d_w_pct, per_joule, stacks = _pair_figures(done, by_index)
    return {
        "decode_tps_pct": vals("decode_tps_pct"),
        "power_w": vals("power_w"),
        "power_pct": d_w_pct,
        "j_per_token_pct": vals("j_per_token_pct"),
        "j_per_token_measured_pct": vals("j_per_token_measured_pct"),
        "temp_max_c": vals("temp_max_c"),
        "throttle_share": [
            max((v for k, v in f.throttle_share.items() if k != "idle"), default=0.0) for f in segs
        ],
        "profiler_cpu": [f.profiler_cpu for f in segs if f.profiler_cpu is not None],
        "samples": [float(f.samples) for f in segs if f.samples is not None],
        "distinct_stacks": stacks,
        "samples_per_joule": per_joule,
    }


def _treatment_row(
    name: str, segs: Sequence[Figures], xs: dict[str, list[float]], noise: dict[str, Any]
) -> dict[str, Any]:
    """One treatment's row: mean and sd of each of its series `xs` (`_series`) over repeats,
    and whether its deltas are beyond the baselines' spread `noise`."""
    prof, rate = _rate_of(name)
    row: dict[str, Any] = {
        "treatment": name,
        "profiler": prof if rate is not None else None,
        "rate_hz": rate,
        "repeats": sum(1 for f in segs if f.delta is not None),
        "segments": len(segs),
        "not_comparable": sorted({f.not_comparable for f in segs if f.not_comparable}),
    }
    for key, vs in xs.items():
        row[key], row[f"{key}_sd"] = _mean_sd(vs)
    row["tps_measurable"] = _measurable(row["decode_tps_pct"], noise["decode_tps_pct"])
    row["jpt_measurable"] = _measurable(row["j_per_token_pct"], noise["j_per_token_pct"])
    if row["jpt_measurable"] is False:  # no measurable extra energy: no samples per joule
        row["samples_per_joule"] = row["samples_per_joule_sd"] = None
    return row


def _noise(base: Sequence[Figures]) -> tuple[dict[str, Any], dict[str, tuple[float, int]]]:
    """The baselines' own spread between repeats (% of their mean, by row key), and each
    cost's noise floor (`bounds`): a difference of two segments, each as noisy as the
    baselines, so √2 × their spread, with their degrees of freedom."""
    noise = {
        key: _spread_pct([v for f in base if (v := getattr(f, attr)) is not None])
        for key, attr in (
            ("decode_tps_pct", "decode_tps"),
            ("j_per_token_pct", "j_per_token"),
            ("j_per_token_measured_pct", "j_per_token_measured"),
        )
    }
    floors = {
        key: (math.sqrt(2) * n, len(base) - 1)
        for key, n in (
            ("tok/s", noise["decode_tps_pct"]),
            ("measured J/token", noise["j_per_token_measured_pct"]),
        )
        if n is not None and len(base) >= 2
    }
    return noise, floors


def sweep_report(
    figs: Sequence[Figures], sweep: dict[str, Any], budget_pct: float = BUDGET_PCT
) -> dict[str, Any]:
    """Per treatment, the mean and spread of its deltas over repeats with its decision, and per
    profiler the recommended rate. J/token decides only where the segments have a measured
    J/token (`Figures.j_per_token_measured`)."""
    by_index = {f.index: f for f in figs}
    # A step's segment is the one its sweep_step started; the slivers of a change (a profiler
    # stopping, a reload) before it carry the step before's tags and are no part of either.
    steps = [f for f in figs if f.cause == "sweep"]
    base = [f for f in steps if f.tags.get("role") == "baseline" and f.enough_data]
    noise, floors = _noise(base)
    measured = any(f.j_per_token_measured is not None for f in steps)
    rows = []
    for name in sweep.get("treatments", []):
        segs = [
            f
            for f in steps
            if f.tags.get("role") == "treatment" and f.tags.get("treatment") == name
        ]
        xs = _series(segs, by_index)
        row = _treatment_row(name, segs, xs, noise)
        costs = {"tok/s": [-x for x in xs["decode_tps_pct"]]}
        if measured:
            costs["measured J/token"] = xs["j_per_token_measured_pct"]
        row.update(decide(costs, budget_pct, floors))
        rows.append(row)
    warm = sweep.get("warmup") or {}
    return {
        "noise": {**noise, "baselines": len(base)},
        "budget_pct": budget_pct,
        "energy_decides": measured,
        "rows": rows,
        "recommended": recommend(rows, budget_pct, warm),
        "warmup": sweep.get("warmup"),
        "cooldowns": sweep.get("cooldowns"),
        "order": sweep.get("order"),
        "seed": sweep.get("seed"),
    }


def _measurable(mean: float | None, noise: float | None) -> bool | None:
    """Whether |mean| is beyond the baselines' spread (None: not known). Shown, not deciding."""
    if mean is None:
        return None
    if noise is None:
        return True
    return abs(mean) > noise


def recommend(
    rows: Sequence[dict[str, Any]], budget_pct: float, warmup: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Per profiler: the highest rate decided within budget with every lower rate, or None;
    the evidence, the first undecided or over-budget rate above it, and the warm-up's state."""
    out: dict[str, dict[str, Any]] = {}
    profs = sorted({r["profiler"] for r in rows if r.get("profiler")})
    cold = (
        f"; warm-up not steady ({warmup.get('reason')}): read with care"
        if warmup and not warmup.get("reached")
        else ""
    )
    for p in profs:
        mine = sorted((r for r in rows if r["profiler"] == p), key=lambda r: r["rate_hz"] or 0)
        # From the lowest rate up, to the first that is not decided within budget: a higher
        # rate that looks cheap beyond an expensive or undecided one is not evidence.
        ok: list[dict[str, Any]] = []
        stop = None
        for r in mine:
            if r.get("decision") != "within":
                stop = r
                break
            ok.append(r)
        why = ""
        if stop is not None:
            what = {"over": "over budget", "inconclusive": "inconclusive"}.get(
                stop.get("decision", ""), "inconclusive"
            )
            why = f"{stop['rate_hz']:g} Hz {what}"
            if stop.get("why"):
                why += f" ({stop['why']})"
            why += f": {_show(stop, 'decode_tps_pct', raw=True)} tok/s, {_jpt(stop)} J/token"
        if not ok:
            out[p] = {
                "rate_hz": None,
                "decision": stop.get("decision") if stop else "inconclusive",
                "more_repeats": stop.get("more_repeats") if stop else None,
                "evidence": (why or "no data") + f" (budget {budget_pct:g} %)" + cold,
            }
            continue
        best = ok[-1]
        ub = best.get("upper") or {}
        bound = ", ".join(f"{k} ≤ {v:+.1f} %" for k, v in ub.items())
        out[p] = {
            "rate_hz": best["rate_hz"],
            "decision": "within",
            "more_repeats": stop.get("more_repeats") if stop else None,
            "evidence": (
                f"{best['rate_hz']:g} Hz costs {bound} at 95 % over {best['repeats']} repeats"
                + (f"; {why}" if why else " (the highest rate tried)")
                + cold
            ),
        }
    return out


def _jpt(row: dict[str, Any]) -> str:
    """The J/token change that decides (measured), the estimate-including one beside it."""
    if row.get("j_per_token_measured_pct") is not None:
        return (
            _show(row, "j_per_token_measured_pct")
            + f" measured ({_show(row, 'j_per_token_pct', raw=True)} incl. estimate)"
        )
    return _show(row, "j_per_token_pct", raw=True) + " (estimated: not deciding)"


def _show(row: dict[str, Any], key: str, raw: bool = False) -> str:
    """mean ±sd in %; NO_OVERHEAD inside the baselines' spread unless `raw`."""
    m = row.get(key)
    if m is None:
        return "—"
    flag = {"decode_tps_pct": "tps_measurable", "j_per_token_pct": "jpt_measurable"}.get(key)
    if flag and row.get(flag) is False and not raw:
        return NO_OVERHEAD
    sd = row.get(f"{key}_sd")
    return f"{m:+.1f} %" + (f" ±{sd:.1f}" if sd is not None else "")


def render_sweep(r: dict[str, Any]) -> list[str]:
    """The sweep table, the noise it is read against, and the recommended rates."""
    n = r["noise"]
    lines = [
        "sweep      treatments against the baseline beside each, mean ±sd over repeats; "
        "baselines' own spread: tok/s "
        + (f"±{n['decode_tps_pct']:.1f} %" if n["decode_tps_pct"] is not None else "—")
        + ", J/token "
        + (f"±{n['j_per_token_pct']:.1f} %" if n["j_per_token_pct"] is not None else "—")
        + f" ({n['baselines']} baselines)",
        f"  {'treatment':<22} {'n':>2} {'Δtok/s':>16} {'ΔW':>12} {'ΔW%':>7} {'ΔJ/tok':>16} "
        f"{'meas.ΔJ/tok':>16} {'Δ°C':>5} {'thr':>4} {'prof CPU':>8} {'samples':>8} "
        f"{'stacks':>7} {'samp/J':>8}  decision",
    ]

    def num(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0, unit: str = "") -> str:
        v = row.get(key)
        return "—" if v is None else f"{v * scale:{fmt}}{unit}"

    for row in r["rows"]:
        tps = _show(row, "decode_tps_pct")
        jpt = _show(row, "j_per_token_pct")
        lines.append(
            f"  {row['treatment']:<22.22} {row['repeats']:>2} "
            f"{tps if len(tps) <= 16 else 'none measurable':>16} "
            f"{num(row, 'power_w', '+.1f', unit=' W'):>12} "
            f"{num(row, 'power_pct', '+.1f', unit='%'):>7} "
            f"{jpt if len(jpt) <= 16 else 'none measurable':>16} "
            f"{_show(row, 'j_per_token_measured_pct'):>16} "
            f"{num(row, 'temp_max_c', '+.0f'):>5} {num(row, 'throttle_share', '.0%'):>4} "
            f"{num(row, 'profiler_cpu', '.1f', 100, '%'):>8} {num(row, 'samples', '.0f'):>8} "
            f"{num(row, 'distinct_stacks', '.0f'):>7} {num(row, 'samples_per_joule', '.0f'):>8}"
            f"  {_decision(row)}"
            + (f"  ({', '.join(row['not_comparable'])})" if row["not_comparable"] else "")
        )
    lines.append(
        f"  'none measurable': {NO_OVERHEAD} (smaller than the baselines' spread: shown, never "
        "deciding); samp/J: samples per joule of extra energy; ΔJ/tok includes estimated parts, "
        "meas.ΔJ/tok only measured meters"
    )
    lines.append(
        f"  decision: one-sided 95 % bounds of the costs over repeats against the "
        f"{r['budget_pct']:g} % budget: tok/s"
        + (" and measured J/token" if r.get("energy_decides") else " only (no measured meter)")
    )
    for prof, rec in r["recommended"].items():
        rate = rec["rate_hz"]
        head = f"{rate:g} Hz" if rate is not None else "none"
        lines.append(f"  recommended {prof}: {head} — {rec['evidence']}")
    w = r.get("warmup") or {}
    if w:
        state = "steady" if w.get("reached") else f"not steady: {w.get('reason')}"
        lines.append(f"  warm-up {w.get('seconds', 0):.0f} s, {state}")
    cds = r.get("cooldowns") or []
    if cds:
        missed = sum(1 for c in cds if not c.get("reached"))
        lines.append(f"  cooldown waits: {len(cds)}, {missed} did not get within 1 °C")
    return lines


def _decision(row: dict[str, Any]) -> str:
    d = row.get("decision")
    if d == "within":
        return "within budget"
    if d == "over":
        return "over budget"
    return "inconclusive" + (f": {row['why']}" if row.get("why") else "")


def sweep_of(events: Sequence[Any]) -> dict[str, Any] | None:
    """The sweep a recording ran (its ``sweep`` Event, warm-up and cooldowns), or None."""
    sweep = None
    for e in events:
        if e.kind == "sweep" and isinstance(e.payload, dict):
            sweep = dict(e.payload)
            sweep["cooldowns"] = []
        elif sweep is not None and e.kind == "warmup":
            sweep["warmup"] = dict(e.payload)
        elif sweep is not None and e.kind == "cooldown":
            sweep["cooldowns"].append(dict(e.payload))
    return sweep
