"""One segment arithmetic: the live panel, replay and `anubis report` agree, and it is right."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from anubis_tui.analysis.replay import Replay
from anubis_tui.analysis.report import report
from anubis_tui.analysis.segments import SegmentFold, fold
from anubis_tui.recording.format import make_header
from anubis_tui.recording.reader import from_records, load, read_all
from anubis_tui.records import Channel, Event, Footer, Sample, Tokens
from anubis_tui.sources.nvml import NVML_FLAGS

RECORDINGS = sorted((Path(__file__).resolve().parents[2] / "recordings").glob("*.msgpack"))
S = 1_000_000_000


def shown(f: dict) -> tuple:
    """A segment's figures as the panel and the report print them."""
    d = f["delta"] or {}

    def fmt(v: float | None, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    return (
        f["name"],
        fmt(f["decode_tps"], ".1f"),
        fmt(f["power_w"], ".1f"),
        fmt(f["j_per_token"], ".4f"),
        fmt(f["profiler_cpu"], ".3f"),
        f["samples"],
        fmt(d.get("decode_tps_pct"), "+.1f"),
        fmt(d.get("power_w"), "+.1f"),
        fmt(d.get("j_per_token_pct"), "+.1f"),
        fmt(d.get("temp_max_c"), "+.0f"),
        f["not_comparable"],
    )


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_live_replay_and_report_agree_on_every_segment_of_the_real_recordings(path):
    records, _ = read_all(path)
    rep = [shown(f) for f in report(load(path))["segments"]]
    rp = Replay(records)
    # Play it the way the app does: frame by frame, 250 ms of recording each.
    while rp.pos_ns < rp.end_ns:
        rp.pos_ns = min(rp.end_ns, rp.pos_ns + 250_000_000)
        rp.advance(0)
        rp.state.snapshot()
    live = [shown(f.plain()) for f in rp.state.snapshot().segments]
    assert live == rep
    assert len(rep) >= 1


def test_the_sweep_recording_has_deltas_for_its_profiler_segments():
    path = next(p for p in RECORDINGS if "profiler-sweep" in p.name)
    segs = report(load(path))["segments"]
    prof = [g for g in segs if g["profiler"] and g["profiler"] != "scalene-off"]
    assert len(prof) >= 4 and all(g["delta"] for g in prof if g["enough_data"])


# -- the arithmetic, on hand-made record streams (not measurements) -------------------------

ENERGY = Channel(
    id="system.energy",
    label="e",
    source="anubis",
    kind="energy",
    unit="J",
    scope="components",
    method="counter",
    update_period_s=0.0,
)
POWER = Channel(
    id="system.power",
    label="p",
    source="anubis",
    kind="power",
    unit="W",
    scope="components",
    method="derived",
    update_period_s=0.0,
)
THROTTLE = Channel(
    id="gpu0.throttle",
    label="r",
    source="nvml:0",
    kind="throttle",
    unit="flags",
    scope="gpu",
    method="instant",
    update_period_s=0.25,
    meta={"flags": dict(NVML_FLAGS)},
)


def stream(plan: list[tuple[str, float, float, float, int]]) -> list:
    """Phases (what, seconds, watts, tok/s, throttle mask): what is "load", "pause",
    "off", or a profiler name. Samples every 100 ms; tokens in 50 ms batches."""
    recs: list = [make_header([ENERGY, POWER, THROTTLE], 0)]
    t, energy, req = 0, 0.0, 0
    for what, secs, watts, tps, mask in plan:
        if what == "pause":
            recs.append(Event(t, "paused", {}))
        elif what not in ("load", "run"):
            kind = "profiler_off" if what == "off" else "profiler_on"
            recs.append(Event(t, kind, {"profiler": what, "rate_hz": 100.0}))
        if what not in ("load", "pause"):
            req += 1
        end = t + int(secs * S)
        while t < end:
            recs.append(Sample(t, [energy, watts, mask]))
            if what not in ("load", "pause") and tps:
                n = int(tps / 20)
                for k in range(2):
                    bt = t + (k + 1) * S // 20
                    recs.append(Tokens(bt, n, "decode", req, bt - S // 20 + 1))
            energy += watts * 0.1
            t += S // 10
        if what == "pause":
            recs.append(Event(t, "resumed", {}))
    recs.append(Sample(t, [energy, plan[-1][2], plan[-1][4]]))
    recs.append(Footer(t, {"clean": True}))
    return recs


def test_model_load_and_pauses_belong_to_no_segment():
    # 5 s loading at 50 W with no token, then 10 s at 100 W and 40 tok/s; a 5 s pause at 20 W.
    recs = stream(
        [
            ("load", 5, 50, 0, 0),
            ("run", 10, 100, 40, 0),
            ("pause", 5, 20, 0, 0),
            ("run", 5, 100, 40, 0),
        ]
    )
    (base,) = fold(recs)
    assert base.decode_tps == pytest.approx(40, rel=0.03)
    # energy only over active time: 100 W ÷ 40 tok/s, not diluted by the load or the pause
    assert base.j_per_token == pytest.approx(100 / 40, rel=0.03)
    assert base.power_w == pytest.approx(100)
    assert base.active_s == pytest.approx(15, rel=0.03)


def test_a_throttled_baseline_is_not_fair():
    # baseline A unthrottled, baseline B under power_cap (0x4); py-spy unthrottled, nearer B
    recs = stream(
        [
            ("run", 10, 100, 40, 0),
            ("py-spy", 5, 100, 20, 0),
            ("off", 10, 300, 40, 4),
        ]
    )
    a, prof, b = fold(recs)
    assert b.flags == {"power_cap"} and not a.flags
    assert prof.delta is not None and prof.delta["baseline_start_s"] == a.start_s
    # a profiler segment that is itself throttled while every baseline is not: no delta
    recs = stream([("run", 10, 100, 40, 0), ("py-spy", 5, 300, 20, 4), ("off", 10, 100, 40, 0)])
    _, prof, _ = fold(recs)
    assert prof.delta is None and prof.not_comparable == "throttled: power_cap"


def test_too_little_data_and_a_dead_worker_give_no_delta():
    recs = stream([("run", 10, 100, 40, 0), ("py-spy", 1, 100, 40, 0), ("off", 10, 100, 40, 0)])
    _, short, _ = fold(recs)
    assert short.delta is None and short.not_comparable == "too little data"
    recs = stream([("run", 10, 100, 40, 0), ("py-spy", 6, 100, 40, 0), ("off", 10, 100, 40, 0)])
    died_at = next(r.t for r in recs if isinstance(r, Event) and r.kind == "profiler_off") - S
    recs.append(Event(died_at, "worker_died", {"signal": "SIGSEGV"}))
    recs.sort(key=lambda r: getattr(r, "t", 0))
    _, dead, _ = fold(recs)
    assert dead.died and dead.delta is None and dead.not_comparable == "worker died"


def test_the_fold_is_incremental_and_equal_to_the_whole():
    recs = stream([("run", 6, 100, 40, 0), ("py-spy", 6, 120, 20, 0), ("off", 6, 100, 40, 0)])
    inc = SegmentFold()
    for r in recs:
        inc.consume(r)
        inc.figures()  # reading mid-way must not change the outcome
    assert [f.plain() for f in inc.figures()] == [f.plain() for f in fold(recs)]
    rec = from_records(recs)
    assert [f.plain() for f in fold(rec.records)] == [f.plain() for f in inc.figures()]


def test_the_knobs_report_names_a_tie_and_puts_both_on_the_front():
    from anubis_tui.analysis.report import render_settings

    path = next(p for p in RECORDINGS if p.name == "h200-cuda-gemma270m-knobs.msgpack")
    r = report(load(path))
    # limit=200W is +0.3 % tok/s over the baseline, inside both settings' 90 % intervals
    assert r["fastest_tied"] == ["baseline", "limit=200W"]
    assert r["energy_optimal_tied"] == ["baseline", "limit=200W"]
    assert [s["name"] for s in r["settings"] if s["pareto"]] == ["baseline", "limit=200W"]
    half_layers = next(s for s in r["settings"] if s["name"] == "ngl=9")
    assert not half_layers["pareto"] and half_layers["tps_ci"] > 0
    text = "\n".join(render_settings(r))
    assert "fastest: a tie within noise: baseline, limit=200W" in text


def test_a_difference_beyond_both_intervals_is_no_tie():
    from anubis_tui.analysis.segments import Figures, pareto_front, tied

    def fig(name, tps, tci, jpt, jci):
        return Figures(
            index=0, name=name, profiler=None, rate_hz=None, knobs={}, start_s=0, end_s=1,
            active_s=10, decode_tokens=100, decode_tps=tps, tps_spread=None, power_w=None,
            power_std_w=None, energy_j=None, j_per_token=jpt, temp_max_c=None,
            throttle_share={}, profiler_cpu=None, samples=None, hot_frames=[], died=False,
            enough_data=True, tps_ci=tci, jpt_ci=jci,
        )  # fmt: skip

    a, b = fig("a", 100.0, 3.0, 0.50, 0.01), fig("b", 104.0, 3.0, 0.49, 0.01)
    assert tied(a, b, "decode_tps") and tied(a, b, "j_per_token")
    assert pareto_front([a, b]) == [a, b]
    c = fig("c", 110.0, 3.0, 0.45, 0.01)
    assert not tied(a, c, "decode_tps") and not tied(a, c, "j_per_token")
    assert pareto_front([a, b, c]) == [c]


def _paused_recording(tmp_path):
    """20 s of decode at 100 W and 200 tok/s with a 6 s pause at 40 W in the middle, its
    GPU energy counter read once a second (as NVML's) from 0.4 s on."""
    from tests import synthetic

    header = make_header(
        synthetic.CHANNELS,
        0,
        {"name": "synthetic"},
        {"system_power": {"channels": ["gpu0.energy"], "tier": "components", "method": "counter"}},
    )
    recs: list = [header]
    e = 0.0
    req = 0
    dt = S // 10
    for i in range(260):
        t = i * dt
        paused = 100 <= i < 160
        watts = 40.0 if paused else 100.0
        if i == 100:
            recs.append(Event(t, "paused", {}))
        if i == 160:
            recs.append(Event(t, "resumed", {}))
        if not paused and t % S == 0:
            req += 1
            recs.append(Event(t, "request_start", {"request": req}))
        gpu = e if i >= 4 and (i - 4) % 10 == 0 else None
        recs.append(Sample(t, [gpu, 60.0, 0, watts, e]))
        if not paused:
            for k in range(2):
                bt = t + k * (S // 20) + S // 40
                recs.append(Tokens(bt, 10, "decode", req, bt - S // 40 + 1))
            if (t + dt) % S == 0:
                recs.append(Event(t + dt - 1, "request_end", {"request": req, "generated": 200,
                                  "prompt_tokens": 10, "ttft_ns": 10_000_000,
                                  "decode_ns": int(199 / 200 * S)}))  # fmt: skip
        e += watts * dt / S
    recs.append(Footer(260 * dt, {"clean": True}))
    return from_records(recs), e


def test_the_headline_is_active_time_measured_first_with_idle_power_from_the_pause(tmp_path):
    from anubis_tui.analysis.report import render

    rec, _ = _paused_recording(tmp_path)
    r = report(rec)
    h = r["headline"]
    assert h["decode_tps"] == pytest.approx(200, rel=0.03)  # (n − 1) over first to last stamp
    assert h["j_per_token_measured"] == pytest.approx(0.5, rel=0.03)  # 100 W / 200 tok/s
    assert h["idle"]["pauses"] == 1 and h["idle"]["system_w"] == pytest.approx(40.0)
    assert h["idle"]["measured_w"] is None  # the counter has no power channel beside it
    assert h["active_j_per_token"] == pytest.approx(0.5 - 40 / 200, rel=0.05)
    # whole-recording energy includes the pause: more J/token than the active figure
    assert r["energy"]["j_per_token"] > h["j_per_token"]
    text = render(r)
    assert text.index("MEASURED (gpu0.energy)") < text.index("whole ")
    assert "idle power measured in 1 pause(s)" in text


def test_a_counter_read_once_a_second_is_extended_to_the_window_edges(tmp_path):
    from anubis_tui.analysis.windows import energy_j

    rec, _ = _paused_recording(tmp_path)
    # gpu0.energy's first reading is at 0.4 s, its last at 25.4 s; the window is 0–26 s
    whole = energy_j(rec, 0, 26 * S, "gpu0.energy")
    exact = 20 * 100.0 + 6 * 40.0
    assert whole == pytest.approx(exact, rel=0.005)
    inner = energy_j(rec, int(0.4 * S), int(25.4 * S), "gpu0.energy")
    assert inner < whole - 90  # a second of 100 W was missing before


def _nan(v):
    return float("nan") if v is None else float(v)


@pytest.mark.parametrize(
    "name", ["vm-2core-cpu-gemma270m.msgpack", "h200-cuda-gemma270m-knobs.msgpack"]
)
def test_panel_replay_csv_and_exporter_give_one_figure_for_now(name, tmp_path):
    """tok/s and J/token "now" at a sample of a committed recording: the panel's LiveState,
    a replay seeked there, the CSV row of that sample and the Prometheus exporter agree."""
    import csv
    import io
    import socket
    import sys

    import numpy as np

    from anubis_tui.analysis.export import now_series, write_csv
    from anubis_tui.analysis.live import LiveState

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "anubis-prometheus"))
    from anubis_prometheus import PrometheusSink

    path = next(p for p in RECORDINGS if p.name == name)
    rec = load(path)
    records = rec.records
    tps, jpt = now_series(rec)
    buf = io.StringIO()
    write_csv(rec, buf)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    head = rows[0]
    col_tps, col_jpt = head.index("decode_tps_2s"), head.index("j_per_token_10s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = PrometheusSink(f"127.0.0.1:{port}", rec.header)
    state = LiveState()
    state.consume(rec.header)
    samples = [i for i, r in enumerate(records) if isinstance(r, Sample)]
    picks = samples[5 :: max(1, len(samples) // 12)]
    fed, checked = 1, 0
    try:
        for pos in picks:
            for r in records[fed : pos + 1]:
                state.consume(r)
                sink(r)
            fed = pos + 1
            k = samples.index(pos)
            snap = state.snapshot()
            rp = Replay(records)
            rp.seek(records[pos].t)
            rsnap = rp.state.snapshot()
            cell_tps, cell_jpt = rows[k + 1][col_tps], rows[k + 1][col_jpt]
            for live, replay, csv_v, cell, exp in (
                (snap.decode_tps, rsnap.decode_tps, tps[k], cell_tps, sink.decode_tps()),
                (snap.jpt_recent, rsnap.jpt_recent, jpt[k], cell_jpt, sink.j_per_token()),
            ):
                vals = [_nan(live), _nan(replay), float(csv_v), float(cell or "nan"), exp]
                assert np.allclose(vals, vals[0], rtol=1e-4, equal_nan=True), (pos, vals)
            checked += not math.isnan(_nan(snap.decode_tps))
    finally:
        sink.close()
    assert checked >= 5  # most picks are inside decoding, not all "—"
