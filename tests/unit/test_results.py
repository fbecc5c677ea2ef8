"""Result rows (schema anubis-result/1) from the committed recordings."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from anubis_tui.analysis.report import report
from anubis_tui.analysis.results import (
    SCHEMA,
    ResultError,
    check_row,
    dumps_rows,
    interval,
    quality_of,
    read_rows,
    rows_of,
    steady_verdict,
)
from anubis_tui.analysis.segments import SegmentFold
from anubis_tui.recording.reader import load

REC = Path(__file__).resolve().parents[2] / "recordings"
KNOBS = REC / "h200-cuda-gemma270m-knobs.msgpack"
VM = REC / "vm-2core-cpu-gemma270m.msgpack"


@pytest.fixture(scope="module")
def knob_rows() -> list[dict]:
    return rows_of(load(KNOBS), KNOBS)


def test_one_row_per_setting_with_the_report_figures(knob_rows: list[dict]) -> None:
    rec = load(KNOBS)
    settings = SegmentFold().consume_all(rec.records).settings()
    assert [r["setting"]["name"] for r in knob_rows] == [f.name for f in settings]
    for row, f in zip(knob_rows, settings, strict=True):
        assert row["schema"] == SCHEMA
        figs = row["figures"]
        # the same numbers `anubis report` prints for the setting, not a second computation
        assert figs["decode_tokens_per_s"]["value"] == f.decode_tps
        assert figs["energy_per_output_token_j"]["value"] == f.j_per_token
        assert figs["power_w"]["value"] == f.power_w
        assert row["temperature_max_c"] == f.temp_max_c
        for key in ("decode_tokens_per_s", "energy_per_output_token_j", "power_w"):
            fig = figs[key]
            if fig["ci95"] is not None:
                lo, hi = fig["ci95"]
                assert lo < fig["value"] < hi
                assert fig["n"] >= 2


def test_identity_setting_and_provenance(knob_rows: list[dict]) -> None:
    by = {r["setting"]["name"]: r for r in knob_rows}
    base = by["baseline"]
    assert base["setting"]["n_gpu_layers"] == -1  # llama-bench's key names
    assert base["setting"]["n_threads"] == 8
    assert by["ngl=9"]["setting"]["n_gpu_layers"] == 9
    assert base["identity"]["hardware"]["gpus"] == ["NVIDIA H200"]
    assert base["identity"]["runtime"]["backends"] == ["CUDA", "CPU"]
    assert base["identity"]["measurement"]["method"] == "estimated"
    prov = base["provenance"]
    assert prov["recording_sha256"] == hashlib.sha256(KNOBS.read_bytes()).hexdigest()
    assert prov["recording_path"] == str(KNOBS.resolve())
    assert prov["created_utc"].endswith("Z")
    assert len({r["row_id"] for r in knob_rows}) == len(knob_rows)


def test_power_limit_is_a_class_other_knobs_are_not(knob_rows: list[dict]) -> None:
    by = {r["setting"]["name"]: r for r in knob_rows}
    assert by["baseline"]["class_id"] == by["ngl=9"]["class_id"]
    assert by["limit=200W"]["class_id"] == by["ngl=9 limit=200W"]["class_id"]
    assert by["baseline"]["class_id"] != by["limit=200W"]["class_id"]
    assert by["limit=200W"]["class"]["hardware"]["power_limit_w"] == 200
    assert "model.sha256" in by["baseline"]["class_unknown"]  # an old recording: named


def test_rows_are_stable_and_round_trip(knob_rows: list[dict], tmp_path: Path) -> None:
    again = rows_of(load(KNOBS), KNOBS)
    strip = [{k: v for k, v in r.items() if k != "provenance"} for r in again]
    assert strip == [{k: v for k, v in r.items() if k != "provenance"} for r in knob_rows]
    text = dumps_rows(knob_rows)
    assert "NaN" not in text and "Infinity" not in text
    assert read_rows(text, "x.jsonl") == json.loads("[" + ",".join(text.splitlines()) + "]")


def test_request_figures_agree_with_the_report_on_a_one_setting_recording() -> None:
    rec = load(VM)
    (row,) = rows_of(rec, VM)
    r = report(rec)
    assert row["figures"]["ttft_s"]["value"] == pytest.approx(r["tokens"]["ttft_s"])
    assert row["figures"]["prompt_tokens_per_s"]["value"] == pytest.approx(
        r["tokens"]["prompt_tps"]
    )
    lo, hi = row["figures"]["ttft_s"]["ci95"]
    assert lo <= row["figures"]["ttft_s"]["value"] <= hi
    jpr = row["figures"]["energy_per_request_j"]["value"]
    per = row["figures"]["output_tokens_per_request"]["value"]
    assert jpr == pytest.approx(row["figures"]["energy_per_output_token_j"]["value"] * per)


def test_interval_is_scipy_t_for_independent_values_and_wider_for_correlated() -> None:
    rng = np.random.default_rng(1)
    iid = list(rng.normal(10, 1, 40))
    got = interval(iid)
    m = float(np.mean(iid))
    lo, hi = stats.t.interval(0.95, len(iid) - 1, loc=m, scale=stats.sem(iid))
    if got["n_eff"] == len(iid):  # no positive lag-1 correlation in this draw
        assert m - got["half"] == pytest.approx(lo) and m + got["half"] == pytest.approx(hi)
    drift = [10 + 0.1 * i + x for i, x in enumerate(rng.normal(0, 0.2, 40))]
    d = interval(drift)
    assert d["n_eff"] < 40 / 4  # a trend is strongly autocorrelated
    plain = stats.t.ppf(0.975, 39) * np.std(drift, ddof=1) / math.sqrt(40)
    assert d["half"] > 2 * plain
    assert interval([1.0])["half"] is None and interval([])["n"] == 0


def _chunks(values: list[float]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(start_s=5.0 * i, end_s=5.0 * (i + 1), decode_tps=v, j_per_token=1 / v)
        for i, v in enumerate(values)
    ]


def test_steady_verdict() -> None:
    flat = steady_verdict(_chunks([100, 101, 99, 100, 100.5, 99.5, 100, 101]))
    assert flat["steady"] is True
    drifting = steady_verdict(_chunks([100 - 2 * i for i in range(8)]))
    assert drifting["steady"] is False and "drifting" in drifting["reason"]
    assert steady_verdict(_chunks([100, 100]))["steady"] is None


@pytest.mark.parametrize(
    ("row", "msg"),
    [
        ({"schema": "anubis-result/2"}, "unknown schema version 'anubis-result/2'"),
        ({"schema": "something"}, "not an anubis result row"),
        ([1, 2], "not a JSON object"),
        ({"schema": SCHEMA, "row_id": "x"}, "missing"),
        (
            {
                "schema": SCHEMA,
                "row_id": "<script>",
                "class_id": "ab" * 8,
                "identity": {},
                "setting": {},
                "figures": {},
                "provenance": {"recording_sha256": "0" * 64},
            },
            "row_id is not 8 to 64 hex digits",
        ),
        (
            {
                "schema": SCHEMA,
                "row_id": "ab" * 8,
                "class_id": "ab" * 8,
                "identity": {},
                "setting": [],
                "figures": {},
                "provenance": {"recording_sha256": "0" * 64},
            },
            "setting is not an object",
        ),
    ],
)
def test_bad_rows_are_one_line_errors(row: object, msg: str) -> None:
    with pytest.raises(ResultError, match=msg) as e:
        check_row(row, "f.jsonl:3")
    assert "\n" not in str(e.value) and str(e.value).startswith("f.jsonl:3")


def test_bad_json_line_names_its_line() -> None:
    with pytest.raises(ResultError, match=r"rows.jsonl:2: not JSON"):
        read_rows("\n{nope\n", "rows.jsonl")  # a blank line is skipped, not an error
    with pytest.raises(ResultError, match=r"x:1: not JSON"):
        read_rows("[" * 100_000, "x")
    with pytest.raises(ResultError, match=r"x:1: not JSON \(NaN is not a JSON number\)"):
        read_rows('{"schema": NaN}', "x")


def test_a_sweep_rows_carry_profiler_cost_and_warmup() -> None:
    path = REC / "h100-cuda-gemma270m-sweep.msgpack"
    rec = load(path)
    rows = {r["setting"]["name"]: r for r in rows_of(rec, path)}
    sweep_rows = {
        (x["profiler"], x["rate_hz"]): x for x in report(rec)["sweep"]["rows"] if x["profiler"]
    }
    native = rows["py-spy --native@1000"]
    cost = native["profiler_cost"]
    ref = sweep_rows[("py-spy --native", 1000.0)]
    assert cost["delta_decode_tps_pct"]["value"] == ref["decode_tps_pct"] < -50
    assert cost["delta_j_per_token_pct"]["sd"] == ref["j_per_token_pct_sd"]
    assert cost["source"].startswith("sweep")
    assert rows["baseline"]["profiler_cost"] is None
    warm = rows["baseline"]["steady_state"]["warmup"]
    assert warm["reached"] is False and "temperature" in warm["reason"]
    # a capped GPU is another class, and its throttling is named
    assert rows["limit=200W"]["class_id"] != rows["baseline"]["class_id"]
    assert rows["limit=200W"]["throttled"] == ["power_cap"]
    assert "throttled: power_cap" in rows["limit=200W"]["flags"]


def _quality(model: str, kv: str, ppl: float, sha: str, variant: str = "") -> dict:
    """A ``quality`` Event's payload as `inference.quality.Perplexity.payload` makes it."""
    return {
        "ppl": ppl, "ppl_se": ppl * 0.07, "nll_mean": math.log(ppl), "nll_se": 0.07,
        "ci95": [ppl * 0.87, ppl * 1.15], "tokens": 2040, "chunks": 8, "n_ctx": 512,
        "kv_type": kv, "offload": True, "flash_attn": True, "model": model,
        "model_sha256": sha, "quantization": "Q8_0" if variant else "Q4_K_M",
        "variant": variant, "text": "sonnets.txt", "text_sha256": "ab" * 32,
        "tokens_sha256": "cd" * 32, "llama_cpp": "0.3.16", "compute_s": 9.0, "cached": True,
        "nll": [0.5] * 2040,
    }  # fmt: skip


def test_rows_carry_the_settings_perplexity_and_variant(tmp_path: Path) -> None:
    """A recording with ``quality`` Events (sweep --quality): each setting's row has its
    perplexity as a figure (value, se, 95 % interval, tokens) and the quality block with the
    variant label; a knob setting gets its own model's and KV type's figure."""
    from anubis_tui.records import Event

    rec = load(KNOBS)
    plain = rows_of(rec, KNOBS)
    assert all(r["quality"] is None and r["figures"]["perplexity"]["value"] is None for r in plain)
    start = next(iter(rec.events)).t
    model = next(
        r["setting"]["model_filename"] for r in plain if r["setting"].get("model_filename")
    )
    name = Path(model).name
    label = "requantized from Q4_K_M"
    rec.events.extend(
        [
            Event(start, "quality", _quality("other.gguf", "f16", 80.0, "0" * 64)),
            Event(start, "quality", _quality(name, "f16", 54.36, "1" * 64)),
            Event(start, "quality", _quality(name, "q8_0", 54.53, "1" * 64, label)),
        ]
    )
    rows = rows_of(rec, KNOBS)
    assert len(rows) == len(plain)
    for row in rows:
        check_row(row)
        fig = row["figures"]["perplexity"]
        assert fig == {
            "value": 54.36, "unit": "PPL", "n": 2040, "sd": None,
            "ci95": [54.36 * 0.87, 54.36 * 1.15], "se": pytest.approx(54.36 * 0.07),
        }  # fmt: skip
        q = row["quality"]
        assert q["model"] == name and q["kv_type"] == "f16" and q["variant"] == ""
        assert "nll" not in q  # the per-token NLLs stay in the recording
    back = read_rows(dumps_rows(rows), "rows.jsonl")
    assert back[0]["quality"]["ppl"] == 54.36
    # the label travels with a variant's figure; other KV types and models have their own
    q8 = quality_of({"model": model, "kv_type": "q8_0"}, [e.payload for e in rec.events])
    assert q8 is not None and q8["variant"] == label
    # no model knob: the recording's own model, by sha256
    assert quality_of({}, [e.payload for e in rec.events], "0" * 64)["model"] == "other.gguf"
    assert quality_of({"kv_type": "q4_0"}, [e.payload for e in rec.events]) is None
    # a damaged quality block is a one-line error, like any other part
    bad = dict(rows[0], quality={"ppl": "high"})
    with pytest.raises(ResultError, match="quality is not"):
        check_row(bad)
    bad = dict(rows[0], figures=dict(rows[0]["figures"], perplexity={"value": 1.0, "se": "x"}))
    with pytest.raises(ResultError, match="figure perplexity: se is not a number"):
        check_row(bad)
