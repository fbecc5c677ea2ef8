"""Hostile GGUF metadata (../shared/cases/reliability/gguf/ and the kind they stand for).

`read_gguf` types and bounds the metadata anubis uses: a string alignment, a
NaN, an infinite block count or a context length "lots" is a one-line
ModelError; the CLI exits 2 with that line; the model knob (the app's `o`
picker) refuses it and the session goes on; a FIFO is refused without
blocking. The app stops its session (device settings back) however it ends.
"""

from __future__ import annotations

import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from anubis_tui.config import Config
from anubis_tui.inference.models import ModelError, read_gguf
from anubis_tui.inference.worker import Spec
from anubis_tui.session import Session
from tests.conftest import ANUBIS, FIXTURES, cli_env, errors

CASES = FIXTURES / "reliability" / "gguf"  # copies of ../shared/cases/reliability/gguf

U32, F32, BOOL, STR, ARR, U64, F64 = 4, 6, 7, 8, 9, 10, 12


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(vtype: int, v: Any) -> bytes:
    if vtype == STR:
        return s(v)
    if vtype == ARR:
        return struct.pack("<IQ", U32, len(v)) + b"".join(struct.pack("<I", x) for x in v)
    fmt = {U32: "<I", F32: "<f", BOOL: "<?", U64: "<Q", F64: "<d"}[vtype]
    return struct.pack(fmt, v)


def gguf(path: Path, kv: list[tuple[str, int, Any]]) -> Path:
    """A GGUF v3 file with no tensors and the metadata `kv` (key, type, value)."""
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, vtype, v in kv:
        body += s(key) + struct.pack("<I", vtype) + value(vtype, v)
    path.write_bytes(body + b"\0" * 64)
    return path


ARCH = ("general.architecture", STR, "llama")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("align-str.gguf", "general.alignment is 'abc', not an integer"),
        ("ctx-str.gguf", "llama.context_length is 'lots', not an integer"),
    ],
)
def test_the_cases_are_one_line_model_errors(name, why):
    with pytest.raises(ModelError) as e:
        read_gguf(CASES / name)
    assert why in str(e.value) and "\n" not in str(e.value)


KINDS = [
    ([("general.alignment", STR, "abc")], "general.alignment is 'abc'"),
    ([("general.alignment", F32, float("nan"))], "general.alignment is nan"),
    ([("general.alignment", F64, 32.0)], "general.alignment is 32.0"),
    ([("general.alignment", U32, 0)], "general.alignment = 0 is outside"),
    ([("general.alignment", U32, 24)], "not a power of 2"),
    ([("general.alignment", BOOL, True)], "general.alignment is True"),
    ([ARCH, ("llama.block_count", F64, float("inf"))], "llama.block_count is inf"),
    ([ARCH, ("llama.block_count", U64, 1 << 63)], "llama.block_count = 9223372036854775808"),
    ([ARCH, ("llama.context_length", STR, "lots")], "llama.context_length is 'lots'"),
    ([ARCH, ("llama.context_length", F32, float("-inf"))], "llama.context_length is -inf"),
    ([ARCH, ("llama.embedding_length", ARR, [1, 2])], "llama.embedding_length is None"),
    ([("general.architecture", U32, 7)], "general.architecture is 7, not a string"),
    ([("general.name", F64, 1.5)], "general.name is 1.5, not a string"),
    ([("general.file_type", STR, "Q4")], "general.file_type is 'Q4'"),
]


@pytest.mark.parametrize(("kv", "why"), KINDS)
def test_metadata_of_the_wrong_type_or_range_is_a_model_error(tmp_path, kv, why):
    with pytest.raises(ModelError) as e:
        read_gguf(gguf(tmp_path / "m.gguf", kv))
    assert why in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_sane_metadata_still_reads(tmp_path):
    facts = read_gguf(
        gguf(
            tmp_path / "ok.gguf",
            [
                ARCH,
                ("general.alignment", U32, 64),
                ("general.name", STR, "x" * 1000),
                ("llama.context_length", U32, 8192),
                ("llama.block_count", U64, 16),
                ("general.file_type", U32, 15),
            ],
        )
    )
    assert (facts.architecture, facts.context_length, facts.layers) == ("llama", 8192, 16)
    assert facts.quantization == "Q4_K_M" and len(facts.name) == 256


def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_gguf(fifo)
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_gguf blocked on a FIFO"
    assert isinstance(result[0], ModelError) and "not a regular file" in str(result[0])
    with pytest.raises(ModelError, match="not a regular file"):
        read_gguf(Path("/dev/zero"))


@pytest.mark.parametrize("name", ["align-str.gguf", "ctx-str.gguf"])
def test_the_cli_says_one_line_and_exits_2(name, tmp_path):
    r = subprocess.run(
        [*ANUBIS, "record", "--model", str(CASES / name), "--duration", "5"],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    err = errors(r.stderr).strip()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1
    assert "not an integer" in err


def test_the_model_knob_refuses_them_and_the_session_goes_on(tmp_path):
    """The app's `o` picker calls set_knob("model", path): a refusal, never an exception."""
    good = gguf(tmp_path / "a.gguf", [ARCH])
    for case in CASES.glob("*.gguf"):
        (tmp_path / case.name).write_bytes(case.read_bytes())
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    session = Session(
        Config(),
        spec=Spec(model=str(good), t0_ns=0),
        sources=[],
        models_dirs=[tmp_path],
        device_knobs=False,
    )
    assert str(fifo) not in {str(p) for p in session.model_choices()}  # not offered
    for bad in (tmp_path / "align-str.gguf", tmp_path / "ctx-str.gguf", fifo):
        out = session.set_knob("model", str(bad))
        assert not out.ok and "model" in out.message and "\n" not in out.message
    assert session.spec is not None and session.spec.model == str(good)


def test_the_app_stops_its_session_on_every_exit_path(monkeypatch):
    """An exception out of the app's run still stops the session (device settings back)."""
    from textual.app import App

    from anubis_tui.ui.app import make_app

    app = make_app(Config())
    stopped: list[str] = []

    class FakeSession:
        record_path = None
        recorded: list[str] = []  # noqa: RUF012 - read only

        def stop(self, reason: str | None = None) -> None:
            stopped.append(reason or "")

    def boom(self: Any, *a: Any, **k: Any) -> None:
        self.session = FakeSession()
        raise RuntimeError("a handler failed")

    monkeypatch.setattr(App, "run", boom)
    with pytest.raises(RuntimeError):
        app.run()
    assert stopped == ["quit"]


def test_after_c_lowered_the_cpu_a_bad_model_is_refused_and_stop_puts_the_cpu_back(tmp_path, tree):
    """The issue's path: `c` lowers the CPU max, `o` picks a hostile GGUF; the session
    goes on, and its end puts scaling_max_freq back."""
    from anubis_tui.device import DeviceSettings
    from anubis_tui.device.controls import discover_cpu_max
    from anubis_tui.sources.base import SysfsRoot

    root = tree("intel_laptop")
    files = sorted(root.glob("sys/devices/system/cpu/cpufreq/policy*/scaling_max_freq"))
    good = gguf(tmp_path / "a.gguf", [ARCH])
    (tmp_path / "align-str.gguf").write_bytes((CASES / "align-str.gguf").read_bytes())
    session = Session(
        Config(), spec=Spec(model=str(good), t0_ns=0), sources=[], models_dirs=[tmp_path]
    )
    session.device = DeviceSettings([discover_cpu_max(SysfsRoot(root))])
    assert session.knob_step("cpu_max_mhz", -1).ok
    assert all(f.read_text().strip() == "4100000" for f in files)
    out = session.set_knob("model", str(tmp_path / "align-str.gguf"))
    assert not out.ok and "general.alignment" in out.message
    assert session.marker("still running").ok
    session.stop()
    assert all(f.read_text().strip() == "4600000" for f in files)
