"""A recording's identity: what compare checks before it compares, degrading on old files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from anubis_tui.analysis.identity import (
    UNKNOWN,
    backends,
    cpu_model,
    differences,
    flat,
    identity,
    model_sha256,
    prompts_sha256,
    unchecked,
)
from anubis_tui.recording.format import make_header
from anubis_tui.recording.reader import load
from anubis_tui.records import Channel, Event, Sample, Tokens

REC = Path(__file__).resolve().parents[2] / "recordings"
CPU = "CPU : SSE3 = 1 | AVX2 = 1 | OPENMP = 1 |"
CUDA = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 |"
LIMIT = Channel(
    id="gpu0.power_limit",
    label="GPU 0 power limit",
    source="nvml",
    kind="power",
    unit="W",
    scope="gpu",
    method="instant",
    update_period_s=1.0,
    meta={"device": "NVIDIA H200"},
)


def knobs_event(t: int, **values: object) -> Event:
    base = {"threads": 2, "gpu_layers": 0, "n_batch": 512, "flash_attn": False, "kv_type": "f16"}
    return Event(t, "knobs", {"values": {**base, **values}, "state": {}})


def run(*events: Event, channels: list[Channel] | None = None, sysinfo: str = CPU) -> list:
    h = make_header(channels or [], 0, {"name": "m", "sha256": "ab" * 32}, {"max_tokens": 128})
    h.config["prompts_sha256"] = prompts_sha256(["a", "b"])
    loaded = Event(5, "model_loaded", {"threads": 2, "gpu_layers": 0, "system_info": sysinfo})
    return [h, *events, loaded, Tokens(10, 1, "decode", 0, 9)]


def test_the_vm_and_h200_recordings_differ_in_hardware_runtime_setting_and_measurement():
    a = load(REC / "vm-2core-cpu-gemma270m.msgpack")
    b = load(REC / "h200-cuda-gemma270m-knobs.msgpack")
    ia, ib = identity(a.header, a.records), identity(b.header, b.records)
    diffs = differences(ia, ib)
    fields = [d.split(":")[0] for d in diffs]
    for f in ("hardware.cpus", "hardware.gpus", "runtime.backends", "setting.flash_attn"):
        assert f in fields, diffs
    assert any(f.startswith("measurement.") for f in fields)
    assert "hardware.gpus: none (A) vs NVIDIA H200 (B)" in diffs
    # written before the Header carried them: unknown, named, never a crash or a difference
    assert ia["hardware"]["cpu_model"] == UNKNOWN
    assert "model.sha256 (A/B)" in unchecked(ia, ib)
    assert not any(d.startswith("model.sha256") for d in diffs)


def test_two_recordings_of_one_machine_and_setting_have_no_differences():
    a = load(REC / "h200-cuda-gemma270m-pyspy.msgpack")
    b = load(REC / "h200-cuda-gemma270m-pyspy-powercap.msgpack")
    assert differences(identity(a.header, a.records), identity(b.header, b.records)) == []


def test_flash_attention_on_against_off_is_a_difference_unless_allowed():
    on = identity(run(knobs_event(1, flash_attn=True))[0], run(knobs_event(1, flash_attn=True)))
    off = identity(run(knobs_event(1))[0], run(knobs_event(1)))
    assert differences(off, on) == ["setting.flash_attn: False (A) vs True (B)"]
    assert differences(off, on, allow=["setting.flash_attn"]) == []
    assert differences(off, on, allow=["setting"]) == []
    assert differences(off, on, allow=["runtime"]) != []


def test_knobs_found_after_the_start_belong_to_it_and_a_knob_change_ends_the_start():
    recs = run(
        knobs_event(1, power_limit_w=None),
        knobs_event(2, power_limit_w=700.0),
        Event(3, "knob", {"name": "threads", "value": 1}),
        knobs_event(4, threads=1, power_limit_w=200.0),
    )
    ident = identity(recs[0], recs)
    assert ident["hardware"]["power_limit_w"] == 700.0
    assert ident["setting"]["threads"] == 2


def test_power_limit_from_the_first_sample_when_no_knobs_event_has_it():
    recs = run(Sample(1, [300.0]), Sample(2, [250.0]), channels=[LIMIT], sysinfo=CUDA)
    ident = identity(recs[0], recs)
    assert ident["hardware"]["power_limit_w"] == 300.0
    assert ident["hardware"]["gpus"] == ["NVIDIA H200"]
    assert ident["runtime"]["backends"] == ["CUDA", "CPU"]


def test_header_alone_uses_the_knobs_it_was_opened_with_and_says_unknown_for_the_rest():
    h = make_header([], 0, {}, {"knobs": {"threads": 4, "flash_attn": True}})
    ident = identity(h)
    assert ident["setting"]["threads"] == 4
    assert ident["setting"]["flash_attn"] is True
    assert ident["runtime"]["backends"] == UNKNOWN
    assert ident["model"]["sha256"] == UNKNOWN
    assert set(flat(ident)) == set(flat(identity(h, [h])))


def test_cpu_model_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC  9654 96-Core Processor\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 62.50\n\nModel\t: NVIDIA Jetson AGX Orin\n")
    assert cpu_model(x86) == "AMD EPYC 9654 96-Core Processor"
    assert cpu_model(arm) == "NVIDIA Jetson AGX Orin"
    assert cpu_model(tmp_path / "missing") == UNKNOWN
    (tmp_path / "empty").write_text("")
    assert cpu_model(tmp_path / "empty") == UNKNOWN


def test_backends_from_llama_system_info():
    assert backends(CUDA) == ["CUDA", "CPU"]
    assert backends(CPU) == ["CPU"]
    assert backends("") == []


def test_model_sha256_is_hashed_once_and_rehashed_when_the_file_changes(tmp_path):
    m = tmp_path / "m.gguf"
    m.write_bytes(b"GGUF" + b"x" * 5000)
    cache = tmp_path / "cache"
    assert model_sha256(str(m), cache) == hashlib.sha256(m.read_bytes()).hexdigest()
    assert len(list((cache / "sha256").iterdir())) == 1
    m.write_bytes(b"GGUF" + b"y" * 6000)
    assert model_sha256(str(m), cache) == hashlib.sha256(m.read_bytes()).hexdigest()
    assert model_sha256(str(tmp_path / "nope.gguf"), cache) == UNKNOWN
    big = tmp_path / "big.gguf"
    big.write_bytes(b"z" * 100)
    assert model_sha256(str(big), cache, hash_limit=10) == UNKNOWN


def test_a_read_only_cache_still_gives_the_hash(tmp_path):
    m = tmp_path / "m.gguf"
    m.write_bytes(b"GGUF1234")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        assert model_sha256(str(m), ro / "c") == hashlib.sha256(b"GGUF1234").hexdigest()
    finally:
        os.chmod(ro, 0o700)
