"""Each knob object (session/knobs.py): its range, its step, how it applies and why it refuses.

Inference knobs read a real `Spec`; device knobs read real `Control`s (the
fake NVML for the power limit, as in test_device.py); the model knob reads
real GGUF headers written here. No session, no worker.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from anubis_tui.device import DeviceSettings
from anubis_tui.device.controls import Control, discover_power_limit
from anubis_tui.inference.worker import Spec
from anubis_tui.knobspec import KNOBS, KnobValueError
from anubis_tui.session.knobs import (
    DEVICE,
    KNOB_CLASSES,
    LIVE,
    RELOAD,
    InferenceKnob,
    KnobContext,
    KnobRefused,
    knob_table,
)
from tests.conftest import FAKE_NVML

SPEC = Spec(model="/m/a.gguf", t0_ns=0, threads=4, gpu_layers=0, n_batch=512)
TABLE = knob_table()


def ctx(**kw) -> KnobContext:
    return KnobContext(spec=kw.pop("spec", SPEC), cpu_count=kw.pop("cpu_count", 8), **kw)


def test_one_object_per_knob_in_the_table_order():
    assert list(TABLE) == [k.name for k in KNOBS]
    assert {c.name for c in KNOB_CLASSES} == {k.name for k in KNOBS}
    for k in TABLE.values():
        assert k.keys == k.define.keys and k.label
        assert k.applies in (LIVE, RELOAD, DEVICE) and k.step
    applies = {n: k.applies for n, k in TABLE.items()}
    assert applies == {
        "threads": LIVE,
        "gpu_layers": RELOAD,
        "n_batch": RELOAD,
        "flash_attn": RELOAD,
        "kv_type": RELOAD,
        "model": RELOAD,
        "power_limit_w": DEVICE,
        "cpu_max_mhz": DEVICE,
        "nvpmodel": DEVICE,
    }


def test_ranges_and_the_one_validator():
    assert TABLE["threads"].range == (1, 4096)
    assert TABLE["gpu_layers"].range == (-1, 100_000)
    assert TABLE["n_batch"].range == (1, 1 << 16)
    assert TABLE["kv_type"].range == ("f16", "q8_0", "q4_0")
    assert TABLE["flash_attn"].range == ()
    assert TABLE["power_limit_w"].range == (1, 5000)
    assert TABLE["cpu_max_mhz"].range == (1, 100_000)
    assert TABLE["nvpmodel"].range == (0, 1000)
    assert TABLE["threads"].check(4.0) == 4 and TABLE["power_limit_w"].check(300) == 300.0
    for name, bad in [
        ("threads", 0),
        ("threads", True),
        ("n_batch", float("inf")),
        ("kv_type", "q5_1"),
        ("flash_attn", 1),
        ("nvpmodel", 1.5),
        ("model", "/nonexistent/x.gguf"),
    ]:
        with pytest.raises(KnobValueError) as e:
            TABLE[name].check(bad)
        assert "\n" not in str(e.value) and name in str(e.value)


def test_threads_step_by_one_within_the_cpus():
    k = TABLE["threads"]
    assert k.read(ctx()) == (4, "")
    assert k.next(4, 1, ctx()) == 5 and k.next(4, -1, ctx()) == 3
    assert k.next(8, 1, ctx()) == 8  # the CPU count is the top
    assert k.next(1, -1, ctx()) == 1
    assert k.next(None, 1, ctx()) == 2  # llama.cpp's default (None) counts as one
    assert k.live_extra(3) == {"threads_batch": 3}

    class Worker:
        def __init__(self, ok: bool) -> None:
            self.ok, self.sent = ok, []

        def set_threads(self, n: int) -> bool:
            self.sent.append(n)
            return self.ok

    w = Worker(True)
    assert k.apply_live(w, 3) and w.sent == [3]
    assert not k.apply_live(Worker(False), 3)


def test_gpu_layers_step_through_quarters_and_refuse_a_cpu_only_build():
    k = TABLE["gpu_layers"]
    c = ctx(model_layers=18)
    assert [k.next(v, 1, c) for v in (0, 4, 9, 13, -1)] == [4, 9, 13, -1, -1]
    assert k.next(0, -1, c) == 0  # no wrap at the ends
    assert k.next(0, 1, ctx()) == -1  # layers unknown: none or all
    assert k.read(ctx(gpu_offload=False)) == (0, "CPU-only build")
    with pytest.raises(KnobRefused, match="cannot offload"):
        k.change(9, ctx(gpu_offload=False))
    assert k.change(9, ctx(gpu_offload=True)) == {"gpu_layers": 9}


def test_n_batch_wraps_and_sets_the_ubatch_too():
    k = TABLE["n_batch"]
    assert k.next(512, 1, ctx()) == 1024 and k.next(2048, 1, ctx()) == 64
    assert k.next(64, -1, ctx()) == 2048
    assert k.next(300, 1, ctx()) == 512  # off the ladder: from the nearest
    assert k.change(2048, ctx()) == {"n_batch": 2048, "n_ubatch": 512}
    assert k.change(128, ctx()) == {"n_batch": 128, "n_ubatch": 128}


def test_flash_attn_and_kv_type_refuse_what_the_other_forbids():
    fa, kv = TABLE["flash_attn"], TABLE["kv_type"]
    assert fa.next(False, 1, ctx()) is True and fa.next(True, -1, ctx()) is False
    assert [kv.next(v, -1, ctx()) for v in ("f16", "q8_0", "q4_0")] == ["q8_0", "q4_0", "f16"]
    with pytest.raises(KnobRefused, match="needs flash attention: press f first"):
        kv.change("q8_0", ctx())
    on = dataclasses.replace(SPEC, flash_attn=True, kv_type="q8_0")
    assert kv.change("q4_0", ctx(spec=on)) == {"kv_type": "q4_0"}
    with pytest.raises(KnobRefused, match="the KV cache is q8_0: it needs flash attention"):
        fa.change(False, ctx(spec=on))
    assert fa.change(True, ctx()) == {"flash_attn": True}


GGUF_HEAD = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
ARCH = struct.pack("<Q", 20) + b"general.architecture" + struct.pack("<I", 8)
ARCH += struct.pack("<Q", 5) + b"llama"


def test_model_cycles_the_files_and_refuses_a_bad_one(tmp_path: Path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for p in (a, b):
        p.write_bytes(GGUF_HEAD + ARCH + b"\0" * 64)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf" * 10)
    k = TABLE["model"]
    spec = dataclasses.replace(SPEC, model=str(a))
    two = ctx(spec=spec, model_choices=lambda: [a, b])
    assert k.read(two) == (str(a), "")
    assert k.next(str(a), 1, two) == str(b) and k.next(str(b), 1, two) == str(a)
    assert k.read(ctx(spec=spec, model_choices=lambda: [a])) == (str(a), "1 GGUF file")
    assert k.change(str(b), two) == {"model": str(b)}
    with pytest.raises(KnobRefused) as e:
        k.change(str(bad), two)
    assert str(e.value).startswith("model: ") and "\n" not in str(e.value)


def test_one_gguf_file_blocks_the_key_but_not_a_file_named_outright(tmp_path: Path):
    """`o` has nothing to step to with one file in the cache, but `--knob model=PATH` in a
    sweep (a variant made by `models quantize` outside the cache) must still be set: the
    H200 quality sweep measured its "variants" as the baseline when this refused."""
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for p in (a, b):
        p.write_bytes(GGUF_HEAD + ARCH + b"\0" * 64)
    k = TABLE["model"]
    one = ctx(spec=dataclasses.replace(SPEC, model=str(a)), model_choices=lambda: [a])
    assert k.read(one)[1] == "1 GGUF file"
    assert k.refusal(str(b), one) == ""
    assert k.refusal(str(b), KnobContext(spec=None)) == "no model"
    assert k.refusal(str(b), ctx(attached=True)) == "set by the server"
    assert TABLE["threads"].refusal(2, ctx(attached=True)) == "set by the server"


@pytest.mark.parametrize("name", [k.name for k in KNOBS if k.group == "inference"])
def test_inference_knobs_refuse_without_a_model_or_on_an_attached_server(name):
    k = TABLE[name]
    assert isinstance(k, InferenceKnob)
    assert k.read(KnobContext(spec=None)) == (None, "no model")
    served = k.read(ctx(attached=True, attached_model="served-model"))
    assert served == ("served-model" if name == "model" else None, "set by the server")


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(FAKE_NVML))
    monkeypatch.setenv("ANUBIS_FAKE_NVML", "capped")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "1")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_STATE", str(tmp_path / "limit_mw"))


def test_device_knobs_step_the_controls_ladder_and_say_why_not(gpu, monkeypatch):
    ctl = discover_power_limit()
    assert ctl is not None
    cpu = Control(knob="cpu_max_mhz", target="cpu", unit="MHz", reason="no cpufreq")
    jetson = Control(knob="nvpmodel", target="jetson", unit="", reason="not Jetson")
    c = ctx(device=DeviceSettings([ctl, cpu, jetson]))
    power = TABLE["power_limit_w"]
    assert power.read(c) == (700.0, "")
    assert power.next(700.0, -1, c) == 650.0 and power.next(200.0, -1, c) == 200.0
    assert TABLE["cpu_max_mhz"].read(c)[1] == "no cpufreq"
    assert TABLE["nvpmodel"].read(c)[1] == "not Jetson"
    for name in ("power_limit_w", "cpu_max_mhz", "nvpmodel"):
        assert TABLE[name].read(ctx())[1] == "device knobs are off"
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "0")
    locked = discover_power_limit()
    assert locked is not None
    assert power.read(ctx(device=DeviceSettings([locked])))[1] == "needs root"
