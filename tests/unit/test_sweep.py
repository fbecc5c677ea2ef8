"""Sweeps: order and interleaving, steady state, recommendations (compare: test_compare.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from anubis_tui.analysis.sweep import decide, recommend
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


def _row(rate, tps_costs, jpt_costs=None, budget=2.0):
    """A sweep row from per-repeat costs (% slower, % more measured J/token)."""
    costs = {"tok/s": tps_costs}
    if jpt_costs is not None:
        costs["measured J/token"] = jpt_costs
    return {
        "profiler": "py-spy", "rate_hz": rate, "repeats": len(tps_costs),
        "decode_tps_pct": -sum(tps_costs) / len(tps_costs), "decode_tps_pct_sd": 0.5,
        "j_per_token_pct": None, "j_per_token_measured_pct": None,
        **decide(costs, budget),
    }  # fmt: skip


def test_decisions_come_from_one_sided_bounds_not_point_estimates():
    assert decide({"tok/s": [0.1, 0.3, 0.2]}, 2.0)["decision"] == "within"
    assert decide({"tok/s": [9.0, 10.0, 11.0]}, 2.0)["decision"] == "over"
    # a mean inside the budget with a wide spread: the upper bound is not
    wide = decide({"tok/s": [-3.0, 4.0, 1.0]}, 2.0)
    assert wide["decision"] == "inconclusive" and wide["more_repeats"] >= 1
    assert "more repeats" in wide["why"]
    # one repeat: no interval, whatever the number
    one = decide({"tok/s": [0.0]}, 2.0)
    assert one["decision"] == "inconclusive" and "one repeat" in one["why"]
    # measured J/token decides beside tok/s
    assert decide({"tok/s": [0.1, 0.2], "measured J/token": [8.0, 8.2]}, 2.0)["decision"] == "over"


def test_recommendation_is_the_highest_rate_decided_within_budget_from_the_bottom():
    curve = [_row(10, [0.1, 0.2, 0.15]), _row(100, [0.5, 0.9, 0.7]), _row(1000, [11, 13, 12])]
    rec = recommend(curve, 2.0)["py-spy"]
    assert rec["rate_hz"] == 100 and rec["decision"] == "within"
    assert "1000 Hz over budget" in rec["evidence"] and "at 95 %" in rec["evidence"]
    # an undecided rate stops the climb: a cheap-looking rate above it is not evidence
    bumpy = [_row(10, [0.1, 0.2, 0.15]), _row(100, [-3.0, 4.0, 1.0]), _row(1000, [0.1, 0.2, 0.1])]
    rec = recommend(bumpy, 2.0)["py-spy"]
    assert rec["rate_hz"] == 10 and "100 Hz inconclusive" in rec["evidence"]
    # one-repeat sweeps recommend nothing
    ones = [_row(10, [0.1]), _row(100, [0.2])]
    rec = recommend(ones, 2.0)["py-spy"]
    assert rec["rate_hz"] is None and "one repeat" in rec["evidence"]
    # a warm-up that did not settle is named in each recommendation
    cold = recommend(curve, 2.0, {"reached": False, "reason": "temperature moving +2.4 °C/min"})
    assert "warm-up not steady (temperature moving +2.4 °C/min)" in cold["py-spy"]["evidence"]


def test_sweep_reports_of_the_committed_sweeps():
    from anubis_tui.analysis.report import report
    from anubis_tui.recording.reader import load

    root = Path(__file__).resolve().parents[2]
    vm = report(load(root / "recordings/vm-2core-cpu-sweep.msgpack"))["sweep"]
    # no power meter on the VM: estimated J/token is shown, tok/s alone decides
    assert vm["energy_decides"] is False
    assert vm["recommended"]["py-spy"]["rate_hz"] == 10
    assert "warm-up not steady" in vm["recommended"]["py-spy"]["evidence"]
    gpu = report(load(root / "recordings/h100-cuda-gemma270m-sweep.msgpack"))["sweep"]
    assert gpu["energy_decides"] is True
    rows = {r["treatment"]: r for r in gpu["rows"]}
    assert rows["py-spy@1000n"]["decision"] == "over"
    # two repeats of a noisy GPU: nothing at 10 Hz is decided, so nothing is recommended
    assert all(v["rate_hz"] is None for v in gpu["recommended"].values())


def test_two_identical_gpu_sweeps_decide_the_same():
    """Two identical sweeps on one H200, back to back (`bench/gpu/run.sh checks sweeps2`): they
    must recommend the same rates or both say inconclusive. Before the noise floor, the second's
    py-spy@1000 had "+0.0 % ±0.0" J/token from two repeats and was recommended, the first's not."""
    from anubis_tui.analysis.report import report
    from anubis_tui.recording.reader import load

    root = Path(__file__).resolve().parents[2]
    a, b = (
        report(load(root / f"recordings/h200-cuda-gemma270m-sweep-{k}.msgpack"))["sweep"]
        for k in "ab"
    )
    for prof in ("py-spy", "scalene"):
        assert a["recommended"][prof]["rate_hz"] == b["recommended"][prof]["rate_hz"]
    rows = {r["treatment"]: r for r in b["rows"]}
    assert rows["py-spy@1000"]["j_per_token_measured_pct_sd"] < 0.1  # the lucky pair
    assert rows["py-spy@1000"]["decision"] == "inconclusive"


def test_a_treatment_that_cannot_be_set_ends_the_sweep_instead_of_running_as_the_baseline():
    """A refused knob left the session in the baseline's setting while the sweep_step named
    the treatment (the H200 quality sweep "measured" two variants that never loaded)."""
    import threading

    from anubis_tui.session.core import Outcome
    from anubis_tui.session.sweep import Sweep, SweepOptions, Treatment

    class Surface:  # the ControlSurface calls a sweep step makes, and what they were given
        def __init__(self) -> None:
            self.events: list[tuple[str, dict]] = []

        def knob_values(self):
            return {"kv_type": "f16"}

        channels: tuple = ()

        def add_sink(self, sink) -> None:
            pass

        def set_knob(self, name, value):
            return Outcome(False, "a quantized KV cache needs flash attention")

        def profiler_plain(self):
            return Outcome(True, "")

        def emit_event(self, kind, **payload) -> None:
            self.events.append((kind, payload))

    surface = Surface()
    opts = SweepOptions(segment_s=0.01, repeats=1, warmup_s=0.01, cooldown_s=0)
    sweep = Sweep(surface, [Treatment("kv_type=q8_0", knobs={"kv_type": "q8_0"})], opts)  # type: ignore[arg-type]
    why = sweep._step(1, 0, "treatment", sweep.items[0], threading.Event())
    assert why == "kv_type=q8_0 could not be set: a quantized KV cache needs flash attention"
    assert not [e for e in surface.events if e[0] == "sweep_step"]  # no segment named after it
