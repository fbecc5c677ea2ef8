"""Knobs on a real session: real llama.cpp worker on the default model, fake NVML for the GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from anubis_tui.analysis.segments import SegmentFold
from anubis_tui.config import Config
from anubis_tui.inference.models import default_model, read_gguf
from anubis_tui.inference.worker import Spec
from anubis_tui.session import Session
from tests.conftest import FIXTURES, Seen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_quant(tmp_path_factory) -> Path:
    """A Q8_0 requantization of the default model, made by llama.cpp's own quantizer."""
    out = tmp_path_factory.mktemp("models") / "gemma-3-270m-q8_0.gguf"
    code = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0\n"
        "p.allow_requantize = True\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), "
        "ctypes.byref(p)))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(default_model()), str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    assert read_gguf(out).quantization == "Q8_0"
    return out


def session(tmp_path: Path, monkeypatch, **spec_kw) -> tuple[Session, Seen]:
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    model = default_model()
    spec = Spec(model=str(model), t0_ns=0, threads=2, max_tokens=48, **spec_kw)
    seen = Seen()
    s = Session(
        Config(), spec=spec, model=read_gguf(model), sinks=[seen], log_path=tmp_path / "w.log"
    )
    s.start()
    assert s.wait_loaded() is None
    return s, seen


def test_threads_change_live_and_a_reload_knob_keeps_its_load_out_of_the_figures(
    tmp_path, monkeypatch
):
    s, seen = session(tmp_path, monkeypatch)
    try:
        seen.wait(lambda: seen.tokens_after(0) > 60)
        out = s.knob_step("threads", -1)
        assert out.ok and out.message == "threads 2 → 1", out
        seen.wait(lambda: any(e.payload.get("n") == 1 for e in seen.events("threads")))
        assert not seen.events("worker_restart")  # live: no reload
        t_knob = seen.events("knob")[-1].t
        seen.wait(lambda: seen.tokens_after(t_knob) > 60)
        out = s.set_knob("n_batch", 128)
        assert out.ok and "reloaded in" in out.message, out
        seen.wait(lambda: len(seen.events("model_loaded")) == 2)
        assert len(seen.events("worker_restart")) == 1
        loaded = seen.events("model_loaded")[-1].payload
        assert loaded["n_batch"] == 128 and loaded["threads"] == 1  # threads kept across it
        t_reload = seen.events("knob")[-1].t
        seen.wait(lambda: seen.tokens_after(t_reload) > 100)
        # refused with the reason, nothing reloaded
        out = s.set_knob("kv_type", "q8_0")
        assert not out.ok and "flash attention" in out.message
        assert len(seen.events("worker_restart")) == 1
    finally:
        s.stop()
    knobs = [e.payload for e in seen.events("knob")]
    # threads sets both decode and batch threads (issue 21), and the knob says so
    assert knobs[0] == {"name": "threads", "value": 1, "previous": 2, "threads_batch": 1}
    assert knobs[1]["name"] == "n_batch" and knobs[1]["reload"] is True
    figs = SegmentFold().consume_all(seen.records).figures()
    assert [f.name for f in figs] == ["baseline", "threads=1", "threads=1 batch=128"]
    reload_seg = figs[2]
    assert reload_seg.load_s is not None and reload_seg.load_s > 0
    # the reload (stop, load, first prompt) is no part of the active decode time
    assert reload_seg.active_s < reload_seg.end_s - reload_seg.start_s - reload_seg.load_s
    cmds = [e.payload for e in seen.events("command") if e.payload["cmd"] == "knob"]
    assert [c["ok"] for c in cmds] == [True, True, False]


def test_model_knob_loads_a_second_quantization_and_a_failed_load_goes_back(
    tmp_path, monkeypatch, second_quant
):
    broken = second_quant.parent / "broken-arch.gguf"
    data = bytearray(default_model().read_bytes())
    head = bytes(data[:4096]).replace(b"gemma3", b"gemmaX")  # an architecture llama.cpp lacks
    data[:4096] = head
    broken.write_bytes(data)
    s, seen = session(tmp_path, monkeypatch)
    s.models_dirs.append(second_quant.parent)
    try:
        names = [p.name for p in s.model_choices()]
        assert "gemma-3-270m-q8_0.gguf" in names and "gemma-3-270m-q4_k_m.gguf" in names
        out = s.set_knob("model", str(second_quant))
        assert out.ok, out
        seen.wait(lambda: len(seen.events("model_loaded")) == 2)
        assert seen.events("model_loaded")[-1].payload["model"] == "gemma-3-270m-q8_0.gguf"
        t = seen.events("knob")[-1].t
        seen.wait(lambda: seen.tokens_after(t) > 60)
        out = s.set_knob("model", str(broken))
        assert not out.ok and "back to gemma-3-270m-q8_0" in out.message, out
        seen.wait(lambda: any(e.payload.get("reverted") for e in seen.events("knob")))
        assert s.spec is not None and s.spec.model == str(second_quant)
        t = seen.events("knob")[-1].t
        seen.wait(lambda: seen.tokens_after(t) > 20)  # inference runs again on the old model
        assert s.worker_alive() and s.worker_error is None
    finally:
        s.stop()
    reverted = seen.events("knob")[-1].payload
    assert reverted["reverted"] is True and reverted["value"] == str(second_quant)
