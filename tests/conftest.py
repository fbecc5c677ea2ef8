from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from anubis_tui.records import Event, Record, Tokens

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FAKE_NVML = ROOT / "tests" / "fakes" / "nvml_h200.py"


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads or writes the user's device-change journal (~/.local/state/anubis)."""
    monkeypatch.setenv("ANUBIS_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def _attribute_descriptors():
    """Each test starts with read_int's kept descriptors closed (a test's fake tree is gone
    after it; a full cache would make the next test read uncached)."""
    yield
    from anubis_tui.sources.base import close_attrs

    close_attrs()


@pytest.fixture
def tree(tmp_path: Path):
    """Copy a committed fake sysfs tree into tmp_path (so a test may change it) and return it."""

    def make(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest, symlinks=True)
        return dest

    return make


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch):
    """Load the fake pynvml in a given mode; returns the module."""

    def load(mode: str = "trace", cost: bool = False):
        from anubis_tui.sources.nvml import load_nvml_module

        monkeypatch.setenv("ANUBIS_FAKE_NVML", mode)
        monkeypatch.setenv("ANUBIS_FAKE_NVML_COST", "1" if cost else "0")
        return load_nvml_module(str(FAKE_NVML))

    return load


def cli_env(tree: str | Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for running `anubis` in a subprocess against a fake tree, no real NVML."""
    env = dict(os.environ)
    env["ANUBIS_NVML_MODULE"] = str(FAKE_NVML)
    env.setdefault("ANUBIS_FAKE_NVML", "absent")
    env["ANUBIS_CONFIG"] = "/nonexistent/anubis.toml"
    if tree is not None:
        root = FIXTURES / tree if isinstance(tree, str) else tree
        env["ANUBIS_SYSFS_ROOT"] = str(root)
        if (root / "bin").is_dir():
            env["PATH"] = f"{root / 'bin'}:{env['PATH']}"
    env.update(extra)
    return env


ANUBIS = [sys.executable, "-m", "anubis_tui"]


HOOK_WARNING = "warning: ANUBIS_NVML_MODULE"


def errors(stderr: str | bytes) -> str:
    """stderr without the line that names the NVML test hook (cli_env sets it)."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return "".join(ln for ln in text.splitlines(keepends=True) if HOOK_WARNING not in ln)


class Seen:
    """A bus sink keeping every record, with a wait for a condition on them (session tests)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.cond = threading.Condition()

    def __call__(self, rec: Record) -> None:
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def events(self, kind: str) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event) and r.kind == kind]

    def tokens_after(self, t: int) -> int:
        return sum(r.count for r in self.records if isinstance(r, Tokens) and r.t > t)

    def wait(self, pred, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = end - time.monotonic()
                assert left > 0, "timed out"
                self.cond.wait(min(left, 0.2))
