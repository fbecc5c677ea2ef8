"""A recording as CSV (one row per sample) and as a PNG plot (needs matplotlib)."""

from __future__ import annotations

import csv
import math
from typing import IO, Any

import numpy as np

from anubis_tui.analysis import rolling
from anubis_tui.analysis.segments import fold
from anubis_tui.errors import AnubisError
from anubis_tui.recording.reader import Recording
from anubis_tui.records import Sample, Tokens, decode_flags


class ExportError(AnubisError):
    """A recording that cannot be exported (no matplotlib, values it cannot plot); one line."""


def rolling_tps(rec: Recording, decode: bool, window_ns: int = 1_000_000_000) -> np.ndarray:
    """Tokens/s over (t − `window_ns`, t] at every sample time t: shape (len(rec.t),), float.

    Counts decode tokens when `decode`, prompt tokens otherwise, by their batch
    stamps (`Recording.tok_t`); 0.0 where none fell in the window.
    """
    m = rec.tok_decode if decode else ~rec.tok_decode
    tt = rec.tok_t[m]
    cum = np.concatenate([[0], np.cumsum(rec.tok_count[m])])
    hi = np.searchsorted(tt, rec.t, side="right")
    lo = np.searchsorted(tt, rec.t - window_ns, side="right")
    return (cum[hi] - cum[lo]) / (window_ns / 1e9)


def now_series(rec: Recording) -> tuple[np.ndarray, np.ndarray]:
    """(tok/s, J/token) "now" at every sample time: two float arrays of shape (len(rec.t),).

    `analysis.rolling`'s definitions (the panel's and the exporter's); NaN where
    there is none (paused, too few tokens, no ``system.energy`` channel).
    """
    m = rec.tok_decode
    tok_t, tok_n = rec.tok_t[m], rec.tok_count[m]
    tps = rolling.decode_tps_series(tok_t, tok_n, rec.t, rolling.paused_at(rec.events, rec.t))
    j = rec.index.get("system.energy")
    if j is None:
        return tps, np.full(len(rec.t), np.nan)
    # each reading with the decode tokens received before it, in the stream's order (what
    # a live panel had counted when the reading came)
    e_t, e_j, tokens_at = [], [], []
    n = 0
    for r in rec.records:
        if isinstance(r, Tokens) and r.phase == "decode":
            n += r.count
        elif isinstance(r, Sample) and j < len(r.values):
            v = r.values[j]
            if isinstance(v, int | float) and math.isfinite(v):
                e_t.append(r.t)
                e_j.append(float(v))
                tokens_at.append(n)
    return tps, rolling.jpt_series(
        np.array(e_t, dtype=np.int64), np.array(e_j), np.array(tokens_at), rec.t
    )


def write_csv(rec: Recording, f: IO[str]) -> None:
    """One row per sample: every channel in its unit; decode tok/s "now" (2 s window),
    prompt tok/s over the last 1 s, and J/token "now" (10 s window); empty cells for none."""
    w = csv.writer(f)
    w.writerow(
        [
            "t_s",
            *(f"{c.id} [{c.unit}]" for c in rec.channels),
            "decode_tps_2s",
            "prompt_tps_1s",
            "j_per_token_10s",
        ]
    )
    dec, jpt = now_series(rec)
    pro = rolling_tps(rec, False)
    for i in range(len(rec.t)):
        row = [f"{rec.t[i] / 1e9:.6f}"]
        row += ["" if math.isnan(v) else repr(float(v)) for v in rec.values[i]]
        row += [
            "" if math.isnan(dec[i]) else f"{dec[i]:.3f}",
            f"{pro[i]:.3f}",
            "" if math.isnan(jpt[i]) else f"{jpt[i]:.6f}",
        ]
        w.writerow(row)


def plot(rec: Recording, out: IO[bytes], fmt: str = "png") -> None:
    """Power (W), temperature (°C), tok/s and throttle against time (s), segments shaded.

    Writes one figure in `fmt` (any matplotlib format: png, svg, pdf) to `out`.
    Raises ExportError without matplotlib, or for values it cannot draw.
    """
    try:
        _plot(rec, out, fmt)
    except (ValueError, OverflowError, RuntimeError) as e:
        # Values a sensor never gives (1e300 W) or a label matplotlib cannot typeset.
        raise ExportError(f"cannot plot this recording: {str(e).splitlines()[0][:200]}") from None


def _plot(rec: Recording, out: IO[bytes], fmt: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ExportError("--plot needs matplotlib: pip install matplotlib") from None

    t = rec.t / 1e9
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(11, 9))
    ax = axes[0]
    for c in rec.channels:
        if c.kind == "power" and not c.meta.get("is_limit"):
            col = rec.values[:, rec.index[c.id]]
            ok = ~np.isnan(col)
            if ok.any():
                ax.plot(
                    t[ok],
                    col[ok],
                    label=f"{c.id} ({c.method})",
                    lw=1.4 if c.id == "system.power" else 0.8,
                )
    ax.set_ylabel("W")
    ax.legend(fontsize=6, loc="upper right")
    ax = axes[1]
    for c in rec.channels:
        if c.kind == "temperature":
            col = rec.values[:, rec.index[c.id]]
            ok = ~np.isnan(col)
            if ok.any():
                ax.plot(t[ok], col[ok], label=c.id, lw=0.8)
    ax.set_ylabel("°C")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper right")
    axes[2].plot(t, now_series(rec)[0], lw=0.8, label="decode tok/s (2 s)")
    axes[2].set_ylabel("tok/s")
    ax = axes[3]
    k = 0
    for c in rec.channels:
        if c.kind != "throttle":
            continue
        col = rec.values[:, rec.index[c.id]]
        ok = ~np.isnan(col)
        act = [1 if decode_flags(c, int(v))[0] else 0 for v in col[ok]]
        ax.step(t[ok], np.array(act) + 1.2 * k, where="post", lw=0.8, label=c.id)
        k += 1
    ax.set_ylabel("throttled")
    ax.set_xlabel("s")
    if k:
        ax.legend(fontsize=6, loc="upper right")
    for s in fold(rec.records):
        if s.profiler is not None:
            for a in axes:
                a.axvspan(s.start_s, s.end_s, color="orange", alpha=0.15)
    fig.suptitle(
        f"anubis — {str(rec.header.host.get('hostname'))[:60]} {rec.header.created_utc[:40]}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110, format=fmt)
    plt.close(fig)


def plot_sweep(r: dict[str, Any], out: IO[bytes], fmt: str = "png") -> None:
    """A sweep's report as a figure: overhead against rate (log axis, one line per profiler,
    error bars over repeats; left out when the sweep tried no profiler at a rate) and the
    settings' tok/s against J/token with the Pareto front; for a ``sweep --quality``
    (``r["quality"]``, `analysis.quality.quality_table`) J/token against perplexity with its
    front and the recommended setting (`analysis.quality.draw_front`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ExportError("--plot needs matplotlib: pip install matplotlib") from None
    sw = r.get("sweep") or {}
    rows = [row for row in sw.get("rows", []) if row.get("rate_hz")]
    quality = r.get("quality") if (r.get("quality") or {}).get("rows") else None
    panels: list[Any] = [_draw_settings]
    if rows or not quality:
        panels.insert(0, lambda ax, r: _draw_overhead(ax, sw, rows))
    if quality:
        from anubis_tui.analysis.quality import draw_front

        panels.append(lambda ax, r: draw_front(ax, quality))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    try:
        for draw, ax in zip(panels, axes[0], strict=True):
            draw(ax, r)
        fig.tight_layout()
        fig.savefig(out, format=fmt)
    except (ValueError, OverflowError, RuntimeError) as e:
        raise ExportError(f"cannot plot this sweep: {str(e).splitlines()[0][:200]}") from None
    finally:
        plt.close(fig)


def _draw_overhead(a1: Any, sw: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Each profiler's Δ J/token and Δ tok/s against its rate, the budget shaded."""
    for prof in sorted({row["profiler"] for row in rows}):
        mine = sorted((row for row in rows if row["profiler"] == prof), key=lambda x: x["rate_hz"])
        xs = [row["rate_hz"] for row in mine]
        for key, style, what in (
            ("j_per_token_pct", "-o", "ΔJ/token"),
            ("decode_tps_pct", "--s", "Δtok/s"),
        ):
            ys = [row[key] if row[key] is not None else float("nan") for row in mine]
            err = [row[f"{key}_sd"] or 0.0 for row in mine]
            a1.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=f"{prof} {what}")
    budget = sw.get("budget_pct", 2.0)
    a1.axhspan(-budget, budget, color="0.9", label=f"±{budget:g} % budget")
    a1.axhline(0, color="0.5", lw=0.8)
    rates = [row["rate_hz"] for row in rows]
    if rates:
        a1.set_xscale("log")
        a1.set_xlim(min(rates) / 2, max(rates) * 2)
    a1.set_xlabel("sampling rate (Hz)")
    a1.set_ylabel("% against the baseline beside it")
    a1.set_title("profiler overhead (mean ± sd over repeats)")
    a1.legend(fontsize=7)


def _draw_settings(a2: Any, r: dict[str, Any]) -> None:
    """The settings' decode tok/s against J/token, the Pareto front in red."""
    sets = [
        g
        for g in r.get("settings", [])
        if g.get("enough_data") and g.get("decode_tps") and g.get("j_per_token")
    ]
    for g in sets:
        a2.scatter(g["decode_tps"], g["j_per_token"], color="C3" if g["pareto"] else "C0")
        a2.annotate(g["name"], (g["decode_tps"], g["j_per_token"]), fontsize=7)
    front = sorted((g for g in sets if g["pareto"]), key=lambda g: g["decode_tps"])
    if front:
        a2.plot([g["decode_tps"] for g in front], [g["j_per_token"] for g in front], "C3-", lw=1)
    a2.set_xlabel("decode tok/s")
    a2.set_ylabel("J/token")
    a2.set_title("settings (red: Pareto front)")
