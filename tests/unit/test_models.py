"""GGUF facts and refusals, read without loading the model (moved from test_worker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anubis_tui.inference.models import ModelError, default_model, read_gguf, resolve_model


def test_bad_model_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_gguf(junk)
    whole = Path(default_model()).read_bytes()
    for cut in (30, 5000, len(whole) // 2):
        t = tmp_path / f"cut{cut}.gguf"
        t.write_bytes(whole[:cut])
        with pytest.raises(ModelError, match="truncated"):
            read_gguf(t)


def test_default_model_facts():
    f = read_gguf(default_model())
    assert f.architecture == "gemma3" and f.quantization == "Q4_K_M"
    assert 260e6 < f.parameters < 280e6 and f.layers == 18 and f.context_length == 32768
