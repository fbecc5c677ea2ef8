"""Result rows: every setting of a recording as one comparable row (schema ``anubis-result/1``).

A row is a plain dict (JSON-ready) with six parts:

* ``identity``: hardware, runtime, model, workload and measurement, from
  `anubis_tui.analysis.identity.identity` (the recording's Header), and the
  row's ``setting`` (every knob, the profiler and its rate);
* ``class_id``: the comparability class: a hash of the hardware, the power
  limit or nvpmodel of the setting, the runtime, the model's sha256, the
  workload and the energy scope and method. Rows rank only inside a class;
* ``figures``: decode and prompt tok/s, TTFT, J/token, active J/token,
  J/request and power, each ``{value, unit, n, sd, ci95}``, and perplexity
  (``{value, unit "PPL", n tokens, se, ci95}``); idle power, the maximum
  temperature, the throttle share by flag, the steady-state verdict and the
  profiler's cost;
* ``quality``: where the recording has a ``quality`` Event for the setting's
  model file and KV type (``sweep --quality``), its perplexity on the shipped
  text with llama.cpp's standard error, what it was computed on (tokens,
  context, text and model sha256) and the variant label ("requantized from
  Q4_K_M", `anubis_tui.inference.variants`); None otherwise;
* ``flags``: why a row must not rank first (no steady state, throttling,
  too little data, an estimated energy method);
* ``provenance``: the recording's sha256 and path, the anubis version and
  the time the row was made.

Every figure's value is the one `anubis report` prints for that setting: the
merged segments of `SegmentFold.settings` (`anubis_tui.analysis.segments`).
Its spread and interval come from the same arithmetic over 5 s chunks of the
setting's active time; neighbouring chunks are correlated (temperature and
clocks drift), so the interval is a Student t interval over the *effective*
number of chunks, n·(1−ρ₁)/(1+ρ₁) with ρ₁ the lag-1 autocorrelation of the
chunk values (the AR(1) variance inflation, e.g. Wilks, *Statistical Methods
in the Atmospheric Sciences*, §5.2.4), from `scipy.stats.t`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from anubis_tui import __version__
from anubis_tui.analysis.compare import chunked_fold
from anubis_tui.analysis.identity import UNKNOWN, identity
from anubis_tui.analysis.quality import EVENT as QUALITY_EVENT
from anubis_tui.analysis.quality import match
from anubis_tui.analysis.report import report
from anubis_tui.analysis.segments import Figures, SegmentFold
from anubis_tui.analysis.sweep import sweep_of
from anubis_tui.errors import AnubisError
from anubis_tui.recording.reader import Recording
from anubis_tui.records import Record

SCHEMA = "anubis-result/1"
CHUNK_S = 5.0
CONFIDENCE = 0.95
# Knob names as llama-bench writes them (its JSON/CSV columns); others keep anubis's name.
LLAMA_BENCH_KNOBS = {
    "threads": "n_threads",
    "gpu_layers": "n_gpu_layers",
    "n_batch": "n_batch",
    "flash_attn": "flash_attn",
    "kv_type": "type_k",
    "model": "model_filename",
}
# The parts of a setting that change the machine rather than the program: they are class fields.
CLASS_KNOBS = ("power_limit_w", "nvpmodel")


class ResultError(AnubisError):
    """A row or a file of rows that cannot be read; one line for the user."""


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def interval(xs: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """n, standard deviation and the half-width of the `confidence` t interval of the mean of
    serially correlated values (chunks in time order), over their effective sample size.

    Returns ``{"n", "n_eff", "sd", "half"}``; fewer than 2 values (or an effective size under
    2) give no half-width (None). The interval is put around the row's own value (`figure`).
    """
    v = [x for x in xs if x is not None and math.isfinite(x)]
    n = len(v)
    if n < 2:
        return {"n": n, "n_eff": float(n), "sd": None, "half": None}
    a = np.asarray(v, dtype=float)
    sd = float(a.std(ddof=1))
    rho = 0.0
    if n >= 3 and sd > 0:
        d = a - a.mean()
        rho = float(np.dot(d[:-1], d[1:]) / np.dot(d, d))
    rho = min(max(rho, 0.0), 0.99)  # negative ρ would claim more data than there is
    n_eff = n * (1 - rho) / (1 + rho)
    if n_eff < 2:
        return {"n": n, "n_eff": n_eff, "sd": sd, "half": None}
    half = float(stats.t.ppf(0.5 + confidence / 2, n_eff - 1)) * sd / math.sqrt(n_eff)
    return {"n": n, "n_eff": n_eff, "sd": sd, "half": half}


def _bootstrap(
    data: Sequence[Sequence[float]], statistic: Any, confidence: float = CONFIDENCE
) -> list[float] | None:
    """A percentile bootstrap interval of `statistic` over paired per-request values
    (`scipy.stats.bootstrap`, fixed seed: the same recording gives the same row)."""
    if len(data[0]) < 3:
        return None
    with warnings.catch_warnings():  # all-equal data: a degenerate interval, returned as None
        warnings.simplefilter("ignore")
        res = _bootstrap_run(data, statistic, confidence)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _bootstrap_run(data: Sequence[Sequence[float]], statistic: Any, confidence: float) -> Any:
    return stats.bootstrap(
        tuple(np.asarray(d, dtype=float) for d in data),
        statistic,
        paired=True,
        vectorized=False,
        confidence_level=confidence,
        n_resamples=999,
        method="percentile",
        random_state=np.random.default_rng(0),
    )


def figure(value: float | None, unit: str, spread: dict[str, Any] | None = None) -> dict[str, Any]:
    """One figure of a row: its value in `unit` and its n, sd and 95 % interval (``ci95``: the
    spread's own interval, or value ± its half-width)."""
    s = spread or {}
    v = _finite(value)
    ci95 = s.get("ci95")
    half = s.get("half")
    if ci95 is None and half is not None and v is not None:
        ci95 = [v - half, v + half]
    return {"value": v, "unit": unit, "n": s.get("n", 0), "sd": s.get("sd"), "ci95": ci95}


def setting_chunks(records: Iterable[Record], chunk_s: float = CHUNK_S) -> dict[str, list[Figures]]:
    """Each setting's `chunk_s`-second chunks, in time order, by setting name; only chunks with
    enough data. A chunk boundary is a ``sweep_step`` that repeats the step's tags, so the fold
    starts a new segment there and nothing else changes (as `anubis compare` chunks)."""
    fold = chunked_fold(records, chunk_s)
    out: dict[str, list[Figures]] = {}
    for f in fold.figures():
        if f.enough_data:
            out.setdefault(f.name, []).append(f)
    return out


def _segment_of(fold: SegmentFold, t: int) -> str | None:
    """The setting name of the segment a time falls in (None in a sliver)."""
    for s in reversed(fold.segments):
        if s.start_ns <= t:
            return None if s.sliver else s.name
    return None


def _requests(rec: Recording, fold: SegmentFold) -> dict[str, list[dict[str, Any]]]:
    """Each setting's finished requests (their ``request_end`` payloads)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in rec.events:
        if e.kind == "request_end" and isinstance(e.payload, dict):
            name = _segment_of(fold, e.t)
            if name is not None:
                out.setdefault(name, []).append(e.payload)
    return out


def request_figures(ends: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """TTFT (median, s), prompt tok/s (Σ prompt tokens ÷ Σ TTFT, as `anubis report`) and tokens
    generated per request (mean), from ``request_end`` payloads, with bootstrap intervals."""
    pairs = [
        (ttft_ns / 1e9, _finite(e.get("prompt_tokens")) or 0.0)
        for e in ends
        if (ttft_ns := _finite(e.get("ttft_ns"))) is not None and ttft_ns > 0
    ]
    gen = [float(g) for e in ends if (g := _finite(e.get("generated"))) is not None]
    ttft = [p[0] for p in pairs]
    ptok = [p[1] for p in pairs]
    out: dict[str, dict[str, Any]] = {}
    out["ttft_s"] = figure(
        statistics.median(ttft) if ttft else None,
        "s",
        {
            "n": len(ttft),
            "sd": statistics.stdev(ttft) if len(ttft) >= 2 else None,
            "ci95": _bootstrap([ttft], np.median) if ttft else None,
        },
    )
    per = [p / t for t, p in pairs]
    out["prompt_tokens_per_s"] = figure(
        sum(ptok) / sum(ttft) if ttft and sum(ttft) > 0 else None,
        "token/s",
        {
            "n": len(per),
            "sd": statistics.stdev(per) if len(per) >= 2 else None,
            "ci95": _bootstrap([ptok, ttft], lambda p, t: p.sum() / t.sum()) if per else None,
        },
    )
    out["output_tokens_per_request"] = figure(
        statistics.fmean(gen) if gen else None,
        "token",
        {"n": len(gen), "sd": statistics.stdev(gen) if len(gen) >= 2 else None},
    )
    return out


def _scaled(spread: dict[str, Any], k: float | None) -> dict[str, Any] | None:
    """A spread of x as the spread of k·x."""
    if k is None:
        return None
    sd, half = spread.get("sd"), spread.get("half")
    return {
        "n": spread.get("n", 0),
        "sd": sd * k if sd is not None else None,
        "half": half * k if half is not None else None,
    }


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of the file at `path`, read 1 MiB at a time; OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def canonical(o: Any) -> str:
    """`o` as canonical JSON (sorted keys, no spaces): the input of every hash of a row."""
    return json.dumps(o, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


CLASS_GROUPS = ("hardware", "runtime", "model", "workload", "measurement")


def _canon(v: Any) -> Any:
    """200.0 and 200 are one value in a class (canonical JSON would tell them apart); no value
    (None: not on this machine, e.g. nvpmodel off a Jetson) and "unknown" (not recorded) are one
    class value, since old recordings cannot tell them apart."""
    if v is None:
        return UNKNOWN
    return int(v) if isinstance(v, float) and v.is_integer() else v


def class_of(ident: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """The comparability class's fields: the identity's hardware, runtime, model, workload and
    measurement, with the power limit and nvpmodel the setting ran at (a knob change moves a
    setting to another class: a capped GPU is another machine)."""
    fields = {g: {k: _canon(v) for k, v in (ident.get(g) or {}).items()} for g in CLASS_GROUPS}
    hw = fields["hardware"]
    for k in CLASS_KNOBS:
        if knobs.get(k) is not None:
            hw[k] = _canon(knobs[k])
    return fields


def unknown_fields(fields: dict[str, Any]) -> list[str]:
    """``group.field`` names of a class whose value was not recorded ("unknown")."""
    return [f"{g}.{k}" for g, d in fields.items() for k, v in d.items() if v == UNKNOWN]


def class_id(fields: dict[str, Any]) -> str:
    """The class's id: the first 16 hex digits of the sha256 of `canonical(fields)`."""
    return hashlib.sha256(canonical(fields).encode()).hexdigest()[:16]


def _setting(f: Figures, start: dict[str, Any]) -> dict[str, Any]:
    """The row's setting: the profiler and every knob, named as llama-bench names them. A
    recording without knob Events has its knobs from the start of the run (`start`, the
    identity's setting)."""
    src = f.knobs or {k: (None if v == UNKNOWN else v) for k, v in start.items()}
    knobs = {LLAMA_BENCH_KNOBS.get(k, k): v for k, v in src.items()}
    return {
        "name": f.name,
        "profiler": f.profiler,
        "profiler_rate_hz": f.rate_hz,
        **knobs,
    }


# A drift over the setting's time larger than this (and significant) is no steady state.
DRIFT_PCT = 2.0
MIN_CHUNKS = 3


def steady_verdict(chunks: Sequence[Figures]) -> dict[str, Any]:
    """Whether a setting's figures held still: for decode tok/s and J/token, a least-squares
    line through its chunks against time (`scipy.stats.linregress`); the drift is the line's
    change from the first chunk to the last, in % of the mean. Not steady when a drift is both
    significant (p < 0.05) and larger than `DRIFT_PCT`; unknown with fewer than `MIN_CHUNKS`
    chunks. Returns ``{"steady": True | False | None, "reason", "drift_pct": {figure: %}}``."""
    drift: dict[str, float | None] = {}
    bad = []
    if len(chunks) < MIN_CHUNKS:
        return {
            "steady": None,
            "reason": f"{len(chunks)} chunks of {CHUNK_S:g} s: too few to tell",
            "drift_pct": drift,
        }
    for key in ("decode_tps", "j_per_token"):
        pts = [((c.start_s + c.end_s) / 2, v) for c in chunks if (v := getattr(c, key)) is not None]
        if len(pts) < MIN_CHUNKS or len({t for t, _ in pts}) < 2:
            drift[key] = None
            continue
        t = np.array([p[0] for p in pts])
        v = np.array([p[1] for p in pts])
        fit = stats.linregress(t, v)
        m = float(v.mean())
        d = 100 * float(fit.slope) * float(t.max() - t.min()) / m if m else None
        drift[key] = d
        if d is not None and abs(d) > DRIFT_PCT and float(fit.pvalue) < 0.05:
            bad.append(f"{key} drifting {d:+.1f} %")
    if all(v is None for v in drift.values()):
        return {"steady": None, "reason": "no figure in enough chunks", "drift_pct": drift}
    return {
        "steady": not bad,
        "reason": "; ".join(bad) or f"no drift beyond {DRIFT_PCT:g} % over {len(chunks)} chunks",
        "drift_pct": drift,
    }


def _warmup(rec: Recording) -> dict[str, Any] | None:
    """A sweep's warm-up verdict (temperature and power settling before the first step)."""
    w = (sweep_of(rec.events) or {}).get("warmup") or {}
    if not w:
        return None
    return {
        "reached": bool(w.get("reached")),
        "reason": w.get("reason"),
        "seconds": _finite(w.get("seconds")),
    }


def _profiler_cost(
    f: Figures, r: dict[str, Any], seg_figs: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """A profiler setting's cost against its baselines: a sweep's treatment row (mean ± sd over
    repeats), or the mean of its segments' deltas against their fair baselines."""
    if f.profiler is None:
        return None
    cost: dict[str, Any] = {"profiler_cpu_ratio": f.profiler_cpu, "samples": f.samples}
    sweep = r.get("sweep")
    row = None
    if sweep:
        row = next((x for x in sweep["rows"] if _treatment_is(x, f)), None)
    if row is not None:
        for k in ("decode_tps_pct", "j_per_token_pct", "power_w"):
            cost[f"delta_{k}"] = {"value": row.get(k), "sd": row.get(f"{k}_sd")}
        cost["repeats"] = row.get("repeats")
        cost["source"] = "sweep: treatment against the baseline beside it"
        return cost
    deltas = [g["delta"] for g in seg_figs if g["name"] == f.name and g.get("delta")]
    for k in ("decode_tps_pct", "j_per_token_pct", "power_w"):
        xs = [d[k] for d in deltas if d.get(k) is not None]
        cost[f"delta_{k}"] = {
            "value": statistics.fmean(xs) if xs else None,
            "sd": statistics.stdev(xs) if len(xs) >= 2 else None,
        }
    cost["repeats"] = len(deltas)
    cost["source"] = "segments against their nearest fair baseline"
    return cost


def _treatment_is(row: dict[str, Any], f: Figures) -> bool:
    return row.get("profiler") == f.profiler and row.get("rate_hz") == f.rate_hz


THROTTLE_NOT = frozenset({"idle", "app_clocks", "sync_boost"})  # clock reasons, not a slowdown


def rows_of(
    rec: Recording,
    path: str | Path,
    now: dt.datetime | None = None,
    summary: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per setting of recording `rec` read from `path` (see the module docstring).

    `summary` is `report(rec)` when the caller has it already. Raises `ResultError` if the
    file cannot be hashed.
    """
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise ResultError(f"cannot read {path}: {e.strerror}") from None
    r = summary if summary is not None else report(rec)
    fold = SegmentFold().consume_all(rec.records)
    # Idle power as `anubis report` measures it (its pauses); active J/token subtracts it the
    # same way: idle W ÷ decode tok/s per token (Kepler's and ML.ENERGY's "active" energy).
    idle = (r.get("headline") or {}).get("idle") or {}
    ctx = _RowContext(
        ident=identity(rec.header, rec.records),
        summary=r,
        chunks=setting_chunks(rec.records),
        requests=_requests(rec, fold),
        warmup=_warmup(rec),
        idle=idle if isinstance(idle, dict) else {},
        qualities=[e.payload for e in rec.events if e.kind == QUALITY_EVENT],
        provenance={
            "recording_sha256": digest,
            "recording_path": str(Path(path).resolve()),
            "host": rec.header.host.get("hostname"),
            "anubis_version": __version__,
            "recording_anubis_version": rec.header.app_version,
            "recording_created_utc": rec.header.created_utc,
            "created_utc": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "truncated": rec.recovery.truncated,
        },
    )
    return [_row(f, ctx) for f in fold.settings()]


@dataclass(frozen=True)
class _RowContext:
    """What every row of one recording shares (`rows_of`)."""

    ident: dict[str, Any]
    summary: dict[str, Any]
    chunks: dict[str, list[Figures]]
    requests: dict[str, list[dict[str, Any]]]
    warmup: dict[str, Any] | None
    idle: dict[str, Any]
    qualities: list[Any]
    provenance: dict[str, Any]

    @property
    def idle_w(self) -> float | None:
        return _finite(self.idle.get("system_w"))


def _figures(f: Figures, ch: Sequence[Figures], req: dict[str, dict[str, Any]], idle_w: float | None
             ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """A setting's figures with their intervals over its chunks (`interval`)."""
    tps_s = interval([c.decode_tps for c in ch if c.decode_tps is not None])
    jpt_s = interval([c.j_per_token for c in ch if c.j_per_token is not None])
    pw_s = interval([c.power_w for c in ch if c.power_w is not None])
    per_req = req["output_tokens_per_request"]["value"]
    active = (
        f.j_per_token - idle_w / f.decode_tps
        if f.j_per_token is not None and idle_w is not None and f.decode_tps
        else None
    )
    return {
        "decode_tokens_per_s": figure(f.decode_tps, "token/s", tps_s),
        "prompt_tokens_per_s": req["prompt_tokens_per_s"],
        "ttft_s": req["ttft_s"],
        "energy_per_output_token_j": figure(f.j_per_token, "J/token", jpt_s),
        "active_energy_per_output_token_j": figure(
            active, "J/token", _scaled(jpt_s, 1.0) if active is not None else None
        ),
        "energy_per_request_j": figure(
            f.j_per_token * per_req if f.j_per_token is not None and per_req else None,
            "J/request",
            _scaled(jpt_s, per_req),
        ),
        "power_w": figure(f.power_w, "W", pw_s),
        "output_tokens_per_request": req["output_tokens_per_request"],
    }


def _flags(f: Figures, steady: dict[str, Any], throttled: Sequence[str]) -> list[str]:
    """Why a row must not rank first."""
    flags = []
    if steady["steady"] is not True:
        flags.append("no steady state" if steady["steady"] is False else "steady state unknown")
    if throttled:
        flags.append("throttled: " + ",".join(throttled))
    if not f.enough_data:
        flags.append("too little data")
    return flags


# What a row keeps of a ``quality`` Event (`inference.quality.Perplexity.payload`): not the
# per-token NLLs, which only a paired comparison inside one recording needs.
QUALITY_KEYS = (
    "ppl", "ppl_se", "ci95", "nll_mean", "nll_se", "tokens", "chunks", "n_ctx", "kv_type",
    "offload", "flash_attn", "model", "model_sha256", "quantization", "variant", "text",
    "text_sha256", "tokens_sha256", "llama_cpp", "cached",
)  # fmt: skip


def quality_of(
    knobs: dict[str, Any], qualities: Sequence[Any], model_sha256: str | None = None
) -> dict[str, Any] | None:
    """The setting's perplexity on the shipped text, from the recording's ``quality`` Events
    (`analysis.quality.match`: the model file and KV type of the setting; where the knobs do
    not name the model, the figure of the recording's model, `model_sha256`): PPL (no unit),
    its standard error (llama.cpp's), its 95 % interval, what it was computed on and the
    variant label ("requantized from Q4_K_M"); None when the recording has none for it."""
    qs = [p for p in qualities if isinstance(p, dict)]
    if not knobs.get("model") and model_sha256 and model_sha256 != UNKNOWN:
        qs = [p for p in qs if p.get("model_sha256") == model_sha256]
    q = match(knobs, qs)
    if q is None or _finite(q.get("ppl")) is None:
        return None
    out = {k: q.get(k) for k in QUALITY_KEYS}
    ci = out["ci95"]
    out["ci95"] = None
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = _finite(ci[0]), _finite(ci[1])
        out["ci95"] = [lo, hi] if lo is not None and hi is not None else None
    out["variant"] = str(out["variant"] or "")
    return out


def _perplexity(q: dict[str, Any] | None) -> dict[str, Any]:
    """The perplexity figure: value, its standard error (``se``) and 95 % interval; ``n`` is
    the scored tokens."""
    if q is None:
        return figure(None, "PPL")
    tokens = q.get("tokens")
    n = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0
    return {**figure(q["ppl"], "PPL", {"n": n, "ci95": q["ci95"]}), "se": _finite(q["ppl_se"])}


def _row(f: Figures, ctx: _RowContext) -> dict[str, Any]:
    """One setting's row (`rows_of`)."""
    ch = ctx.chunks.get(f.name, [])
    throttle = {k: v for k, v in f.throttle_share.items() if k not in THROTTLE_NOT}
    throttled = sorted(k for k, v in throttle.items() if v > 0)
    steady = {**steady_verdict(ch), "warmup": ctx.warmup}
    cfields = class_of(ctx.ident, f.knobs)
    setting = _setting(f, ctx.ident.get("setting") or {})
    model_sha = (ctx.ident.get("model") or {}).get("sha256")
    quality = quality_of(f.knobs or _start_knobs(ctx.ident), ctx.qualities, model_sha)
    figures = _figures(f, ch, request_figures(ctx.requests.get(f.name, [])), ctx.idle_w)
    figures["perplexity"] = _perplexity(quality)
    digest = ctx.provenance["recording_sha256"]
    return {
        "schema": SCHEMA,
        "row_id": hashlib.sha256(f"{digest}:{f.name}".encode()).hexdigest()[:16],
        "class_id": class_id(cfields),
        "class": cfields,
        "class_unknown": unknown_fields(cfields),
        "identity": {**{k: v for k, v in ctx.ident.items() if k != "setting"}, "setting": setting},
        "setting": setting,
        "figures": figures,
        "quality": quality,
        "active_s": f.active_s,
        "output_tokens": f.decode_tokens,
        "segments": f.segments,
        "enough_data": f.enough_data,
        "pareto": f.pareto,
        "idle_power_w": ctx.idle_w,
        "idle": ctx.idle or None,
        "temperature_max_c": f.temp_max_c,
        "throttle_share": f.throttle_share,
        "throttled": throttled,
        "steady_state": steady,
        "profiler_cost": _profiler_cost(f, ctx.summary, ctx.summary["segments"]),
        "flags": _flags(f, steady, throttled),
        "provenance": dict(ctx.provenance),
    }


def _start_knobs(ident: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (ident.get("setting") or {}).items() if v != UNKNOWN}


_HEX = re.compile(r"[0-9a-f]{8,64}")
REQUIRED = ("schema", "row_id", "class_id", "identity", "setting", "figures", "provenance")


def _num_or_none(v: Any) -> bool:
    return v is None or _finite(v) is not None


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool) or _finite(v) is not None


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _shape_class(row: dict[str, Any]) -> str | None:
    cls = row.get("class", {})
    if not isinstance(cls, dict) or not all(isinstance(g, dict) for g in cls.values()):
        return "class is not an object of objects"
    for g in cls.values():
        for v in g.values():
            if not (_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))):
                return "a class field is not a value or a list of values"
    for k in ("flags", "throttled", "class_unknown"):
        if not _strs(row.get(k, [])):
            return f"{k} is not a list of strings"
    return None


def _shape_setting(row: dict[str, Any]) -> str | None:
    setting = row["setting"]
    if not all(_scalar(v) for v in setting.values()):
        return "a setting is not a value"
    if not isinstance(setting.get("name", ""), str | None) or not isinstance(
        setting.get("profiler"), str | None
    ):
        return "setting name or profiler is not a string"
    if not _num_or_none(setting.get("profiler_rate_hz")):
        return "profiler_rate_hz is not a number"
    return None


def _shape_figure(name: str, f: Any) -> str | None:
    if not isinstance(f, dict):
        return f"figure {name} is not an object"
    if not (_num_or_none(f.get("value")) and _num_or_none(f.get("sd"))):
        return f"figure {name}: value or sd is not a number"
    n = f.get("n", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        return f"figure {name}: n is not a count"
    ci = f.get("ci95")
    if ci is not None and not (
        isinstance(ci, list) and len(ci) == 2 and all(_finite(x) is not None for x in ci)
    ):
        return f"figure {name}: ci95 is not [low, high]"
    if not _num_or_none(f.get("se")):
        return f"figure {name}: se is not a number"
    return None


def _shape_figures(row: dict[str, Any]) -> str | None:
    for name, f in row["figures"].items():
        if (problem := _shape_figure(name, f)) is not None:
            return problem
    return None


def _shape_rest(row: dict[str, Any]) -> str | None:
    for k in ("temperature_max_c", "idle_power_w"):
        if not _num_or_none(row.get(k)):
            return f"{k} is not a number"
    st = row.get("steady_state")
    if st is not None and not (
        isinstance(st, dict)
        and isinstance(st.get("steady"), bool | None)
        and isinstance(st.get("reason", ""), str | None)
    ):
        return "steady_state is not {steady, reason}"
    q = row.get("quality")
    if q is not None and not (
        isinstance(q, dict)
        and _num_or_none(q.get("ppl"))
        and _num_or_none(q.get("ppl_se"))
        and isinstance(q.get("variant", ""), str)
    ):
        return "quality is not {ppl, ppl_se, variant}"
    return None


def _shape_provenance(row: dict[str, Any]) -> str | None:
    prov = row["provenance"]
    if not isinstance(prov.get("recording_sha256"), str) or not _HEX.fullmatch(
        prov["recording_sha256"]
    ):
        return "provenance has no recording_sha256"
    if not all(_scalar(v) for v in prov.values()):
        return "a provenance field is not a value"
    return None


_SHAPE_CHECKS = (_shape_class, _shape_setting, _shape_figures, _shape_rest, _shape_provenance)


def _shape(row: dict[str, Any]) -> str | None:
    """What is wrong with the shape of the parts readers use (None: nothing). Keys this version
    does not know are kept as they are (a newer minor version may add some)."""
    for k in ("identity", "setting", "figures", "provenance"):
        if not isinstance(row[k], dict):
            return f"{k} is not an object"
    for check in _SHAPE_CHECKS:
        if (problem := check(row)) is not None:
            return problem
    return None


def check_row(row: Any, where: str = "row") -> dict[str, Any]:
    """`row` if it is a row of a schema this version reads; `ResultError` (one line) if not."""
    if not isinstance(row, dict):
        raise ResultError(f"{where}: not a JSON object")
    schema = row.get("schema")
    if not isinstance(schema, str) or not schema.startswith("anubis-result/"):
        raise ResultError(f"{where}: not an anubis result row (no schema anubis-result/N)")
    if schema != SCHEMA:
        raise ResultError(
            f"{where}: unknown schema version {schema!r} (this anubis reads {SCHEMA})"
        )
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise ResultError(f"{where}: missing {', '.join(missing)}")
    for k in ("row_id", "class_id"):
        if not isinstance(row[k], str) or not _HEX.fullmatch(row[k]):
            raise ResultError(f"{where}: {k} is not 8 to 64 hex digits")
    problem = _shape(row)
    if problem:
        raise ResultError(f"{where}: {problem}")
    return row


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_rows(text: str, where: str) -> list[dict[str, Any]]:
    """Rows from JSON Lines text (blank lines skipped), each checked; `ResultError` names the
    first bad line."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise ResultError(f"{where}:{i}: not JSON ({e.msg})") from None
        except RecursionError:
            raise ResultError(f"{where}:{i}: not JSON (nested too deep)") from None
        except ValueError as e:  # NaN or Infinity: strict JSON has neither
            raise ResultError(f"{where}:{i}: not JSON ({e})") from None
        out.append(check_row(obj, f"{where}:{i}"))
    return out


def dumps_rows(rows: Iterable[dict[str, Any]]) -> str:
    """JSON Lines: one row a line, strict JSON (no NaN)."""
    return "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in rows)
