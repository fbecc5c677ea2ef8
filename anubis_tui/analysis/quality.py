"""Energy against quality: each setting's tok/s, J/token and perplexity, the front, the pick.

Input: the report's ``settings`` rows (tok/s and J/token with their 90 %
half-widths, `analysis.segments`) and the recording's ``quality`` Events
(payloads of `inference.quality.Perplexity`). A setting's perplexity is the
Event whose model file name and KV type are the setting's ``model`` and
``kv_type`` knobs.

Quality against the baseline setting (the one named ``baseline``: the knobs
the sweep started with) is the ratio PPL(setting)/PPL(baseline) with a 95 %
interval from the per-token NLL differences on the same tokens (a paired
t interval, scipy.stats); where the tokens differ (another tokenizer) the
two NLL means' standard errors are combined instead. A setting is

* **within** the quality budget when the interval's upper end is within
  ``1 + max_increase_pct/100``;
* **over** when its lower end is beyond it;
* **inconclusive** otherwise.

Pareto front (J/token against perplexity, lower is better in both): a
setting is off the front when another is no worse in both and better beyond
the noise in one (J/token intervals apart, or a paired perplexity interval
that excludes 1). The recommended setting is the lowest J/token among those
within budget; settings whose J/token intervals overlap it are named as a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from scipy import stats

MAX_PPL_INCREASE_PCT = 5.0
EVENT = "quality"


def _nll(p: dict[str, Any]) -> np.ndarray:
    v = p.get("nll")
    if not isinstance(v, list):
        return np.zeros(0)
    try:
        return np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(0)


def ratio_interval(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float] | None:
    """PPL(a)/PPL(b) and its 95 % interval; paired when both scored the same tokens."""
    xa, xb = _nll(a), _nll(b)
    same = (
        a.get("tokens_sha256")
        and a.get("tokens_sha256") == b.get("tokens_sha256")
        and len(xa) == len(xb)
        and len(xa) > 1
    )
    if same:
        d = xa - xb
        mean, se, dof = float(d.mean()), float(stats.sem(d)), len(d) - 1
    else:
        try:
            mean = float(a["nll_mean"]) - float(b["nll_mean"])
            se = math.hypot(float(a["nll_se"]), float(b["nll_se"]))
        except (KeyError, TypeError, ValueError):
            return None
        dof = max(1, min(int(a.get("tokens") or 2), int(b.get("tokens") or 2)) - 1)
    if not math.isfinite(mean):
        return None
    if not se > 0 or not math.isfinite(se):
        return math.exp(mean), math.exp(mean), math.exp(mean)
    lo, hi = stats.t.interval(0.95, dof, loc=mean, scale=se)
    return math.exp(mean), math.exp(lo), math.exp(hi)


def match(knobs: dict[str, Any], qualities: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The quality payload of the setting with these knobs (model file name, KV type and,
    where both say, flash attention)."""
    model = knobs.get("model")
    name = PurePath(str(model)).name if model else None
    kv = knobs.get("kv_type") or "f16"
    fa = knobs.get("flash_attn")
    found = [
        q
        for q in qualities
        if q.get("kv_type") == kv
        and (name is None or q.get("model") == name)
        and (fa is None or q.get("flash_attn") is None or bool(q.get("flash_attn")) == bool(fa))
    ]
    return found[-1] if found else None


def verdict(ratio: tuple[float, float, float] | None, max_increase_pct: float) -> str:
    """A setting's perplexity against the budget: ``within`` when the upper bound of `ratio` (PPL
    ratio to the baseline, its 95 % lower and upper bound: `ratio_interval`) is at most 1 +
    `max_increase_pct` / 100, ``over`` when the lower bound is above it, ``inconclusive``
    between, ``unknown`` without a ratio.
    """
    if ratio is None:
        return "unknown"
    limit = 1 + max_increase_pct / 100
    if ratio[2] <= limit:
        return "within"
    if ratio[1] > limit:
        return "over"
    return "inconclusive"


def _better_beyond_noise(b: dict[str, Any], a: dict[str, Any]) -> bool:
    """b better than a beyond the noise in J/token or in perplexity."""
    jb, ja = b.get("j_per_token"), a.get("j_per_token")
    if (
        jb is not None
        and ja is not None
        and jb + (b.get("jpt_ci") or 0.0) < ja - (a.get("jpt_ci") or 0.0)
    ):
        return True
    r = ratio_interval(b["_q"], a["_q"]) if b.get("_q") and a.get("_q") else None
    return bool(r and r[2] < 1.0)


def _row(g: dict[str, Any], qualities: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A setting's row: its speed and energy with their half-widths, its perplexity."""
    q = match(g.get("knobs") or {}, qualities) or {}
    return {
        "name": g.get("name"),
        "decode_tps": g.get("decode_tps"),
        "tps_ci": g.get("tps_ci"),
        "j_per_token": g.get("j_per_token"),
        "jpt_ci": g.get("jpt_ci"),
        "j_per_token_measured": g.get("j_per_token_measured"),
        "ppl": q.get("ppl"),
        "ppl_se": q.get("ppl_se"),
        "ppl_ci95": q.get("ci95"),
        "variant": q.get("variant") or "",
        "_q": q or None,
    }


def _against(r: dict[str, Any], base: dict[str, Any], max_increase_pct: float) -> None:
    """Set `r`'s PPL ratio to the baseline, its verdict and its J/token saving."""
    ratio = ratio_interval(r["_q"], base["_q"]) if r["_q"] and base["_q"] else None
    r["ppl_vs"] = list(ratio) if ratio else None
    r["quality"] = "baseline" if r is base else verdict(ratio, max_increase_pct)
    jb = base.get("j_per_token")
    r["saving_pct"] = (
        100 * (1 - r["j_per_token"] / jb) if jb and r["j_per_token"] is not None else None
    )


def _on_front(r: dict[str, Any], rows: Sequence[dict[str, Any]]) -> bool:
    """No other setting is no worse in both J/token and PPL and better beyond the noise."""
    if r["ppl"] is None or r["j_per_token"] is None:
        return False
    return not any(
        o is not r
        and o["ppl"] is not None
        and o["j_per_token"] is not None
        and o["j_per_token"] <= r["j_per_token"]
        and o["ppl"] <= r["ppl"]
        and _better_beyond_noise(o, r)
        for o in rows
    )


def _pick(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[Any]]:
    """The least J/token within the budget, and the settings tied with it (intervals overlap)."""
    ok = [
        r for r in rows if r["quality"] in ("baseline", "within") and r["j_per_token"] is not None
    ]
    if not ok:
        return None, []
    pick = min(ok, key=lambda r: r["j_per_token"])
    lo = pick["j_per_token"] + (pick.get("jpt_ci") or 0.0)
    tied = [
        r["name"] for r in ok if r is not pick and r["j_per_token"] - (r.get("jpt_ci") or 0.0) <= lo
    ]
    return pick, tied


def quality_table(
    settings: Sequence[dict[str, Any]],
    qualities: Sequence[dict[str, Any]],
    max_increase_pct: float = MAX_PPL_INCREASE_PCT,
) -> dict[str, Any]:
    """Rows per setting with perplexity and its verdict, the Pareto front and the pick.

    `settings` are the report's settings rows, `qualities` the ``quality`` Event payloads.
    Returns ``{"rows", "baseline", "max_ppl_increase_pct", "recommended",
    "recommended_tied"}``; each row has ``ppl``, ``ppl_se``, ``ppl_ci95``, ``ppl_vs``
    (ratio to the baseline with its 95 % interval), ``quality`` (verdict), ``saving_pct``
    (J/token saved against the baseline, %), ``pareto`` and ``variant``.
    """
    # profiler segments change no model or cache: their quality is the baseline's
    rows = [_row(g, qualities) for g in settings if not g.get("profiler")]
    base = next((r for r in rows if r["name"] == "baseline"), rows[0] if rows else None)
    for r in rows:
        if base is not None:
            _against(r, base, max_increase_pct)
    for r in rows:
        r["pareto"] = _on_front(r, rows)
    pick, tied = _pick(rows)
    for r in rows:
        r.pop("_q", None)
    return {
        "rows": rows,
        "baseline": base["name"] if base else None,
        "max_ppl_increase_pct": max_increase_pct,
        "recommended": pick["name"] if pick else None,
        "recommended_tied": tied,
    }


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_quality(t: dict[str, Any]) -> list[str]:
    """The table, the front and the pick, as text lines."""
    rows = t.get("rows") or []
    if not rows:
        return []
    w = min(70, max(34, *(len(str(r["name"])) for r in rows)))  # names must stay apart
    lines = [
        f"quality    (perplexity on the shipped text; budget +{t['max_ppl_increase_pct']:g} % "
        f"against {t['baseline']})",
        f"  {'setting':<{w}} {'tok/s':>7} {'±90%':>5} {'J/tok':>8} {'±90%':>7} "
        f"{'PPL':>8} {'±se':>6} {'PPL/base 95%':>17} {'saves':>6}  verdict",
    ]
    for r in rows:
        vs = r.get("ppl_vs")
        vs_s = f"{vs[0]:.3f} {vs[1]:.3f}..{vs[2]:.3f}" if vs else "-"
        save = f"{r['saving_pct']:+.1f}%" if r.get("saving_pct") is not None else "-"
        lines.append(
            f"  {r['name']!s:<{w}.{w}} {_f(r['decode_tps'], '.1f'):>7} {_f(r['tps_ci'], '.1f'):>5} "
            f"{_f(r['j_per_token'], '.4f'):>8} {_f(r['jpt_ci'], '.4f'):>7} "
            f"{_f(r['ppl'], '.3f'):>8} {_f(r['ppl_se'], '.3f'):>6} {vs_s:>17} {save:>6}  "
            + r["quality"]
            + (" *" if r.get("pareto") else "")
            + (f" ({r['variant']})" if r.get("variant") else "")
        )
    lines.append(
        "  * Pareto front of J/token against perplexity (better beyond the noise in one, "
        "no worse in the other)"
    )
    if all(r.get("j_per_token_measured") is None for r in rows):
        lines.append(
            "  J/token here includes estimated parts (no measured meter covers the system "
            "power): the pick rests on an estimate"
        )
    if t.get("recommended"):
        tie = t.get("recommended_tied") or []
        lines.append(
            f"  least energy within +{t['max_ppl_increase_pct']:g} % perplexity: {t['recommended']}"
            + (f" (a tie within noise with {', '.join(tie)})" if tie else "")
        )
    else:
        lines.append("  no setting is known to be within the quality budget")
    return lines


def _short(name: str) -> str:
    """A setting's name, cut for a legend."""
    return name if len(name) <= 40 else name[:39] + "…"


def _ppl_bar(r: dict[str, Any], base_ppl: float | None) -> list[float]:
    """The PPL interval drawn: the paired ratio's 95 % interval times the baseline's PPL where
    there is one (what the verdict reads: ratio × PPL(baseline) = PPL(setting) on the same
    tokens), else the setting's own 95 % interval."""
    vs = r.get("ppl_vs")
    if vs and base_ppl:
        return [vs[1] * base_ppl, vs[2] * base_ppl]
    return list(r.get("ppl_ci95") or [r["ppl"], r["ppl"]])


def _draw_points(ax: Any, rows: Sequence[dict[str, Any]], base_ppl: float | None) -> None:
    """Each setting with its intervals and its label (the variant label below the name)."""
    for r in rows:
        ci = _ppl_bar(r, base_ppl)
        xerr = [[max(0.0, r["ppl"] - ci[0])], [max(0.0, ci[1] - r["ppl"])]]
        ax.errorbar(
            r["ppl"], r["j_per_token"], xerr=xerr, yerr=r.get("jpt_ci") or 0.0, fmt="o",
            color="C3" if r.get("pareto") else "C0", capsize=3, ms=5,
        )  # fmt: skip
        label = str(r["name"]) + (f"\n({r['variant']})" if r.get("variant") else "")
        ax.annotate(label, (r["ppl"], r["j_per_token"]), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip


def draw_front(ax: Any, t: dict[str, Any]) -> None:
    """The quality front on a matplotlib Axes: J/token (y, with its 90 % half-width) against
    perplexity (x, with its paired 95 % interval against the baseline, `_ppl_bar`), each
    setting labelled (its variant label too), the Pareto front in red and joined, the quality
    budget as a vertical line at the baseline's PPL × (1 + budget), and the recommended
    setting starred and named.

    `t` is `quality_table`'s result; settings without a PPL or a J/token are left out."""
    rows = [r for r in t.get("rows") or [] if r.get("ppl") is not None and r.get("j_per_token")]
    base = next((r for r in rows if r["name"] == t.get("baseline")), None)
    _draw_points(ax, rows, base["ppl"] if base else None)
    _draw_marks(ax, t, rows, base)
    estimated = all(r.get("j_per_token_measured") is None for r in rows)
    ax.set_xlabel("perplexity on the shipped text (95 %, paired against the baseline)")
    ax.set_ylabel("J/token (90 %)" + (" — estimated, no measured meter" if estimated else ""))
    ax.set_title("energy against quality (red: Pareto front)")
    ax.margins(x=0.12, y=0.12)  # room for the labels
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _draw_marks(
    ax: Any, t: dict[str, Any], rows: Sequence[dict[str, Any]], base: dict[str, Any] | None
) -> None:
    """The front joined in PPL order, the budget line and the recommended setting's star."""
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["ppl"])
    if len(front) > 1:
        ax.plot([r["ppl"] for r in front], [r["j_per_token"] for r in front], "C3-", lw=1,
                label="Pareto front")  # fmt: skip
    pct = float(t.get("max_ppl_increase_pct") or MAX_PPL_INCREASE_PCT)
    if base is not None:
        ax.axvline(base["ppl"] * (1 + pct / 100), color="0.5", ls="--", lw=0.8,
                   label=f"baseline PPL +{pct:g} %")  # fmt: skip
    pick = next((r for r in rows if r["name"] == t.get("recommended")), None)
    if pick is not None:
        ax.plot(pick["ppl"], pick["j_per_token"], "*", color="gold", mec="k", ms=16, zorder=5,
                label=f"recommended: {_short(str(pick['name']))}")  # fmt: skip
