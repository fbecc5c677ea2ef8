"""End to end: the real `anubis` in tmux on the default model; keys sent, screen read back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event
from tests.conftest import cli_env

pytestmark = pytest.mark.slow


SOCKET = "anubis-e2e"  # a server of our own, started with the environment below


def tmux(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", SOCKET, *args], **kw)


def screen(name: str) -> str:
    return tmux("capture-pane", "-p", "-t", name, capture_output=True, text=True, check=True).stdout


def wait_screen(name: str, pred, timeout: float = 60.0) -> str:
    end = time.monotonic() + timeout
    s = ""
    while time.monotonic() < end:
        s = screen(name)
        if pred(s):
            return s
        time.sleep(0.3)
    raise AssertionError(f"screen never matched; last screen:\n{s}")


def quit_and_wait(name: str, timeout: float = 20.0) -> None:
    """Press q and wait for the app (and its tmux session) to end."""
    tmux("send-keys", "-t", name, "q", check=True)
    end = time.monotonic() + timeout
    while (
        time.monotonic() < end
        and tmux("has-session", "-t", name, capture_output=True).returncode == 0
    ):
        time.sleep(0.2)


def test_anubis_in_tmux(tmp_path: Path):
    assert shutil.which("tmux"), "tmux is installed by .ci/run"
    rec = tmp_path / "e2e.msgpack"
    name = f"anubis-e2e-{int(time.time())}"
    env = cli_env("empty_container")
    env["TERM"] = "xterm-256color"
    cmd = f"{sys.executable} -m anubis_tui run --threads 2 --record {rec}"
    tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd, env=env, check=True)
    try:
        s = wait_screen(
            name,
            lambda s: (
                "decode" in s
                and "tok/s" in s
                and not s.split("decode", 1)[1].lstrip().startswith("—")
            ),
        )
        assert "anubis LIVE" in s and "est." in s  # estimated power, labelled
        assert "rec e2e.msgpack" in s
        footer = s.rstrip("\n").splitlines()[-1]
        for shown in ("q Quit", "? Help", "space Pause", "r Rec", "p py-spy", "s scalene"):
            assert shown in footer, f"{shown!r} missing from the footer at 80 columns: {footer!r}"
        # the knobs strip: one line, its labels shortened at 80 columns ("thr" for threads)
        assert "knobs t/T thr 2" in s and "not here:" in s
        assert "°C    no sensor" in s  # no temperature sensor: said, not drawn as zero
        tmux("send-keys", "-t", name, "?", check=True)
        h = wait_screen(name, lambda s: "Inference" in s and "Sampling" in s, 10)
        assert "question_mark" not in h and "left_square_bracket" not in h
        assert "pause or resume inference" in h
        tmux("send-keys", "-t", name, "End", check=True)  # it scrolls: 80x24 holds a part
        h = wait_screen(name, lambda s: "closes this" in s, 10)
        tmux("send-keys", "-t", name, "Escape", check=True)
        # closed (the strip is whole again) before the next key: ESC then t at once is alt+t
        wait_screen(name, lambda s: "knobs t/T" in s, 10)
        tmux("send-keys", "-t", name, "t", check=True)
        wait_screen(name, lambda s: "t/T thr 1" in s and "threads=1," in s, 20)
        tmux("send-keys", "-t", name, "m", check=True)
        tmux("send-keys", "-t", name, "space", check=True)
        wait_screen(name, lambda s: "paused" in s, 30)
        quit_and_wait(name)
    finally:
        tmux("kill-server", capture_output=True)
    records, recovery = read_all(rec)
    kinds = [r.kind for r in records if isinstance(r, Event)]
    assert "marker" in kinds and "paused" in kinds
    knob = next(r for r in records if isinstance(r, Event) and r.kind == "knob")
    assert knob.payload == {"name": "threads", "value": 1, "previous": 2, "threads_batch": 1}
    # llama.cpp's prompt (batch) threads follow the knob, from the load on
    loaded = next(r for r in records if isinstance(r, Event) and r.kind == "model_loaded")
    assert loaded.payload["threads"] == loaded.payload["threads_batch"] == 2
    ev = next(r for r in records if isinstance(r, Event) and r.kind == "threads")
    assert ev.payload == {"n": 1, "threads_batch": 1}
    assert not recovery.truncated, recovery.reason  # q closed the recording with a footer


def test_profilers_found_beside_the_interpreter_when_the_venv_is_not_on_path(tmp_path: Path):
    """As pipx or `~/venv/bin/anubis` run it: the scripts directory is not on PATH."""
    import sysconfig

    scripts = sysconfig.get_path("scripts")
    anubis = Path(scripts) / "anubis"
    assert anubis.is_file(), f"the test installs anubis into {scripts}"
    path = "/usr/bin:/bin"
    assert shutil.which("py-spy", path=path) is None, "py-spy must not be on this PATH"
    rec = tmp_path / "nopath.msgpack"
    name = f"anubis-nopath-{int(time.time())}"
    env = cli_env("empty_container")
    env["TERM"] = "xterm-256color"
    env["PATH"] = path
    tmux(
        "new-session", "-d", "-s", name, "-x", "100", "-y", "30",
        f"{anubis} run --threads 2 --record {rec}", env=env, check=True,
    )  # fmt: skip
    try:
        wait_screen(name, lambda s: "tok/s" in s and " req" in s and " 0 req" not in s)
        tmux("send-keys", "-t", name, "p", check=True)
        s = wait_screen(name, lambda s: "py-spy@100," in s or "not installed" in s, 30)
        assert "not installed" not in s
        quit_and_wait(name)
    finally:
        tmux("kill-server", capture_output=True)
    records, _ = read_all(rec)
    on = [r for r in records if isinstance(r, Event) and r.kind == "profiler_on"]
    assert on and on[0].payload["profiler"] == "py-spy"
