"""One typed check for every knob value, from every input (agent, plan, sweep --knob, keys).

`check_knob_value` is the check; `parse_knob_value` (plans, ``sweep --knob``)
and `Session.set_knob` (the agent, the app) go through it, so ``inf``,
``1e308``, ``True`` and strings are a refusal with the reason, never an
OverflowError, and a model path that is a FIFO is refused without blocking.
"""

from __future__ import annotations

import math
import os
import subprocess

import pytest

from anubis_tui.config import Config
from anubis_tui.records import Event
from anubis_tui.session import Session
from anubis_tui.session.knobs import KNOBS, KnobValueError, check_knob_value, parse_knob_value
from anubis_tui.session.plan import parse_plan
from tests.conftest import ANUBIS, cli_env, errors

INF, NAN = float("inf"), float("nan")

REFUSED = [
    ("cpu_max_mhz", INF, "finite"),
    ("cpu_max_mhz", -INF, "finite"),
    ("n_batch", INF, "finite"),
    ("threads", 1e308, "up to 4096"),
    ("threads", 10**400, "up to 4096"),
    ("threads", True, "needs a number"),
    ("threads", "4", "needs a number"),
    ("threads", None, "needs a number"),
    ("threads", [4], "needs a number"),
    ("threads", 0, "positive"),
    ("threads", 2.5, "whole number"),
    ("gpu_layers", -2, "within -1 to 100000"),
    ("power_limit_w", NAN, "finite"),
    ("power_limit_w", 0.5, "positive"),
    ("power_limit_w", "300", "needs a number"),
    ("nvpmodel", False, "needs a number"),
    ("nvpmodel", -1, "within 0 to 1000"),
    ("flash_attn", 1, "on or off"),
    ("flash_attn", "on", "on or off"),
    ("kv_type", "q2", "one of f16, q8_0, q4_0"),
    ("kv_type", 0, "one of"),
    ("model", 5, "needs a path"),
    ("model", "", "needs a path"),
    ("model", "a\0b", "not a usable path"),
    ("model", "/nonexistent/m.gguf", "No such file"),
    ("model", "/dev/zero", "not a regular file"),
    ("nope", 1, "unknown knob"),
]


@pytest.mark.parametrize(("name", "value", "why"), REFUSED)
def test_refused_with_the_reason(name, value, why):
    with pytest.raises(KnobValueError, match=why) as e:
        check_knob_value(name, value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_accepted_values_are_normalised(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert check_knob_value("threads", 4.0) == 4 and type(check_knob_value("threads", 4.0)) is int
    assert check_knob_value("power_limit_w", 300) == 300.0
    assert check_knob_value("gpu_layers", -1) == -1
    assert check_knob_value("flash_attn", False) is False
    assert check_knob_value("model", str(model)) == str(model)


def test_every_knob_has_a_type_and_every_number_a_finite_range():
    for k in KNOBS:
        assert k.kind in ("int", "float", "bool", "choice", "path")
        if k.kind in ("int", "float"):
            assert math.isfinite(k.lo) and math.isfinite(k.hi) and k.lo < k.hi


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("inf", "finite"),
        ("nan", "finite"),
        ("1e308", "up to"),
        ("1" * 5000, "finite"),
        ("x", "number"),
    ],
)
def test_text_goes_through_the_same_check(text, why):
    with pytest.raises(KnobValueError, match=why):
        parse_knob_value("threads", text)
    assert parse_knob_value("gpu_layers", "all") == -1
    assert parse_knob_value("flash_attn", "on") is True


@pytest.mark.parametrize("step", ["cpu_max_mhz=inf:5", "n_batch=inf:5", "threads=1e308:5"])
def test_plan_steps_are_refused_before_anything_runs(step):
    with pytest.raises(ValueError, match="plan step"):
        parse_plan(step)


def test_plan_model_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        parse_plan(f"model={fifo}:5")


def test_session_refuses_and_records_the_refusal_and_goes_on():
    """What the agent does with `knob cpu_max_mhz=inf`: a failed Outcome, a command Event."""
    seen: list[Event] = []
    session = Session(Config(), sources=[], sinks=[seen.append], device_knobs=False)
    for name, value in (
        ("cpu_max_mhz", INF),
        ("n_batch", INF),
        ("threads", 1e308),
        ("threads", "many"),
    ):
        out = session.set_knob(name, value)
        assert not out.ok
        assert name in out.message
    session.bus.flush()
    cmds = [e for e in seen if isinstance(e, Event) and e.kind == "command"]
    assert [c.payload["ok"] for c in cmds] == [False] * 4
    assert all(isinstance(c.payload["value"], str) for c in cmds)  # as text: always packs
    assert session.marker("still here").ok
    session.stop()


@pytest.mark.parametrize(
    "item", ["threads=1e308", "cpu_max_mhz=inf", "n_batch=1,inf", "model=FIFO"]
)
def test_sweep_knob_refuses_in_one_line(item, tmp_path):
    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    r = subprocess.run(
        [
            *ANUBIS,
            "sweep",
            "--knob",
            item.replace("FIFO", str(fifo)),
            "-o",
            str(tmp_path / "s.msgpack"),
        ],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    err = errors(r.stderr).strip()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1 and "--knob" in err


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"ANUBIS_THREADS": "5000"}, "up to 4096"),
        ({"ANUBIS_THREADS": "0"}, "positive"),
        ({"ANUBIS_GPU_LAYERS": "-2"}, "within -1 to 100000"),
    ],
)
def test_config_and_env_knobs_go_through_the_knob_check(env, why):
    from pathlib import Path

    from anubis_tui.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=why):
        load_config(Path("/nonexistent/anubis.toml"), env)
    assert load_config(Path("/nonexistent/anubis.toml"), {"ANUBIS_THREADS": "4"}).threads == 4


@pytest.mark.parametrize(
    "flag", [["--threads", "1e308"], ["--threads", "True"], ["--gpu-layers", "inf"]]
)
def test_flags_go_through_the_knob_check(flag, tmp_path):
    r = subprocess.run(
        [
            *ANUBIS,
            "record",
            "--no-model",
            "--duration",
            "1",
            *flag,
            "-o",
            str(tmp_path / "r.msgpack"),
        ],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    err = errors(r.stderr).strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and flag[0] in err, r.stderr
    assert not (tmp_path / "r.msgpack").exists()
