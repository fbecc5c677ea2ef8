"""Issue 26 item 4 in the app: the setting panel's perplexity and its Δ against the baseline
setting, and the model picker's size, quantization and cached perplexity per file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.quality import ratio_interval
from anubis_tui.config import Config
from anubis_tui.inference.quality import Perplexity, Setting, eval_text, sha256_text, store
from anubis_tui.recording.format import make_header
from anubis_tui.records import Event, Tokens
from anubis_tui.ui.app import LiveOptions, make_app
from anubis_tui.ui.widgets.profiler import quality_line
from tests.ui.test_app import text, until

S = 1_000_000_000
MODEL = "/models/gemma-3-270m-q4_k_m.gguf"
RNG = np.random.default_rng(26)
BASE_NLL = RNG.uniform(0.5, 6.0, 400)


def quality(kv: str, shift: float, variant: str = "") -> dict:
    """A ``quality`` payload whose per-token NLLs are the baseline's plus `shift` nats (with
    noise), over the same tokens."""
    nll = BASE_NLL + shift + (RNG.normal(0, 0.05, len(BASE_NLL)) if shift else 0)
    mean, se = float(nll.mean()), float(nll.std(ddof=1) / np.sqrt(len(nll)))
    ppl = float(np.exp(mean))
    return {
        "ppl": ppl, "ppl_se": ppl * se, "nll_mean": mean, "nll_se": se,
        "ci95": [ppl * 0.9, ppl * 1.1], "tokens": len(nll), "chunks": 1, "n_ctx": 512,
        "kv_type": kv, "offload": False, "flash_attn": False, "model": Path(MODEL).name,
        "model_sha256": "ab" * 32, "quantization": "Q4_K_M", "variant": variant,
        "text": "t", "text_sha256": "cd" * 32, "tokens_sha256": "ef" * 32,
        "llama_cpp": "0", "compute_s": 1.0, "cached": False, "nll": nll.tolist(),
    }  # fmt: skip


def state(*qualities: dict, kv_now: str = "q8_0") -> LiveState:
    """Started on f16 KV (the baseline setting), then k made it `kv_now`; `qualities` are
    recorded as ``quality`` Events after the change."""
    st = LiveState()
    st.consume(make_header([], 0))
    st.consume(Event(1, "knobs", {"values": {"model": MODEL, "kv_type": "f16", "threads": 2}}))
    st.consume(Tokens(S, 50, "decode", 1, S))
    if kv_now != "f16":
        st.consume(Event(2 * S, "knob", {"name": "kv_type", "value": kv_now}))
        st.consume(Tokens(3 * S, 50, "decode", 2, 3 * S))
    for i, q in enumerate(qualities):
        st.consume(Event(4 * S + i, "quality", q))
    return st


def test_no_line_before_the_settings_perplexity_is_known():
    assert quality_line(state().snapshot(), 80) is None
    # only another setting's is known: still nothing for this one
    assert quality_line(state(quality("f16", 0.0)).snapshot(), 80) is None


def test_the_setting_s_perplexity_and_its_delta_against_the_baseline_setting():
    base, q8 = quality("f16", 0.0), quality("q8_0", 0.03)
    snap = state(base, q8).snapshot()
    assert snap.quality is q8 and snap.quality_base is base
    r, lo, hi = ratio_interval(q8, base) or (0, 0, 0)
    assert lo < r < hi and r == pytest.approx(np.exp(0.03), rel=0.01)  # paired: same tokens
    want = (
        f"PPL {q8['ppl']:.2f} ±{q8['ppl_se']:.2f} Δ{100 * (r - 1):+.1f}% "
        f"({100 * (lo - 1):+.1f}..{100 * (hi - 1):+.1f}) vs base"
    )
    assert quality_line(snap, 80) == want
    assert quality_line(snap, 20) == f"PPL {q8['ppl']:.2f} Δ{100 * (r - 1):+.1f}%"
    assert quality_line(snap, 14) == f"PPL {q8['ppl']:.1f} Δ{100 * (r - 1):+.0f}%"


def test_the_baseline_setting_and_an_unknown_baseline_say_so():
    base = quality("f16", 0.0)
    line = quality_line(state(base, kv_now="f16").snapshot(), 80)
    assert line == f"PPL {base['ppl']:.2f} ±{base['ppl_se']:.2f} = base"
    q8 = quality("q8_0", 0.03)
    line = quality_line(state(q8).snapshot(), 80)
    assert line is not None and line.endswith("base not yet")


def test_a_requantized_variant_is_marked_at_every_width():
    base, q8 = quality("f16", 0.0), quality("q8_0", 0.03, variant="requantized from Q4_K_M")
    snap = state(base, q8).snapshot()
    wide, narrow = quality_line(snap, 120) or "", quality_line(snap, 40) or ""
    assert "(requantized from Q4_K_M)" in wide
    assert "requant." in narrow


async def test_the_panel_shows_it_in_the_app():
    base, q8 = quality("f16", 0.0), quality("q8_0", 0.03)
    app = make_app(Config(), live=LiveOptions(autostart=False), state=state(base, q8))
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: "PPL" in text(app, "#profiler"), 5, "perplexity line")
        line = text(app, "#profiler").splitlines()[2]  # under the setting's deltas
        assert line.startswith(f"PPL {q8['ppl']:.2f} ±") and " Δ+" in line


# -- the model picker -------------------------------------------------------------------


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """The default model and a sparse copy of its header (the same size on disk's terms, a
    readable GGUF): the copy has a cached perplexity, the default model none."""
    from anubis_tui.inference.models import default_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = default_model()
    a = tmp_path / "models" / "gemma-q4_k_m.gguf"
    b = tmp_path / "models" / "gemma-copy-q4_k_m.gguf"
    a.parent.mkdir()
    os.symlink(real, a)
    with open(real, "rb") as src, open(b, "wb") as dst:
        dst.write(src.read(16 << 20))
        dst.truncate(real.stat().st_size)  # sparse: the header is real, the rest holes
    sha = "12" * 32
    st = b.stat()
    memo = tmp_path / "cache" / "anubis" / "quality" / "sha256.json"
    memo.parent.mkdir(parents=True)
    memo.write_text(
        json.dumps(
            {str(b.resolve()): {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}}
        )
    )
    q = quality("f16", 0.0)
    q.update(
        model=b.name, model_sha256=sha, text_sha256=sha256_text(eval_text()), ppl=41.5, ppl_se=2.25
    )
    store(b, Setting(kv_type="f16"), Perplexity.from_plain(q))
    return a, b


async def test_the_model_picker_shows_size_quantization_and_cached_perplexity(two_models):
    from anubis_tui.ui.screens import ModelPicker

    a, b = two_models
    mib = f"{a.stat().st_size / 2**20:.0f} MiB"
    app = make_app(Config(), live=LiveOptions(autostart=False))
    async with app.run_test(size=(140, 32)) as pilot:
        app.push_screen(ModelPicker([a, b], str(a)))
        await pilot.pause(0.2)
        listing = app.screen.query_one("#models")
        shown = [str(listing.get_option_at_index(i).prompt) for i in range(2)]
    assert shown[0].startswith(f"{a.name}  {mib}  Q4_K_M  PPL not yet (running)")
    assert shown[1].startswith(f"{b.name}  {mib}  Q4_K_M  PPL 41.50 ± 2.25")
