"""Perplexity and quantized variants on the real default model and llama.cpp (issue 26)."""

from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anubis_tui.inference import quality
from anubis_tui.inference.models import default_model, read_gguf
from anubis_tui.inference.variants import VariantError, quantize, variant_label

pytestmark = pytest.mark.slow

N_CTX = 512
THREADS = os.cpu_count() or 1
_KEEP: list[object] = []


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private quality cache (the model cache stays the user's: the default model is there)."""
    model = default_model()  # assembled into the real cache before XDG_CACHE_HOME moves
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("anubis_tui.inference.models.cache_dir", lambda: model.parent)
    return tmp_path / "cache"


def independent_ppl(model: Path, text: str, n_ctx: int) -> float:
    """llama-perplexity's computation written again from llama.h: every logit of each chunk
    is asked for, the log-softmax is numpy's max-shifted float64 sum, and nothing of
    anubis_tui.inference is used."""
    import llama_cpp as ll

    @ll.llama_log_callback
    def quiet(level: int, text: bytes, user_data: object) -> None:
        pass

    _KEEP.append(quiet)  # the callback must outlive every llama object
    ll.llama_log_set(quiet, ctypes.c_void_p(0))
    ll.llama_backend_init()
    mp = ll.llama_model_default_params()
    mp.use_extra_bufts = False  # as the worker does on this machine's AMX CPUs
    m = ll.llama_model_load_from_file(str(model).encode(), mp)
    assert m
    cp = ll.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_ctx
    cp.n_ubatch = n_ctx
    cp.n_threads = cp.n_threads_batch = THREADS
    cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the worker's default
    cp.type_k = ll.GGML_TYPE_F16
    cp.type_v = ll.GGML_TYPE_F16
    ctx = ll.llama_init_from_model(m, cp)
    assert ctx
    vocab = ll.llama_model_get_vocab(m)
    raw = text.encode()
    buf = (ll.llama_token * (len(raw) + 16))()
    n = ll.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
    assert n > 2 * n_ctx
    toks = list(buf[:n])
    n_vocab = ll.llama_vocab_n_tokens(vocab)
    bos = ll.llama_vocab_bos(vocab)
    add_bos = ll.llama_vocab_get_add_bos(vocab)
    batch = ll.llama_batch_init(n_ctx, 0, 1)
    nll: list[float] = []
    first = n_ctx // 2
    for c in range(n // n_ctx):
        chunk = toks[c * n_ctx : (c + 1) * n_ctx]
        if add_bos:
            chunk[0] = bos
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
        batch.n_tokens = n_ctx
        for i, t in enumerate(chunk):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        assert ll.llama_decode(ctx, batch) == 0
        for i in range(first, n_ctx - 1):
            row = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, i), (n_vocab,))
            x = row.astype(np.float64)
            mx = x.max()
            nll.append(float(mx + math.log(np.exp(x - mx).sum()) - x[chunk[i + 1]]))
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(m)
    return math.exp(sum(nll) / len(nll))


def test_default_model_perplexity_matches_an_independent_computation(cache: Path) -> None:
    model = default_model()
    got = quality.run_child(model, quality.Setting(kv_type="f16", n_ctx=N_CTX, threads=THREADS))
    want = independent_ppl(model, quality.eval_text(), N_CTX)
    assert got.chunks == len(got.nll) // (N_CTX // 2 - 1) and got.chunks >= 8
    assert abs(got.ppl / want - 1) < 0.005, (got.ppl, want)
    assert 0 < got.ppl_se < got.ppl and got.ci95[0] < got.ppl < got.ci95[1]
    assert got.model_sha256 == read_gguf_sha(model)
    assert not got.cached and got.variant == ""
    again = quality.run_child(model, quality.Setting(kv_type="f16", n_ctx=N_CTX, threads=THREADS))
    assert again.cached and again.ppl == got.ppl  # the second time is a cache read
    files = list((cache / "anubis" / "quality").glob("*.json"))
    assert any(f.name.startswith(got.model_sha256[:16]) for f in files)


def read_gguf_sha(model: Path) -> str:
    import hashlib

    return hashlib.sha256(model.read_bytes()).hexdigest()


def test_kv_q8_0_has_its_own_cached_figure(cache: Path) -> None:
    model = default_model()

    def ppl(kv: str, fa: bool) -> quality.Perplexity:
        s = quality.Setting(kv_type=kv, flash_attn=fa, max_chunks=2, threads=THREADS)
        return quality.run_child(model, s)

    with pytest.raises(quality.QualityError, match="needs flash attention"):
        ppl("q8_0", False)  # llama.cpp makes no context for it: said before loading
    f16, q8 = ppl("f16", True), ppl("q8_0", True)
    assert q8.kv_type == "q8_0" and not q8.cached and q8.tokens == f16.tokens
    r = quality.paired_ratio(q8, f16)
    assert r is not None and r[1] <= r[0] <= r[2]
    assert abs(r[0] - 1) < 0.05  # an 8-bit cache barely moves a 270M model's perplexity


def test_quantize_requantized_variant_is_labelled_and_cached(cache: Path, tmp_path: Path) -> None:
    src = default_model()
    out = tmp_path / "models"
    v = quantize(src, "q8_0", out)
    assert v.path.name == "gemma-3-270m-q4_k_m-to-q8_0.gguf"
    assert v.requantized and v.label == "requantized from Q4_K_M"
    assert variant_label(v.path) == "requantized from Q4_K_M"
    assert read_gguf(v.path).quantization == "Q8_0"
    assert sorted(p.name for p in out.iterdir()) == [v.path.name, v.path.name + ".anubis.json"]
    with pytest.raises(VariantError, match="exists"):
        quantize(src, "q8_0", out)
    r = quality.run_child(v.path, quality.Setting(max_chunks=2, threads=THREADS))
    assert r.variant == "requantized from Q4_K_M" and r.quantization == "Q8_0"
    listed = run_cli("models", "list", "--models-dir", str(out))
    assert listed.returncode == 0
    assert "requantized from Q4_K_M" in listed.stdout and "PPL" in listed.stdout


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anubis_tui", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def test_a_type_llama_cpp_refuses_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "models"
    r = run_cli(
        "models", "quantize", str(default_model()), "--types", "iq2_xxs", "--out-dir", str(out)
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("anubis: ") and "Traceback" not in r.stderr
    assert "importance matrix" in lines[-1] or "failed to quantize" in lines[-1]
    assert list(out.iterdir()) == []


def test_a_corrupt_gguf_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    head = default_model().read_bytes()[: 1 << 20]  # a real header, the tensor data cut off
    bad.write_bytes(head)
    out = tmp_path / "models"
    r = run_cli("models", "quantize", str(bad), "--types", "q4_0", "--out-dir", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "truncated" in r.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(tiny)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        r = run_cli(
            "models", "quantize", str(default_model()), "--types", "q8_0", "--out-dir", str(tiny)
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("anubis: ") and "disk full" in last
        assert list(tiny.iterdir()) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_quantize_sweep_report_with_two_variants(cache: Path, tmp_path: Path) -> None:
    """quantize → sweep --quality → report on this VM: two variants, their figures, the pick."""
    out = tmp_path / "models"
    made = run_cli(
        "models", "quantize", str(default_model()), "--types", "q4_0", "--out-dir", str(out)
    )
    assert made.returncode == 0, made.stderr
    variant = out / "gemma-3-270m-q4_k_m-to-q4_0.gguf"
    rec = tmp_path / "s.msgpack"
    env = dict(os.environ)
    r = run_cli(
        "sweep", "--model", str(default_model()),
        "--knob", f"model={default_model()},{variant}", "--quality",
        "--segment-s", "6", "--repeats", "1", "--warmup-s", "1", "--cooldown-s", "0",
        "--threads", "1", "--max-tokens", "64", "-o", str(rec), env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    table = r.stdout[r.stdout.find("quality    (perplexity") :]
    assert table, r.stdout[-3000:]
    # the perplexity lines, before the session, always name the variant for what it is
    assert f"quality: {variant.name} (requantized from Q4_K_M) kv f16: PPL" in r.stderr
    row = [ln for ln in table.splitlines() if "to-q4_0" in ln]
    # A loaded 2-core VM can leave the variant's one short segment without figures (then
    # the settings table has no row for it); where it has one, the label is on it.
    assert all("requantized from Q4_K_M" in ln for ln in row), table
    assert "least energy within +5 % perplexity" in r.stdout or "no setting is known" in r.stdout
    from anubis_tui.recording.reader import load

    events = [e for e in load(str(rec)).events if e.kind == "quality"]
    assert {e.payload["model"] for e in events} == {default_model().name, variant.name}
    json.dumps([e.payload for e in events])  # plain types only
    # report --plot draws the front; the result rows carry each setting's perplexity
    png, rows_out = tmp_path / "front.png", tmp_path / "rows.jsonl"
    rep = run_cli("report", str(rec), "--plot", str(png), "--rows", str(rows_out), env=env)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["setting"]["name"]: r for r in map(json.loads, rows_out.read_text().splitlines())}
    by_model = {e.payload["model"]: e.payload for e in events}
    base = rows["baseline"]
    assert base["figures"]["perplexity"]["value"] == by_model[default_model().name]["ppl"]
    assert base["quality"]["variant"] == ""
    # (the variant's row, where the loaded VM left its short segment one, as the table above)
    for r in (r for name, r in rows.items() if "to-q4_0" in name):
        assert r["quality"]["variant"] == "requantized from Q4_K_M"
        assert r["figures"]["perplexity"]["se"] == by_model[variant.name]["ppl_se"]
