"""The profiler panel: the running setting and its deltas, then every finished segment.

Every number comes from `analysis.segments` (through the snapshot), the
same function `anubis report` prints, so screen and report agree.
"""

from __future__ import annotations

from typing import Any

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.analysis.segments import MIN_SECONDS, MIN_TOKENS, Figures
from anubis_tui.ui.widgets.panel import Panel


def delta_row(f: Figures) -> str:
    """One finished segment: Δtok/s, ΔW, ΔJ/tok, profiler CPU, samples (as the report)."""
    d = f.delta
    name = f.name if len(f.name) <= 13 else f.name[:12] + "…"
    if d is None:
        return f"{name:<13} {f.not_comparable or '—'}"
    if d.get("against") == "previous":  # a knob's effect: no profiler columns
        return (
            f"{name:<13}{fmt(d['decode_tps_pct'], '+5.1f', '%')} "
            f"{fmt(d['power_w'], '+.1f', 'W')} {fmt(d['j_per_token_pct'], '+.1f', '%')}J "
            "vs prev"
        )
    return (
        f"{name:<13}{fmt(d['decode_tps_pct'], '+5.1f', '%')} "
        f"{fmt(d['power_w'], '+.1f', 'W')} {fmt(d['j_per_token_pct'], '+.1f', '%')}J "
        f"{fmt(f.profiler_cpu and f.profiler_cpu * 100, '.0f', '%')}cpu "
        f"{f.samples if f.samples is not None else '—'}"
    )


def frames_line(frames: list[dict[str, Any]]) -> str | None:
    if not frames:
        return None
    f = frames[0]
    return f"hot {str(f.get('function'))[:18]} {fmt(100 * (f.get('share') or 0), '.0f', '%')}"


class ProfilerPanel(Panel):
    TITLE = "setting & profiler"
    static_line: Any = None  # a callable tok/s → the static-ceiling line, once measured

    def text(self, s: Snapshot) -> str:
        seg = s.segment
        lines = []
        if seg is None:
            lines.append("off")
        elif seg.profiler is None:
            lines.append(f"{seg.name}, {seg.end_s - seg.start_s:.0f}s")
            if seg.cause == "knob":
                lines.append(self._current(seg, s.baseline))
            else:
                lines.append("[dim]profiler off[/]")
        else:
            lines.append(f"{seg.name}, {seg.end_s - seg.start_s:.0f}s")
            lines.append(self._current(seg, s.baseline))
            cpu = s.self_cost.get("profiler_cpu")
            n = seg.samples
            lines.append(
                f"own CPU {fmt(cpu and cpu * 100, '.0f', '%')} samples "
                + ("—" if n is None else str(n))
            )
            hot = frames_line(seg.hot_frames)
            if hot:
                lines.append(hot)
        done = [f for f in reversed(s.segments[:-1]) if not f.baseline or f.cause == "knob"]
        if done:
            lines.append("[b]done[/] Δtok/s ΔW ΔJ cpu n")
            lines += [delta_row(f) for f in done]
            if seg is None or seg.profiler is None:
                hot = next((frames_line(f.hot_frames) for f in done if f.hot_frames), None)
                if hot:
                    lines.append(hot)
        if self.static_line is not None:
            lines.append(self.static_line(s.decode_tps))
        return "\n".join(lines)

    @staticmethod
    def _current(seg: Figures, base: Figures | None) -> str:
        if seg.delta is None:
            why = seg.not_comparable or "—"
            if why == "too little data":
                why = f"needs ≥{MIN_SECONDS:g} s, ≥{MIN_TOKENS} tok"
            if seg.load_s:
                why += f" (load {seg.load_s:.1f} s)"
            return f"[dim]Δ {why}[/]"
        d = seg.delta
        spread = d.get("tps_spread_pct")
        noise = f" ±{spread:.0f}%" if spread is not None else ""
        dw = fmt(d["power_w"], "+.1f")
        vs = "vs prev" if d.get("against") == "previous" else "vs base"
        return (
            f"Δtok/s {fmt(d['decode_tps_pct'], '+.0f', '%')}{noise} ΔW {dw} {vs}\n"
            f"ΔJ/tok {fmt(d['j_per_token_pct'], '+.0f', '%')} Δ°C {fmt(d['temp_max_c'], '+.0f')}"
        )
