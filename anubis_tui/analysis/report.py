"""`anubis report`: the summary of a recording, as a dict with stable keys and as text."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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
from anubis_tui.analysis.windows import RunFold
from anubis_tui.recording.reader import (
    OutOfOrder,
    RecordFile,
    Recording,
    Recovery,
    in_time_order,
    read_all,
    time_ordered,
)
from anubis_tui.records import Channel, Event, Header, Record

KEPT_EVENTS = ("sweep", "warmup", "cooldown", "quality")
"""Events the report keeps whole (a sweep's description, `sweep --quality` results)."""


class ReportFold:
    """Everything `report` prints, folded from records in time order in one pass
    (`SegmentFold` for the segments and settings, `RunFold` for the whole run). Memory
    grows with requests, segments and events kept (`KEPT_EVENTS`), not with samples.
    """

    def __init__(self) -> None:
        self.segments = SegmentFold()
        self.run: RunFold | None = None
        self.header: Header | None = None
        self.kept: list[Event] = []
        self.recovery = Recovery()

    def consume(self, rec: Record) -> None:
        """Fold one record (in time order) into the segments and, from the Header on, the run."""
        self.segments.consume(rec)
        if isinstance(rec, Header):
            self.header = rec
            self.run = RunFold(rec)
            return
        if self.run is None:
            return
        if isinstance(rec, Event) and rec.kind in KEPT_EVENTS:
            self.kept.append(rec)
        self.run.consume(rec)

    def consume_all(self, records: Iterable[Record]) -> ReportFold:
        """Fold a batch of records (in time order); the same as `consume` on each, with the
        per-record dispatch hoisted out of the loop. Returns self."""
        it = iter(records)
        if self.run is None:  # up to the Header
            for r in it:
                self.consume(r)
                if self.run is not None:
                    break
        seg, run, kept = self.segments.consume, self.run, self.kept
        if run is None:
            return self
        for r in it:  # the hot loop: a day at 10 Hz is millions of records
            seg(r)
            if type(r) is Event and r.kind in KEPT_EVENTS:
                kept.append(r)
            run.consume(r)
        return self

    def result(self, recovery: Recovery, budget_pct: float = BUDGET_PCT) -> dict[str, Any]:
        """The report (see `report`); call once, after the last record."""
        run, header = self.run, self.header
        if run is None or header is None:
            raise ValueError("no Header was folded")
        run.finish()
        duration_s = float(run.last) / 1e9
        start_s = run.first / 1e9 if run.first is not None else 0.0
        end = int(duration_s * 1e9) + 1
        sf = self.segments
        figs = sf.figures()
        settings = sf.settings()
        fastest, best = energy_optimal(settings)
        fast_tied, lean_tied = energy_optimal_ties(settings)
        sweep = sweep_of(self.kept)
        energy_ch = _channel(run, "system.energy")
        return {
            "duration_s": duration_s - start_s,  # what this file holds
            "host": header.host.get("hostname"),
            "created_utc": header.created_utc,
            "model": header.model.get("name"),
            "headline": _headline(sf, run, energy_ch.method if energy_ch else None),
            "tokens": _tokens(run, end),
            "energy": _energy(run, end),
            "power_w": _power(run),
            "temperature_c": _temperatures(run),
            "throttle": {"share": run.columns.throttle_share()},
            "sampler": {
                "rate_hz": _stats(run, "anubis.sampler.rate")[0],
                "jitter_p99_s": _stats(run, "anubis.sampler.jitter_p99")[1],
                "cpu_ratio": _stats(run, "anubis.sampler.cpu")[0],
                "anubis_cpu_ratio": _stats(run, "proc.self.cpu")[0],
            },
            # issue 23: J per request and its method
            "requests_energy": run.requests.energy(has_channel="system.energy" in run.index),
            "segments": [f.plain() for f in figs],
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
                "truncated": recovery.truncated,
                "records": recovery.records,
                "stopped_at": recovery.stopped_at,
                "reason": recovery.reason,
            },
        }


def _channel(run: RunFold, cid: str) -> Channel | None:
    return next((c for c in run.channels if c.id == cid), None)


def _stats(run: RunFold, cid: str) -> tuple[float | None, float | None]:
    """(mean, max) of a channel's readings; implausible ones (recorded by an older anubis,
    before the sampler dropped them) never count (records.PLAUSIBLE)."""
    j = run.index.get(cid)
    return run.columns.stats(j) if j is not None else (None, None)


def _tokens(run: RunFold, end: int) -> dict[str, Any]:
    q = run.requests
    return {
        "generated": run.decode[0],
        "prompt": run.decode[1],
        "requests": q.ends,
        "decode_tps": run.decode_tps(end),
        "prompt_tps": (q.prompt_tok / (q.prompt_ns / 1e9)) if q.prompt_ns else None,
        "ttft_s": statistics.median(q.ttfts) if q.ttfts else None,
    }


def _energy(run: RunFold, end: int) -> dict[str, Any]:
    energy_ch = _channel(run, "system.energy")
    power_ch = _channel(run, "system.power")
    dec = run.decode[0]
    e = run.energy_j(end)
    counters: dict[str, dict[str, Any]] = {}
    for c in run.channels:
        if c.kind == "energy" and c.method == "counter" and c.id != "system.energy":
            j = run.energy_j(end, c.id)
            if j is not None:
                counters[c.id] = {
                    "joules": j,
                    "scope": c.scope,
                    "j_per_token": j / dec if dec else None,
                }
    return {
        "joules": e,
        "j_per_token": (e / dec) if e is not None and dec else None,
        "method": energy_ch.method if energy_ch else None,
        "scope": energy_ch.scope if energy_ch else None,
        "integration": energy_ch.meta.get("integration") if energy_ch else None,
        "system_power": power_ch.meta.get("reason") if power_ch else None,
        "uncovered": _strings(power_ch.meta.get("uncovered")) if power_ch else [],
        "counters": counters,
    }


def _power(run: RunFold) -> dict[str, Any]:
    by_scope: dict[str, dict[str, Any]] = {}
    for c in run.channels:
        if c.kind == "power" and not c.meta.get("is_limit"):
            mean, mx = _stats(run, c.id)
            if mean is not None:
                by_scope[c.id] = {"mean": mean, "max": mx, "scope": c.scope, "method": c.method}
    p_mean, p_max = _stats(run, "system.power")
    return {"mean": p_mean, "max": p_max, "channels": by_scope}


def _temperatures(run: RunFold) -> dict[str, Any]:
    temps = {}
    for c in run.channels:
        if c.kind == "temperature":
            _, mx = _stats(run, c.id)
            if mx is not None:
                temps[c.id] = mx
    return {"max": max(temps.values()) if temps else None, "channels": temps}


def _strings(v: object) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def report(rec: Recording, budget_pct: float = BUDGET_PCT) -> dict[str, Any]:
    """The summary of a loaded recording: `ReportFold` over its records (stable keys)."""
    return ReportFold().consume_all(rec.records).result(rec.recovery, budget_pct)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic collector off while a file is folded, back to its state after.

    A day's recording is millions of short-lived, acyclic records: the collector's
    passes over the young generation found nothing to free and took about 13 % of the
    24 h report's CPU (28.6 s against 32.9 s, `bench/report_scale.py --hours 24`).
    Reference counting still frees every record as the fold moves on.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def report_file(src: str | Path | IO[bytes]) -> ReportFold:
    """Fold a recording file in one pass, reading it a chunk at a time (`RecordFile`):
    memory does not grow with its samples. Returns the fold: `result(fold.recovery)` is
    the report, and `kept` holds the events a caller may want (quality results).

    A file whose records are more than `HOLD_NS` out of time order (anubis never
    writes one) is sorted in memory instead. Raises ReaderError for a file that is
    not a recording.
    """
    f = RecordFile(src)
    fold = ReportFold()
    try:
        with _no_cyclic_gc():
            for batch in in_time_order(f.batches()):
                fold.consume_all(batch)
    except OutOfOrder as e:
        if not isinstance(src, str | Path):
            raise OutOfOrder(f"{e}: save the stream to a file and report that") from None
        records, recovery = read_all(src)
        fold = ReportFold().consume_all(time_ordered(records))
        fold.recovery = recovery
        return fold
    fold.recovery = f.recovery
    return fold


def _headline(sf: SegmentFold, run: RunFold, method: str | None) -> dict[str, Any]:
    """The recording's figures by the segment arithmetic (active decode time; loads, pauses
    and gaps outside), measured J/token first, and idle power from the pauses."""
    t = total(sf)
    idle = run.idle.result(run.channels)
    meas = measured_counters(run.header)

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
    """The report as the text `anubis report` prints: `r` is `ReportFold.result`'s dict."""
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
