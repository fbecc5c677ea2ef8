"""The profiler panel: the running setting and its deltas, then every finished segment.

Every number comes from `analysis.segments` (through the snapshot), the
same function `anubis report` prints, so screen and report agree. The live
deltas are all over the same decode time: Δtok/s (decode tokens ÷ decode
time), ΔW (mean system power) and ΔJ/tok = mean W ÷ decode tok/s
(``j_per_decode_token_pct``), so the three cannot contradict each other;
the panel says "over decode". A finished segment is one line where the
panel is wide enough (≥ 44 cells), two where it is not.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.analysis.segments import MIN_SECONDS, MIN_TOKENS, Figures
from anubis_tui.ui.widgets.panel import Panel, first_fit

WIDE = 44  # cells a finished segment needs on one line


def _jpt(d: dict[str, Any]) -> float | None:
    """ΔJ/token over decode time (mean W ÷ decode tok/s), % against the baseline."""
    v = d.get("j_per_decode_token_pct")
    return v if isinstance(v, int | float) else None


def delta_rows(f: Figures, width: int = 80) -> list[str]:
    """One finished segment: Δtok/s, ΔW, ΔJ/tok (over decode), profiler CPU and samples.

    One line at `width` ≥ `WIDE`, else two (name and Δs, then W, CPU and n)."""
    d = f.delta
    name = f.name if len(f.name) <= 13 else f.name[:12] + "…"
    if d is None:
        return [f"{name:<13} {f.not_comparable or '—'}"]
    tps = fmt(d["decode_tps_pct"], "+.0f", "%")
    jpt = fmt(_jpt(d), "+.0f", "%")
    watts = fmt(d["power_w"], "+.1f", "W")
    if d.get("against") == "previous":  # a knob's effect: no profiler columns
        tail = "vs prev"
    else:
        cpu = fmt(f.profiler_cpu and f.profiler_cpu * 100, ".0f", "%")
        tail = f"{cpu}cpu n{f.samples if f.samples is not None else '—'}"
    if width >= WIDE:
        return [f"{name:<13}{tps:>5} {watts:>6} {jpt:>5}J {tail}"]
    return [f"{name:<13}{tps:>5} {jpt:>4}J", f"  {watts} {tail}"]


def frames_line(frames: list[dict[str, Any]]) -> str | None:
    """``hot FUNCTION NN%``: the hottest frame of a profile and its share of samples."""
    if not frames:
        return None
    f = frames[0]
    return f"hot {str(f.get('function'))[:18]} {fmt(100 * (f.get('share') or 0), '.0f', '%')}"


def quality_line(s: Snapshot, width: int) -> str | None:
    """The current setting's perplexity once known (its ``quality`` Event) and its Δ against
    the baseline setting's, as one line that fits `width` cells; None while unknown.

    ``PPL 33.10 ±1.80 Δ+2.1% (-0.4..+4.7) vs base``: the perplexity (dimensionless) with
    its standard error, and PPL(setting)/PPL(baseline) − 1 in % with its 95 % interval
    (paired over the same tokens where both scored them; `analysis.quality`). A variant
    requantized from an already quantized file says so (its perplexity understates the
    loss), cut to ``requant.`` where the line is short."""
    q = s.quality
    ppl, se = q.get("ppl") if q else None, q.get("ppl_se") if q else None
    if not isinstance(ppl, int | float) or not isinstance(se, int | float):
        return None
    variant = escape(str(q.get("variant") or "")) if q else ""
    tag, short_tag = (f" [dim]({variant})[/]", " [dim]requant.[/]") if variant else ("", "")
    head = f"PPL {ppl:.2f} ±{se:.2f}"
    if s.quality_base is None:
        return first_fit(width, f"{head} base not yet{tag}", f"{head}{short_tag}")
    if s.quality is s.quality_base or s.quality_vs is None:
        return first_fit(width, f"{head} = base{tag}", f"{head}{short_tag}")
    r, lo, hi = (100 * (v - 1) for v in s.quality_vs)
    return first_fit(
        width,
        f"{head} Δ{r:+.1f}% ({lo:+.1f}..{hi:+.1f}) vs base{tag}",
        f"{head} Δ{r:+.1f}% ({lo:+.1f}..{hi:+.1f}){short_tag}",
        f"PPL {ppl:.2f} Δ{r:+.1f}%{short_tag}",
        f"PPL {ppl:.1f} Δ{r:+.0f}%",
    )


class ProfilerPanel(Panel):
    """The setting now and what it costs: the running segment's name and length (s),
    its Δtok/s, ΔW and ΔJ/token against its baseline over decode time, the
    profiler's own CPU and samples, the setting's perplexity and its Δ against
    the baseline setting (`quality_line`), then each finished segment's deltas;
    the static ceiling line once measured."""

    TITLE = "setting & profiler"
    static_line: Any = None  # a callable tok/s → the static-ceiling line, once measured

    def text(self, s: Snapshot) -> str:
        """The panel's lines for one snapshot (markup), fitted to the panel's width."""
        width = self.text_width
        lines = self._now_lines(s, width)
        ppl = quality_line(s, width)
        if ppl is not None:  # the setting's quality, under its deltas (issue 26)
            lines.insert(min(len(lines), 3), ppl)
        lines += self._done_lines(s, width)
        if self.static_line is not None:
            lines.append(self.static_line(s.decode_tps))
        return "\n".join(lines)

    def _now_lines(self, s: Snapshot, width: int) -> list[str]:
        """The running segment: its name and length, its deltas where it has any, the
        profiler's own CPU, samples and hottest frame."""
        seg = s.segment
        if seg is None:
            return ["off"]
        lines = [f"{seg.name}, {seg.end_s - seg.start_s:.0f}s"]
        if seg.profiler is None:
            return lines + (
                self._current(seg, width) if seg.cause == "knob" else ["[dim]profiler off[/]"]
            )
        lines += self._current(seg, width)
        cpu = s.self_cost.get("profiler_cpu")
        n = seg.samples
        lines.append(
            f"own CPU {fmt(cpu and cpu * 100, '.0f', '%')} samples "
            + ("—" if n is None else str(n))
        )
        hot = frames_line(seg.hot_frames)
        return [*lines, hot] if hot else lines

    @staticmethod
    def _done_lines(s: Snapshot, width: int) -> list[str]:
        """Each finished profiler or knob segment's deltas, newest first, and (with no
        profiler running) the hottest frame of the latest finished profile."""
        done = [f for f in reversed(s.segments[:-1]) if not f.baseline or f.cause == "knob"]
        if not done:
            return []
        lines = [
            "[b]done[/] Δtok/s ΔW ΔJ/tok cpu n"
            if width >= WIDE
            else "[b]done[/] Δtok/s ΔJ/tok; ΔW cpu n"
        ]
        for f in done:
            lines += delta_rows(f, width)
        seg = s.segment
        if seg is None or seg.profiler is None:
            hot = next((frames_line(f.hot_frames) for f in done if f.hot_frames), None)
            if hot:
                lines.append(hot)
        return lines

    @staticmethod
    def _current(seg: Figures, width: int) -> list[str]:
        """The running segment against its baseline: two lines, all over decode time."""
        if seg.delta is None:
            why = seg.not_comparable or "—"
            if why == "too little data":
                why = f"needs ≥{MIN_SECONDS:g} s, ≥{MIN_TOKENS} tok"
            if seg.load_s:
                why += f" (load {seg.load_s:.1f} s)"
            return [f"[dim]Δ {why}[/]"]
        d = seg.delta
        spread = d.get("tps_spread_pct")
        noise = f" ±{spread:.0f}%" if spread is not None else ""
        vs = "prev" if d.get("against") == "previous" else "base"
        tps = fmt(d["decode_tps_pct"], "+.0f", "%")
        dw = fmt(d["power_w"], "+.1f")
        jpt = fmt(_jpt(d), "+.0f", "%")
        dt = fmt(d["temp_max_c"], "+.0f")
        return [
            first_fit(width, f"Δtok/s {tps}{noise} ΔW {dw} vs {vs}", f"Δtok/s {tps} ΔW {dw}"),
            first_fit(
                width,
                f"ΔJ/tok {jpt} Δ°C {dt} (over decode)",
                f"ΔJ/tok {jpt} (decode) Δ°C {dt}",
                f"ΔJ/tok {jpt} (decode)",
            ),
        ]
