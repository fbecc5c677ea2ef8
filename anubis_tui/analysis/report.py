"""`anubis report`: the summary of a recording, as a dict with stable keys and as text."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from anubis_tui.analysis.segments import (
    DEFINITIONS,
    SPEED_BUDGET,
    SegmentFold,
    energy_optimal,
    energy_optimal_ties,
    measured_counters,
    show_knob,
    total,
)
from anubis_tui.analysis.sweep import BUDGET_PCT, render_sweep, sweep_of, sweep_report
from anubis_tui.analysis.windows import energy_j, idle_power, request_energy, window
from anubis_tui.recording.reader import Recording
from anubis_tui.records import PLAUSIBLE


def _col_stats(rec: Recording, cid: str) -> tuple[float | None, float | None]:
    """(mean, max) of a channel's readings; implausible ones (recorded by an older anubis,
    before the sampler dropped them) never count (records.PLAUSIBLE)."""
    col = rec.column(cid)
    if col is None:
        return None, None
    v = col[~np.isnan(col)]
    kind = next((c.kind for c in rec.channels if c.id == cid), "")
    if kind in PLAUSIBLE:
        lo, hi = PLAUSIBLE[kind]
        v = v[(v >= lo) & (v <= hi)]
    return (float(v.mean()), float(v.max())) if len(v) else (None, None)


def _strings(v: object) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def report(rec: Recording, budget_pct: float = BUDGET_PCT) -> dict[str, Any]:
    end = int(rec.duration_s * 1e9)
    whole = window(rec, 0, end + 1)
    ends = [e for e in rec.events if e.kind == "request_end"]
    ttfts = [e.payload["ttft_ns"] / 1e9 for e in ends if e.payload.get("ttft_ns")]
    prompt_ns = sum(e.payload["ttft_ns"] for e in ends if e.payload.get("ttft_ns"))
    prompt_tok = sum(
        int(e.payload.get("prompt_tokens") or 0) for e in ends if e.payload.get("ttft_ns")
    )
    energy_ch = next((c for c in rec.channels if c.id == "system.energy"), None)
    power_ch = next((c for c in rec.channels if c.id == "system.power"), None)
    by_scope: dict[str, dict[str, Any]] = {}
    for c in rec.channels:
        if c.kind == "power" and not c.meta.get("is_limit"):
            mean, mx = _col_stats(rec, c.id)
            if mean is not None:
                by_scope[c.id] = {
                    "mean": mean,
                    "max": mx,
                    "scope": c.scope,
                    "method": c.method,
                }
    temps = {}
    for c in rec.channels:
        if c.kind == "temperature":
            _, mx = _col_stats(rec, c.id)
            if mx is not None:
                temps[c.id] = mx
    counters: dict[str, dict[str, Any]] = {}
    for c in rec.channels:
        if c.kind == "energy" and c.method == "counter" and c.id != "system.energy":
            j = energy_j(rec, 0, end + 1, c.id)
            if j is not None:
                counters[c.id] = {
                    "joules": j,
                    "scope": c.scope,
                    "j_per_token": j / whole.decode_tokens if whole.decode_tokens else None,
                }
    p_mean, p_max = _col_stats(rec, "system.power")
    rate_mean, _ = _col_stats(rec, "anubis.sampler.rate")
    _, jit_max = _col_stats(rec, "anubis.sampler.jitter_p99")
    cpu_mean, _ = _col_stats(rec, "anubis.sampler.cpu")
    self_cpu, _ = _col_stats(rec, "proc.self.cpu")
    sf = SegmentFold().consume_all(rec.records)
    figs = sf.figures()
    segs = [f.plain() for f in figs]
    sweep = sweep_of(rec.events)
    settings = sf.settings()
    fastest, best = energy_optimal(settings)
    fast_tied, lean_tied = energy_optimal_ties(settings)
    headline = _headline(sf, rec, energy_ch.method if energy_ch else None)
    return {
        "duration_s": rec.duration_s - rec.start_s,  # what this file holds
        "host": rec.header.host.get("hostname"),
        "created_utc": rec.header.created_utc,
        "model": rec.header.model.get("name"),
        "headline": headline,
        "tokens": {
            "generated": int(rec.tok_count[rec.tok_decode].sum()),
            "prompt": int(rec.tok_count[~rec.tok_decode].sum()),
            "requests": len(ends),
            "decode_tps": whole.decode_tps,
            "prompt_tps": (prompt_tok / (prompt_ns / 1e9)) if prompt_ns else None,
            "ttft_s": statistics.median(ttfts) if ttfts else None,
        },
        "energy": {
            "joules": whole.energy_j,
            "j_per_token": whole.j_per_token,
            "method": energy_ch.method if energy_ch else None,
            "scope": energy_ch.scope if energy_ch else None,
            "integration": energy_ch.meta.get("integration") if energy_ch else None,
            "system_power": power_ch.meta.get("reason") if power_ch else None,
            "uncovered": _strings(power_ch.meta.get("uncovered")) if power_ch else [],
            "counters": counters,
        },
        "power_w": {"mean": p_mean, "max": p_max, "channels": by_scope},
        "temperature_c": {"max": max(temps.values()) if temps else None, "channels": temps},
        "throttle": {"share": whole.throttle_share},
        "sampler": {
            "rate_hz": rate_mean,
            "jitter_p99_s": jit_max,
            "cpu_ratio": cpu_mean,
            "anubis_cpu_ratio": self_cpu,
        },
        "requests_energy": request_energy(rec),  # issue 23: J per request and its method
        "segments": segs,
        "settings": [f.plain() for f in settings],
        "fastest": fastest.name if fastest else None,
        "energy_optimal": best.name if best else None,
        # every setting tied with those within the noise (90 % intervals, `segments.tied`)
        "fastest_tied": [f.name for f in fast_tied],
        "energy_optimal_tied": [f.name for f in lean_tied],
        "speed_budget": SPEED_BUDGET,
        "initial_knobs": sf.initial_knobs or {},
        "segment_definitions": DEFINITIONS,
        "sweep": sweep_report(figs, sweep, budget_pct) if sweep is not None else None,
        "recovery": {
            "truncated": rec.recovery.truncated,
            "records": rec.recovery.records,
            "stopped_at": rec.recovery.stopped_at,
            "reason": rec.recovery.reason,
        },
    }


def _headline(sf: SegmentFold, rec: Recording, method: str | None) -> dict[str, Any]:
    """The recording's figures by the segment arithmetic (active decode time; loads, pauses
    and gaps outside), measured J/token first, and idle power from the pauses."""
    t = total(sf)
    idle = idle_power(rec)
    meas = measured_counters(rec.header)

    def idle_w(key: str) -> float | None:
        v = idle.get(key) if idle else None
        return float(v) if v is not None else None

    def active(jpt: float | None, idle_w: float | None) -> float | None:
        # idle W × decode time per token, subtracted (Kepler's and ML.ENERGY's "active")
        if jpt is None or idle_w is None or not t.decode_tps:
            return None
        return jpt - idle_w / t.decode_tps

    return {
        "basis": "active decode time, every segment (model loads, pauses and gaps excluded)",
        "segments": t.segments,
        "active_s": t.active_s,
        "decode_tokens": t.decode_tokens,
        "decode_tps": t.decode_tps,
        "j_per_token_measured": t.j_per_token_measured,
        "measured_meters": meas,
        "j_per_token": t.j_per_token,
        "method": method,
        "idle": idle,
        "active_j_per_token_measured": active(t.j_per_token_measured, idle_w("measured_w")),
        "active_j_per_token": active(t.j_per_token, idle_w("system_w")),
    }


def render_headline(r: dict[str, Any]) -> list[str]:
    """The headline: measured J/token first, the estimate-including figure labelled after it,
    idle power and the idle-subtracted (active) J/token beside them."""
    h = r.get("headline") or {}
    if not h:
        return []
    lines = [
        f"headline   {_f(h['decode_tps'])} tok/s over {_f(h['active_s'])} s of active decode "
        f"time ({h['segments']} segment{'s' if h['segments'] != 1 else ''}; loads, pauses and gaps "
        "excluded)"
    ]
    idle = h.get("idle") or {}
    est = h.get("method") == "estimated"
    if h.get("j_per_token_measured") is not None:
        act = h.get("active_j_per_token_measured")
        lines.append(
            f"           {h['j_per_token_measured']:.4f} J/token MEASURED "
            f"({', '.join(h['measured_meters'])})"
            + (
                f"; active {act:.4f} J/token (idle {idle['measured_w']:.1f} W subtracted)"
                if act is not None
                else ""
            )
        )
    if h.get("j_per_token") is not None:
        act = h.get("active_j_per_token")
        label = (
            "ESTIMATED (system power with estimated parts)" if est else f"system ({h['method']})"
        )
        lines.append(
            f"           {h['j_per_token']:.4f} J/token {label}"
            + (
                f"; active {act:.4f} J/token (idle {idle['system_w']:.1f} W subtracted)"
                if act is not None
                else ""
            )
        )
    if idle:
        lines.append(
            f"           idle power measured in {idle['pauses']} pause(s), "
            f"{idle['seconds']:.1f} s: "
            f"{_f(idle.get('measured_w'), '.1f', ' W')} measured, "
            f"{_f(idle.get('system_w'), '.1f', ' W')} system"
        )
    else:
        lines.append(
            "           idle power: not measured (no pause in this recording; pause with p, "
            "or a plan step, for an idle-subtracted J/token)"
        )
    return lines


def _f(v: float | None, fmt: str = ".1f", unit: str = "") -> str:
    return "—" if v is None else f"{v:{fmt}}{unit}"


def render(r: dict[str, Any]) -> str:
    t, e = r["tokens"], r["energy"]
    lines = [
        f"recording  {r['created_utc']} on {r['host']}, {r['duration_s']:.1f} s, "
        f"model {r['model'] or '—'}",
        f"tokens     {t['generated']} generated in {t['requests']} requests; decode "
        f"{_f(t['decode_tps'])} tok/s, prompt {_f(t['prompt_tps'])} tok/s, TTFT "
        f"{_f(t['ttft_s'] and t['ttft_s'] * 1e3)} ms",
        *render_headline(r),
        f"whole      {_f(e['joules'], '.2f', ' J')} over the whole recording (loads, pauses and "
        f"idle included), {_f(e['j_per_token'], '.4f', ' J/token')} "
        f"[{e['method']}{', ' + e['integration'] if e['integration'] else ''}]"
        f"{'  (ESTIMATED)' if e['method'] == 'estimated' else ''}",
        f"           system power: {e['system_power'] or '—'}",
        *(f"           not covered: {part}" for part in e.get("uncovered") or []),
        *(
            f"           {cid}: {d['joules']:.2f} J, {_f(d['j_per_token'], '.4f', ' J/token')} "
            f"[measured counter, {d['scope']}]"
            for cid, d in e["counters"].items()
        ),
        f"power      mean {_f(r['power_w']['mean'], '.1f', ' W')}, max "
        f"{_f(r['power_w']['max'], '.1f', ' W')}",
    ]
    for cid, d in r["power_w"]["channels"].items():
        lines.append(
            f"             {cid:<30} mean {d['mean']:8.2f} W  max {d['max']:8.2f} W  "
            f"[{d['method']}, {d['scope']}]"
        )
    q = r.get("requests_energy") or {}
    if q.get("median_j") is not None:
        lines.append(
            f"request    {_f(q['median_j'], '.2f', ' J')} median per request, "
            f"{_f(q['median_j_per_token'], '.4f', ' J/token')} median over "
            f"{len(q['requests'])} requests [{q['method']}]"
        )
    lines.append(f"heat       max {_f(r['temperature_c']['max'], '.1f', ' °C')}")
    share = r["throttle"]["share"]
    lines.append(
        "throttle   " + (", ".join(f"{k} {v:.0%}" for k, v in share.items() if v) or "none active")
    )
    s = r["sampler"]
    lines.append(
        f"sampler    {_f(s['rate_hz'])} Hz, p99 lateness "
        f"{_f(s['jitter_p99_s'] and s['jitter_p99_s'] * 1e3, '.2f', ' ms')}, CPU "
        f"{_f(s['cpu_ratio'] and s['cpu_ratio'] * 100, '.2f', ' %')} of a core"
    )
    if r["recovery"]["truncated"]:
        lines.append(
            f"recovery   cut file: {r['recovery']['records']} records read, stopped "
            f"at byte {r['recovery']['stopped_at']} ({r['recovery']['reason']})"
        )
    lines.append("")
    lines += render_segments(r["segments"])
    lines.append("")
    lines += render_settings(r)
    if r.get("sweep"):
        lines.append("")
        lines += render_sweep(r["sweep"])
    return "\n".join(lines)


def render_settings(r: dict[str, Any]) -> list[str]:
    """Every setting tried, the Pareto front (tok/s against J/token) and the energy-optimal one."""
    sets = r.get("settings") or []
    if not sets:
        return []
    init = r.get("initial_knobs") or {}
    start = " ".join(f"{k}={show_knob(k, v)}" for k, v in init.items() if v is not None)
    lines = [
        f"settings   (at the start: {start or 'knobs unknown'})",
        f"  {'setting':<34} {'segs':>4} {'active':>7} {'tok/s':>7} {'±90%':>5} {'W':>7} "
        f"{'J/tok':>8} {'±90%':>7} {'max°C':>6} {'load s':>6}  pareto",
    ]
    for g in sets:
        lines.append(
            f"  {g['name']:<34.34} {g['segments']:>4} {g['active_s']:>6.1f}s "
            f"{_f(g['decode_tps']):>7} {_f(g.get('tps_ci')):>5} {_f(g['power_w']):>7} "
            f"{_f(g['j_per_token'], '.4f'):>8} {_f(g.get('jpt_ci'), '.4f'):>7} "
            f"{_f(g['temp_max_c']):>6} {_f(g['load_s']):>6}  "
            + ("*" if g["pareto"] else "" if g["enough_data"] else "(too little data)")
        )
    budget = 100 * (r.get("speed_budget") or 0.05)
    if r.get("energy_optimal"):
        fast = r.get("fastest_tied") or [r["fastest"]]
        lean = r.get("energy_optimal_tied") or [r["energy_optimal"]]

        def named(names: list[str]) -> str:
            return names[0] if len(names) == 1 else f"a tie within noise: {', '.join(names)}"

        lines.append(
            f"  fastest: {named(fast)}; lowest J/token within {budget:.0f} % of its tok/s: "
            f"{named(lean)}"
        )
    lines.append("  * Pareto front: " + DEFINITIONS["pareto"])
    lines.append(
        "  ±90%: half-width of a 90 % interval: per-request tok/s with an effective sample "
        "size, widened by the drift between repeated segments of one setting; settings "
        "closer than their combined half-widths are a tie"
    )
    return lines


SEGMENT_HEAD = (
    f"{'segment':<30} {'start':>6} {'end':>6} {'tok/s':>7} {'W':>7} {'J/tok':>8} "
    f"{'Δtok/s':>8} {'ΔW':>7} {'ΔJ/tok':>8} {'Δ°C':>5} {'prof CPU':>8} {'samples':>7}"
)


def render_segments(segs: list[dict[str, Any]]) -> list[str]:
    """The segment table, then what each column means and each segment's hot frames."""
    lines = [SEGMENT_HEAD]
    for g in segs:
        d = g["delta"] or {}
        note = ""
        if not g["enough_data"] and g["profiler"] is None:
            note = "  (too little data)"
        elif g["not_comparable"]:
            note = f"  ({g['not_comparable']})"
        elif d.get("against") == "previous":
            note = f"  vs the segment before ({d['baseline']})"
        elif d.get("baseline_start_s") is not None:
            note = f"  vs baseline at {d['baseline_start_s']:.0f}s"
        lines.append(
            f"{g['name']:<30.30} {g['start_s']:>6.1f} {g['end_s']:>6.1f} "
            f"{_f(g['decode_tps']):>7} {_f(g['power_w']):>7} {_f(g['j_per_token'], '.4f'):>8} "
            f"{_f(d.get('decode_tps_pct'), '+.1f', '%'):>8} {_f(d.get('power_w'), '+.1f'):>7} "
            f"{_f(d.get('j_per_token_pct'), '+.1f', '%'):>8} {_f(d.get('temp_max_c'), '+.0f'):>5} "
            f"{_f(g['profiler_cpu'] and g['profiler_cpu'] * 100, '.1f', '%'):>8} "
            f"{g['samples'] if g['samples'] is not None else '—':>7}" + note
        )
    lines.append("")
    lines.append("columns: " + "; ".join(f"{k}: {v}" for k, v in DEFINITIONS.items()))
    for g in segs:
        if g["hot_frames"]:
            top = ", ".join(
                f"{fr.get('function')} ({fr.get('where')}) {100 * (fr.get('share') or 0):.0f}%"
                for fr in g["hot_frames"][:3]
            )
            lines.append(f"hot in {g['name']} at {g['start_s']:.0f}s: {top}")
    return lines
