"""Quality figures without a model: the text, the statistics, the cache, the table, variants."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anubis_tui.analysis.quality import quality_table, ratio_interval, render_quality, verdict
from anubis_tui.inference import quality
from anubis_tui.inference.variants import (
    VariantError,
    label_for,
    out_name,
    parse_types,
    quantize,
    variant_label,
)
from anubis_tui.records import INVALID_EVENT, check_event


def test_eval_text_is_the_sonnets_without_the_header() -> None:
    raw = (
        Path(quality.__file__)
        .parent.joinpath("data", quality.TEXT_NAME)
        .read_text(encoding="utf-8")
    )
    assert raw.startswith("# ") and "public domain" in raw.lower() and '"shakespeare" 0.6' in raw
    text = quality.eval_text()
    assert text.startswith("THE SONNETS\nby William Shakespeare")
    assert "#" not in text.splitlines()[0] and "Gutenberg" not in text
    assert "XXVI" in text and len(text) > 15_000


def test_summary_is_llama_cpps_formula() -> None:
    rng = np.random.default_rng(1)
    nll = list(rng.gamma(2.0, 1.5, size=500))
    ppl, ppl_se, _mean, se, ci = quality._summary(nll)
    n = len(nll)
    m = sum(nll) / n
    m2 = sum(v * v for v in nll) / n
    llama_se = math.sqrt((m2 - m * m) / (n - 1))  # perplexity.cpp's "+/-" before × PPL
    assert ppl == pytest.approx(math.exp(m))
    assert se == pytest.approx(llama_se, rel=1e-9)
    assert ppl_se == pytest.approx(llama_se * ppl, rel=1e-9)
    assert ci[0] < ppl < ci[1]


def _ppl(model: str, kv: str, nll: list[float], tokens_sha: str = "t") -> dict[str, object]:
    ppl, ppl_se, mean, se, ci = quality._summary(nll)
    return {
        "model": model,
        "kv_type": kv,
        "ppl": ppl,
        "ppl_se": ppl_se,
        "nll_mean": mean,
        "nll_se": se,
        "ci95": list(ci),
        "tokens": len(nll),
        "tokens_sha256": tokens_sha,
        "nll": nll,
        "variant": "",
    }


def test_paired_ratio_is_tighter_than_the_unpaired_one() -> None:
    rng = np.random.default_rng(2)
    base = rng.gamma(2.0, 1.5, size=1000)
    worse = base + 0.02 + rng.normal(0, 0.01, size=1000)  # the same tokens, 2 % more NLL
    a, b = _ppl("a", "f16", list(worse)), _ppl("b", "f16", list(base))
    paired = ratio_interval(a, b)
    assert paired is not None
    assert paired[1] > 1.0 and paired[0] == pytest.approx(math.exp(0.02), rel=2e-3)
    unpaired = ratio_interval(dict(a, tokens_sha256="x"), b)
    assert unpaired is not None and unpaired[1] < 1.0 < unpaired[2]  # the noise of the text
    assert verdict(paired, 5.0) == "within" and verdict(paired, 1.0) == "over"
    assert verdict(unpaired, 5.0) == "inconclusive" and verdict(None, 5.0) == "unknown"


def _setting(name: str, model: str, kv: str, jpt: float, ci: float = 0.001) -> dict[str, object]:
    return {
        "name": name,
        "profiler": None,
        "knobs": {"model": f"/m/{model}", "kv_type": kv},
        "decode_tps": 50.0,
        "tps_ci": 1.0,
        "j_per_token": jpt,
        "jpt_ci": ci,
    }


def _study() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Six settings of four models and two KV types, and their quality figures."""
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 1.5, size=1000)
    qs = [
        _ppl("q4km.gguf", "f16", list(base)),
        _ppl("q8.gguf", "f16", list(base - 0.01)),  # better and dearer
        _ppl("q4_0.gguf", "f16", list(base + 0.03)),  # 3 % worse, cheaper: the pick at 5 %
        _ppl("q2k.gguf", "f16", list(base + 0.4)),  # 49 % worse, cheapest: over budget
        _ppl("q4km.gguf", "q8_0", list(base + 0.01)),  # worse and dearer: off the front
    ]
    settings = [
        _setting("baseline", "q4km.gguf", "f16", 0.100),
        _setting("model=q8.gguf", "q8.gguf", "f16", 0.130),
        _setting("model=q4_0.gguf", "q4_0.gguf", "f16", 0.080),
        _setting("model=q2k.gguf", "q2k.gguf", "f16", 0.060),
        _setting("model=nope.gguf", "nope.gguf", "f16", 0.050),  # no quality figure
        _setting("kv=q8_0", "q4km.gguf", "q8_0", 0.105),
    ]
    return settings, qs


def test_table_front_and_the_least_energy_within_budget() -> None:
    settings, qs = _study()
    t = quality_table(settings, qs, 5.0)
    by = {r["name"]: r for r in t["rows"]}
    assert by["baseline"]["quality"] == "baseline"
    assert by["model=q8.gguf"]["quality"] == "within"
    assert by["model=q4_0.gguf"]["quality"] == "within"
    assert by["model=q2k.gguf"]["quality"] == "over"
    assert by["model=nope.gguf"]["quality"] == "unknown" and by["model=nope.gguf"]["ppl"] is None
    assert t["recommended"] == "model=q4_0.gguf"
    assert by["model=q4_0.gguf"]["saving_pct"] == pytest.approx(20.0)
    front = {r["name"] for r in t["rows"] if r["pareto"]}
    assert front == {"baseline", "model=q8.gguf", "model=q4_0.gguf", "model=q2k.gguf"}
    assert by["kv=q8_0"]["quality"] == "within"  # within budget, yet dominated by the baseline
    text = "\n".join(render_quality(t))
    assert "least energy within +5 % perplexity: model=q4_0.gguf" in text
    assert quality_table(settings, qs, 1.0)["recommended"] == "baseline"


def test_cache_round_trip_and_sha_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    s = quality.Setting(kv_type="q8_0")
    assert quality.cached(model, s) is None
    sha = quality.model_sha256(model)
    p = _ppl("m.gguf", "q8_0", [1.0, 2.0, 3.0])
    r = quality.Perplexity(
        ppl=float(p["ppl"]),  # type: ignore[arg-type]
        ppl_se=1.0,
        nll_mean=2.0,
        nll_se=0.5,
        ci95=(1.0, 20.0),
        tokens=3,
        chunks=1,
        n_ctx=8,
        kv_type="q8_0",
        offload=False,
        flash_attn=False,
        model="m.gguf",
        model_sha256=sha,
        quantization="Q4_K_M",
        variant="",
        text=quality.TEXT_NAME,
        text_sha256=quality.sha256_text(quality.eval_text()),
        tokens_sha256="t",
        llama_cpp="x",
        compute_s=1.0,
        nll=[1.0, 2.0, 3.0],
    )
    quality.store(model, s, r)
    hit = quality.cached(model, s)
    assert hit is not None and hit.cached and hit.ppl == r.ppl and hit.nll == r.nll
    assert quality.cached(model, quality.Setting(kv_type="f16")) is None  # another setting
    model.write_bytes(b"GGUF" + bytes(101))  # another file at the same path
    assert quality.cached(model, s) is None
    kind, payload = check_event("quality", hit.payload())
    assert kind == "quality" and payload["ppl"] == r.ppl
    assert check_event("quality", {"model": "m", "kv_type": "f16"})[0] == INVALID_EVENT


def test_types_names_and_labels(tmp_path: Path) -> None:
    assert parse_types("q8_0, Q5_K_M,q4_0,q2_k,q8_0") == ["q8_0", "q5_k_m", "q4_0", "q2_k"]
    with pytest.raises(VariantError, match="unknown quantization type 'q9'"):
        parse_types("q8_0,q9")
    with pytest.raises(VariantError, match="no quantization type"):
        parse_types(" , ")
    assert out_name(Path("g-q4_k_m.gguf"), "q8_0", True) == "g-q4_k_m-to-q8_0.gguf"
    assert out_name(Path("g-f16.gguf"), "q4_0", False) == "g-f16-q4_0.gguf"
    assert label_for(True, "Q4_K_M", "g.gguf") == "requantized from Q4_K_M"
    assert label_for(False, "F16", "g-f16.gguf") == "quantized from g-f16.gguf"
    v = tmp_path / "g-to-q8_0.gguf"
    assert variant_label(v) == ""
    (tmp_path / "g-to-q8_0.gguf.anubis.json").write_text(
        json.dumps({"requantized": True, "source_quantization": "Q4_K_M", "source": "g.gguf"})
    )
    assert variant_label(v) == "requantized from Q4_K_M"
    (tmp_path / "g-to-q8_0.gguf.anubis.json").write_text("[not json")
    assert variant_label(v) == ""


def test_quantize_refuses_a_corrupt_source_before_llama(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    out = tmp_path / "out"
    with pytest.raises(VariantError, match=r"corrupt GGUF|truncated"):
        quantize(bad, "q4_0", out)
    assert not out.exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anubis_tui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    for args in (
        ("models", "quantize", str(bad), "--types", "q4_0", "--out-dir", str(tmp_path / "o")),
        ("models", "quantize", str(bad), "--types", "q9"),
        ("models", "quantize", str(tmp_path / "missing.gguf"), "--types", "q4_0"),
        ("models", "perplexity", "--kv-type", "q5_1"),
        ("models", "list", "--models-dir", str(tmp_path / "nowhere")),
    ):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("anubis: "), args
    assert not (tmp_path / "o").exists()


def test_list_shows_size_quantization_and_variant(tmp_path: Path) -> None:
    r = _cli("models", "list", "--models-dir", str(tmp_path))
    assert r.returncode == 0 and r.stdout == ""
    (tmp_path / "junk.gguf").write_bytes(b"nope")
    r = _cli("models", "list", "--models-dir", str(tmp_path))
    assert r.returncode == 0 and "junk.gguf\tunreadable: " in r.stdout


def test_plot_draws_the_quality_front_and_names_the_pick() -> None:
    """`report --plot` on a sweep --quality: J/token against PPL, the front red and joined,
    the budget line at the baseline's PPL + 5 %, the pick starred and named."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anubis_tui.analysis.export import plot_sweep
    from anubis_tui.analysis.quality import draw_front

    settings, qs = _study()
    qs[2] = dict(qs[2], variant="requantized from Q4_K_M")
    t = quality_table(settings, qs, 5.0)
    by = {r["name"]: r for r in t["rows"]}
    fig, ax = plt.subplots()
    try:
        draw_front(ax, t)
        labels = [a.get_text() for a in ax.texts]
        # every setting with a PPL and a J/token, the variant under its name; none without
        assert len(labels) == 5 and "model=nope.gguf" not in " ".join(labels)
        assert "model=q4_0.gguf\n(requantized from Q4_K_M)" in labels
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        star = lines["recommended: model=q4_0.gguf"]
        assert list(star.get_xdata()) == [by["model=q4_0.gguf"]["ppl"]]
        budget = lines["baseline PPL +5 %"]
        assert budget.get_xdata()[0] == pytest.approx(by["baseline"]["ppl"] * 1.05)
        front = lines["Pareto front"]  # the four front settings joined, in PPL order
        assert list(front.get_xdata()) == sorted(r["ppl"] for r in t["rows"] if r["pareto"])
        # the PPL bars are the paired intervals (what the verdict reads), far tighter than
        # each figure's own interval over the text
        q40 = by["model=q4_0.gguf"]
        lo, hi = q40["ppl_vs"][1] * by["baseline"]["ppl"], q40["ppl_vs"][2] * by["baseline"]["ppl"]
        assert hi - lo < (q40["ppl_ci95"][1] - q40["ppl_ci95"][0]) / 3
    finally:
        plt.close(fig)
    out = io.BytesIO()
    plot_sweep({"settings": settings, "quality": t}, out, "png")
    assert out.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_child_reason_and_launch() -> None:
    """One launcher for the quantizer and the perplexity pass: a failing child's reason in one
    line (its own, or llama.cpp's first where asked), a timeout, and stdout on success."""
    from anubis_tui.inference.child import reason, run_module

    log = (
        "llama_model_loader: loaded meta data\n"
        "[   1/ 236] token_embd.weight - llama_model_quantize_impl: error: type iq2_xxs "
        "needs an importance matrix\n"
        "anubis: llama.cpp's quantizer failed (status 1)\n"
    )
    assert reason(log, 1, llama_first=True).startswith("llama_model_quantize_impl: error: type")
    assert reason(log, 1) == "llama.cpp's quantizer failed (status 1)"
    assert reason("some progress\n", -9) == "killed by signal 9"
    assert reason("", 3) == "exit status 3"
    assert reason("last words\n", 1) == "last words"

    class Boom(Exception):
        pass

    with pytest.raises(Boom, match=r"^tool: .*No such file"):
        run_module("json.tool", {"not": "a file"}, what="tool", error=Boom, timeout_s=60)
    with pytest.raises(Boom, match=r"^slow took more than 0.001 s$"):
        run_module("json.tool", {}, what="slow", error=Boom, timeout_s=0.001)
    with pytest.raises(Boom, match=r"No such file.* \(disk\?\)$"):
        run_module("json.tool", {}, what="t", error=Boom, timeout_s=60, hint=lambda: " (disk?)")
