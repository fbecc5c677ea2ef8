"""The GPU power-limit knob, journalled and put back, on fake NVML: a Session without a
model (moved from the slow test_knobs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from anubis_tui.config import Config
from anubis_tui.device import Journal
from anubis_tui.session import Session
from tests.conftest import FAKE_NVML, FIXTURES, Seen


def test_power_limit_knob_is_journalled_and_put_back_when_the_session_ends(tmp_path, monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(FAKE_NVML))
    monkeypatch.setenv("ANUBIS_FAKE_NVML", "capped")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_COST", "0")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "1")
    limit = tmp_path / "limit_mw"
    monkeypatch.setenv("ANUBIS_FAKE_NVML_STATE", str(limit))
    seen = Seen()
    s = Session(Config(), sinks=[seen])
    s.start()
    try:
        assert s.knob_state()["power_limit_w"] == ""
        out = s.knob_step("power_limit_w", -1)
        assert out.ok and out.message.startswith("GPU power 700W → 650W"), out
        assert limit.read_text() == "650000"
        journal = Journal()
        assert journal.changes()["power_limit_w:gpu"]["original"] == [700000]
        assert s.knob_values()["power_limit_w"] == 650.0
    finally:
        s.stop()
    assert limit.read_text() == "700000" and not Journal().path.exists()
    restored = seen.events("device_restored")
    assert restored and restored[-1].payload["after"] == "session end"
    knob = seen.events("knob")[-1].payload
    assert knob == {"name": "power_limit_w", "value": 650.0, "previous": 700.0}


def test_the_next_start_restores_what_a_killed_session_left(tmp_path, monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(FAKE_NVML))
    monkeypatch.setenv("ANUBIS_FAKE_NVML", "capped")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "1")
    limit = tmp_path / "limit_mw"
    limit.write_text("300000")  # what the dead session set
    monkeypatch.setenv("ANUBIS_FAKE_NVML_STATE", str(limit))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    journal = Journal()
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    journal.path.write_text(
        json.dumps(
            {
                "version": 1,
                "pid": int(dead.stdout),
                "started": time.time() - 10,
                "changes": {"power_limit_w:gpu": {"knob": "power_limit_w", "original": [700000]}},
            }
        )
    )
    seen = Seen()
    s = Session(Config(), sinks=[seen])
    s.start()
    s.stop()
    assert limit.read_text() == "700000"
    ev = seen.events("device_restored")[0].payload
    assert ev["after"] == "a session that did not end"
    assert ev["lines"] == ["power_limit_w:gpu: restored to [700000]"]
    assert not os.path.exists(journal.path)
