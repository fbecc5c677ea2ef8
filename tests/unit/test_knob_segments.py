"""Segments by setting: knob changes, Δ against the segment before, the Pareto front."""

from __future__ import annotations

import pytest

from anubis_tui.analysis.report import render_settings, report
from anubis_tui.analysis.segments import SegmentFold, energy_optimal, pareto_front, setting_name
from anubis_tui.recording.reader import load
from anubis_tui.session.knobs import layer_steps, parse_knob_value, step_in
from anubis_tui.session.plan import parse_plan
from tests import synthetic

INITIAL = {"threads": 2, "gpu_layers": 0, "power_limit_w": 700.0}


def _rec(tmp_path, phases):
    path = tmp_path / "k.msgpack"
    synthetic.write(path, phases, initial_knobs=INITIAL)
    return load(str(path))


def test_a_knob_change_starts_a_named_segment_compared_with_the_one_before(tmp_path):
    rec = _rec(
        tmp_path,
        [
            (10, 100.0, 200.0, None, None),
            (10, 80.0, 160.0, "knob:threads=1", None),
            (10, 120.0, 200.0, "knob:threads=2", None),
        ],
    )
    figs = SegmentFold().consume_all(rec.records).figures()
    assert [f.name for f in figs] == ["baseline", "threads=1", "baseline"]
    assert [f.cause for f in figs] == [None, "knob", "knob"]
    assert figs[0].delta is None
    d = figs[1].delta
    assert d is not None and d["against"] == "previous" and d["baseline"] == "baseline"
    assert d["decode_tps_pct"] == pytest.approx(-20.0, abs=1.0)
    assert d["power_w"] == pytest.approx(-20.0, abs=0.5)
    # J/token: 0.5 → 0.5 (80 W / 160 tok/s): no change
    assert d["j_per_token_pct"] == pytest.approx(0.0, abs=2.0)
    assert figs[2].delta["baseline"] == "threads=1"
    assert figs[2].knobs["threads"] == 2


def test_settings_merge_segments_of_one_setting_and_mark_the_pareto_front(tmp_path):
    rec = _rec(
        tmp_path,
        [
            (8, 100.0, 200.0, None, None),  # 0.5 J/tok at 200 tok/s
            (8, 60.0, 160.0, "knob:power_limit_w=300", None),  # 0.375 J/tok at 160: front
            (8, 150.0, 200.0, "knob:power_limit_w=450", None),  # 0.75 at 200: dominated
            (8, 100.0, 200.0, "knob:power_limit_w=700", None),  # the start again
        ],
    )
    sf = SegmentFold().consume_all(rec.records)
    settings = sf.settings()
    names = [f.name for f in settings]
    assert names == ["baseline", "limit=300W", "limit=450W"]
    base = settings[0]
    assert base.segments == 2 and base.active_s == pytest.approx(16, abs=1.0)
    assert {f.name for f in settings if f.pareto} == {"baseline", "limit=300W"}
    fastest, best = energy_optimal(settings)
    assert fastest is not None and fastest.name in ("baseline", "limit=450W")
    assert best is not None and best.name == "baseline"  # 300 W is 20 % slower: out of budget
    fastest, best = energy_optimal(settings, within=0.25)
    assert best is not None and best.name == "limit=300W"
    r = report(rec)
    assert r["energy_optimal"] == "baseline"
    assert [s["pareto"] for s in r["settings"]] == [True, True, False]
    assert all("knobs" in s and s["knobs"]["power_limit_w"] is not None for s in r["segments"])
    text = "\n".join(render_settings(r))
    assert "limit=300W" in text and "lowest J/token within 5 %" in text


def test_pareto_front_ignores_settings_without_enough_data():
    from anubis_tui.analysis.segments import Figures

    def fig(name, tps, jpt, enough=True):
        return Figures(
            index=0,
            name=name,
            profiler=None,
            rate_hz=None,
            knobs={},
            start_s=0,
            end_s=1,
            active_s=10,
            decode_tokens=100,
            decode_tps=tps,
            tps_spread=None,
            power_w=None,
            power_std_w=None,
            energy_j=None,
            j_per_token=jpt,
            temp_max_c=None,
            throttle_share={},
            profiler_cpu=None,
            samples=None,
            hot_frames=[],
            died=False,
            enough_data=enough,
        )

    a, b, c = fig("a", 100, 1.0), fig("b", 90, 0.5), fig("c", 200, 0.1, enough=False)
    assert pareto_front([a, b, c]) == [a, b]
    d = fig("d", 100, 0.4)
    assert pareto_front([a, b, d]) == [d]


def test_setting_names_only_name_what_changed():
    assert setting_name(None, None, {"threads": 2}, {"threads": 2}) == "baseline"
    assert setting_name("py-spy", 100.0, {"threads": 1}, {"threads": 2}) == "threads=1 py-spy@100"
    name = setting_name(None, None, {"gpu_layers": -1, "model": "/m/x-q8_0.gguf"}, {})
    assert name == "ngl=all model=x-q8_0"


def test_plans_take_knob_steps():
    steps = parse_plan("off:5,threads=1:5,gpu_layers=all+power_limit_w=300+py-spy@100:7")
    assert [s.seconds for s in steps] == [5, 5, 7]
    assert steps[0].profiler is not None and steps[0].profiler.profiler is None
    assert steps[1].profiler is None and steps[1].knobs == {"threads": 1}
    assert steps[2].knobs == {"gpu_layers": -1, "power_limit_w": 300.0}
    assert steps[2].profiler is not None and steps[2].profiler.profiler == "py-spy"
    for bad, why in (
        ("threads=0:5", "positive"),
        ("colour=red:5", "unknown knob"),
        ("flash_attn=maybe:5", "on or off"),
        ("threads=1+threads=2:5", "twice"),
        ("off+py-spy@100:5", "two profiler"),
        ("threads=1", "WHAT:SECONDS"),
        ("kv_type=q2:5", "kv_type is one of"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_plan(bad)


def test_knob_ladders():
    assert layer_steps(18) == [0, 4, 9, 13, -1]
    assert layer_steps(None) == [0, -1]
    assert step_in([0, 4, 9, 13, -1], 0, 1, wrap=False) == 4
    assert step_in([0, 4, 9, 13, -1], -1, 1, wrap=False) == -1
    assert step_in([0, 4, 9, 13, -1], 5, 1, wrap=False) == 9  # off the ladder: the nearest
    assert step_in((64, 128, 256, 512, 1024, 2048), 2048, 1, wrap=True) == 64
    assert parse_knob_value("gpu_layers", "all") == -1
    assert parse_knob_value("power_limit_w", "250") == 250.0
    with pytest.raises(ValueError):
        parse_knob_value("threads", "1.5")


def test_device_knobs_found_after_the_recording_started_are_part_of_the_start():
    """`record` starts recording before the session finds its device controls: the second
    ``knobs`` Event completes the starting setting, it does not rename the first segment."""
    from anubis_tui.records import Event

    sf = SegmentFold()
    sf.consume(Event(0, "knobs", {"values": {"threads": 8, "power_limit_w": None}}))
    sf.consume(Event(10, "knobs", {"values": {"threads": 8, "power_limit_w": 700.0}}))
    sf.consume(Event(20, "knob", {"name": "power_limit_w", "value": 200.0, "previous": 700.0}))
    sf.consume(Event(30, "knobs", {"values": {"threads": 8, "power_limit_w": 200.0}}))
    sf.consume(Event(40, "knob", {"name": "power_limit_w", "value": 700.0, "previous": 200.0}))
    assert [s.name for s in sf.segments] == ["baseline", "limit=200W", "baseline"]
    assert sf.initial_knobs == {"threads": 8, "power_limit_w": 700.0}
