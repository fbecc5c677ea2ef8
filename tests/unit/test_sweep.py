"""Sweeps: order and interleaving, steady state, recommendations (compare: test_compare.py)."""

from __future__ import annotations

import math

import pytest

from anubis_tui.analysis.sweep import recommend, within_budget
from anubis_tui.session.sweep import Treatment, schedule, steady_state, treatments


def test_treatments_are_profilers_by_rates_then_knob_settings_other_than_the_start():
    items, notes = treatments(
        ["py-spy", "py-spy-native"], [10, 1000], {"threads": [1, 2], "gpu_layers": [0]},
        {"threads": 2, "gpu_layers": 0},
    )  # fmt: skip
    names = [t.name for t in items]
    assert names == [
        "py-spy@10",
        "py-spy@1000",
        "py-spy@10n",
        "py-spy@1000n",
        "threads=1 gpu_layers=0",
    ]
    assert items[2].profiler is not None and items[2].profiler.native
    assert items[-1].knobs == {"threads": 1, "gpu_layers": 0}
    assert notes == ["threads=2 gpu_layers=0 is the starting setting: it is the baseline"]
    with pytest.raises(ValueError, match="unknown profiler"):
        treatments(["perf"], [10], {}, {})


def test_order_interleaves_baselines_and_shuffles_each_repeat_by_seed():
    items = [Treatment(f"t{i}") for i in range(5)]
    order = schedule(items, 3, seed=7)
    roles = [role for _, role, _ in order]
    assert roles == ["baseline", "treatment"] * 15 + ["baseline"]  # B T B T … B
    per_repeat = [
        [t.name for r, role, t in order if role == "treatment" and r == k] for k in range(3)
    ]
    assert all(sorted(p) == [f"t{i}" for i in range(5)] for p in per_repeat)  # each once a repeat
    assert len({tuple(p) for p in per_repeat}) > 1  # shuffled anew each repeat
    assert schedule(items, 3, seed=7) == order  # the seed gives the same order
    assert schedule(items, 3, seed=8) != order


def _trace(f, seconds=60.0, dt=0.5):
    return [(i * dt, f(i * dt)) for i in range(int(seconds / dt))]


def test_steady_state_on_synthetic_temperature_traces():
    flat_p = _trace(lambda t: 100.0)
    rising = steady_state(_trace(lambda t: 40 + 0.1 * t), flat_p, 60.0)  # 6 °C/min
    assert not rising.reached and "moving +6.00 °C/min" in rising.reason
    plateau = steady_state(_trace(lambda t: 70 - 30 * math.exp(-t / 5)), flat_p, 60.0)
    assert plateau.reached and abs(plateau.temp_slope_c_per_min or 9) < 0.5
    oscillating = steady_state(_trace(lambda t: 60 + 3 * math.sin(t / 2)), flat_p, 60.0)
    assert not oscillating.reached and "swinging" in oscillating.reason
    none = steady_state([], flat_p, 60.0)
    assert not none.reached and "time bound" in none.reason
    noisy_power = steady_state(_trace(lambda t: 60.0), _trace(lambda t: 100 + 30 * (t % 2)), 60.0)
    assert not noisy_power.reached and "power varying" in noisy_power.reason
    early = steady_state(_trace(lambda t: 60.0, seconds=10), flat_p, 10.0)
    assert not early.reached and "less than 30 s" in early.reason


def _row(rate, tps, jpt, measurable=True):
    return {
        "profiler": "py-spy", "rate_hz": rate, "repeats": 3, "decode_tps_pct": tps,
        "decode_tps_pct_sd": 0.5, "j_per_token_pct": jpt, "j_per_token_pct_sd": 0.5,
        "tps_measurable": measurable, "jpt_measurable": measurable,
    }  # fmt: skip


def test_recommendation_on_synthetic_overhead_curves():
    curve = [_row(10, -0.2, 0.1), _row(100, -1.5, 1.8), _row(1000, -12.0, 14.0)]
    rec = recommend(curve, 2.0)["py-spy"]
    assert rec["rate_hz"] == 100
    assert "1000 Hz costs -12.0 % ±0.5 tok/s" in rec["evidence"]
    assert recommend(curve, 1.0)["py-spy"]["rate_hz"] == 10
    all_bad = [_row(10, -5.0, 6.0), _row(100, -9.0, 10.0)]
    assert recommend(all_bad, 2.0)["py-spy"]["rate_hz"] is None
    # a difference inside the baselines' own spread is no overhead: within any budget
    hidden = _row(1000, -3.0, 3.0, measurable=False)
    assert within_budget(hidden, 2.0) is True
    assert recommend([*curve[:2], hidden], 2.0)["py-spy"]["rate_hz"] == 1000
    # cheap-looking 1000 Hz beyond an expensive 100 Hz is noise: the recommendation stops at 10
    bumpy = [_row(10, -0.2, 0.1), _row(100, -6.6, 6.7), hidden]
    assert recommend(bumpy, 2.0)["py-spy"]["rate_hz"] == 10
