"""Segments (intervals with one profiler setting) and their deltas against a baseline.

A segment starts at every profiler Event (``profiler_on``, ``profiler_off``,
``profiler_rate``, ``profiler_ready``); the setting it runs under is
(profiler, rate). Baseline segments are those with no profiler. Each other
segment is compared with the nearest baseline segment in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anubis_tui.analysis.windows import Window, mean_std, window
from anubis_tui.recording.reader import Recording
from anubis_tui.records import Event

PROFILER_EVENTS = ("profiler_on", "profiler_off", "profiler_rate", "profiler_ready")
MIN_SECONDS = 3.0
MIN_TOKENS = 50


def segment_setting(e: Event) -> tuple[str | None, float | None]:
    """The (profiler, rate) a profiler Event starts; (None, None) is the baseline.

    ``py-spy --native`` is named apart (a different cost from nonblocking
    py-spy); a profiler_off that leaves scalene loaded names that state.
    """
    p = e.payload
    if e.kind == "profiler_off":
        return (p.get("ready") or None), None
    prof = p.get("profiler")
    if prof and p.get("mode") == "native":
        prof += " --native"
    rate = p.get("rate_hz")
    return prof, float(rate) if rate is not None else None


@dataclass
class Segment:
    profiler: str | None
    rate_hz: float | None
    window: Window
    delta: dict[str, Any]
    enough_data: bool
    samples: int | None = None  # what the profiler collected in this segment, when it said
    profiler_cpu: float | None = None  # mean CPU of the profiler process (ratio of a core)

    @property
    def baseline(self) -> bool:
        return self.profiler is None


def segments(rec: Recording, end_ns: int | None = None) -> list[Segment]:
    end = end_ns if end_ns is not None else int(rec.duration_s * 1e9)
    cuts: list[tuple[int, str | None, float | None]] = [(0, None, None)]
    ended_samples: dict[int, int] = {}  # cut index → samples reported when it ended
    for e in rec.events:
        if e.kind not in PROFILER_EVENTS:
            continue
        prof, rate = segment_setting(e)
        done = e.payload.get("samples", e.payload.get("previous_samples"))
        if done is not None:
            ended_samples[len(cuts) - 1] = int(done)
        cuts.append((e.t, prof, rate))
    segs: list[Segment] = []
    for i, (t, prof, rate) in enumerate(cuts):
        t_end = cuts[i + 1][0] if i + 1 < len(cuts) else end
        if t_end <= t:
            continue
        w = window(rec, t, t_end)
        enough = (w.end_s - w.start_s) >= MIN_SECONDS and w.decode_tokens >= MIN_TOKENS
        cpu, _ = mean_std(rec, "proc.profiler.cpu", t, t_end)
        segs.append(Segment(prof, rate, w, {}, enough, ended_samples.get(i), cpu))
    base = [s for s in segs if s.baseline and s.enough_data] or [s for s in segs if s.baseline]
    for s in segs:
        if s.baseline or not base:
            continue
        mid = (s.window.start_s + s.window.end_s) / 2
        b = min(base, key=lambda x: abs((x.window.start_s + x.window.end_s) / 2 - mid))
        s.delta = deltas(s.window, b.window)
        # A throttle in either window can pass for profiler overhead: say so beside the delta.
        s.delta["throttled"] = sorted(
            {
                f
                for w in (s.window, b.window)
                for f, share in w.throttle_share.items()
                if share > 0 and f != "idle"
            }
        )
    return segs


def deltas(w: Window, b: Window) -> dict[str, Any]:
    def pct(x: float | None, y: float | None) -> float | None:
        return None if x is None or not y else 100.0 * (x - y) / y

    def diff(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else x - y

    return {
        "decode_tps_pct": pct(w.decode_tps, b.decode_tps),
        "power_w": diff(w.power_w, b.power_w),
        "j_per_token_pct": pct(w.j_per_token, b.j_per_token),
        "temp_max_c": diff(w.temp_max_c, b.temp_max_c),
        "baseline_start_s": b.start_s,
    }
