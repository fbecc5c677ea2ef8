"""Device knobs on a fake NVML and fake sysfs trees: steps, permissions, the journal, restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from anubis_tui.device import DeviceSettings, Journal, restore
from anubis_tui.device.controls import (
    ControlError,
    discover_cpu_max,
    discover_nvpmodel,
    discover_power_limit,
    ladder_w,
)
from anubis_tui.sources.base import SysfsRoot
from tests.conftest import ANUBIS, FAKE_NVML, cli_env


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    """The fake H200 with root rights; its limit lives in a file other processes see."""
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(FAKE_NVML))
    monkeypatch.setenv("ANUBIS_FAKE_NVML", "capped")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "1")
    monkeypatch.setenv("ANUBIS_FAKE_NVML_STATE", str(tmp_path / "limit_mw"))
    return tmp_path / "limit_mw"


def test_power_limit_steps_within_nvml_constraints(gpu):
    ctl = discover_power_limit()
    assert ctl is not None and ctl.writable
    assert ctl.value() == 700.0
    assert ctl.steps[0] == 200.0 and ctl.steps[-1] == 700.0
    assert all(200 <= w <= 700 for w in ctl.steps) and ctl.steps == sorted(ctl.steps)
    assert ctl.step(700.0, -1) == ctl.steps[-2]
    assert ctl.step(200.0, -1) == 200.0  # the ladder ends at NVML's minimum
    with pytest.raises(ControlError, match="200-700 W"):
        ctl.set(150)


def test_power_limit_without_root_is_greyed_with_the_reason(gpu, monkeypatch):
    monkeypatch.setenv("ANUBIS_FAKE_NVML_ROOT", "0")
    ctl = discover_power_limit()
    assert ctl is not None and not ctl.writable and ctl.reason == "needs root"
    settings = DeviceSettings([ctl])
    with pytest.raises(ControlError, match="needs root"):
        settings.set("power_limit_w", 300)
    assert not settings.journal.changes()  # nothing journalled for a change never made


def test_ladder_is_round_watts():
    assert ladder_w(200, 700) == [200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700]
    assert ladder_w(100, 100) == [100]


def test_set_journals_the_original_first_and_restore_puts_it_back(gpu):
    ctl = discover_power_limit()
    assert ctl is not None
    settings = DeviceSettings([ctl])
    previous = settings.set("power_limit_w", 300)
    assert previous == 700.0 and ctl.value() == 300.0 and gpu.read_text() == "300000"
    data = json.loads(settings.journal.path.read_text())
    assert data["pid"] == os.getpid()
    assert data["changes"]["power_limit_w:gpu"]["original"] == [700000]
    settings.set("power_limit_w", 250)  # a second change keeps the first original
    assert settings.journal.changes()["power_limit_w:gpu"]["original"] == [700000]
    lines = settings.restore_all()
    assert lines == ["power_limit_w:gpu: restored to [700000]"]
    assert ctl.value() == 700.0 and not settings.journal.path.exists()


def test_cpu_max_frequency_on_a_fake_tree(tree):
    root = tree("intel_laptop")
    ctl = discover_cpu_max(SysfsRoot(root))
    assert ctl.writable, ctl.reason
    assert ctl.steps[0] == 400 and ctl.steps[-1] == 4600
    settings = DeviceSettings([ctl])
    settings.set("cpu_max_mhz", ctl.steps[1])
    files = sorted(root.glob("sys/devices/system/cpu/cpufreq/policy*/scaling_max_freq"))
    assert files and all(f.read_text().strip() == str(ctl.steps[1] * 1000) for f in files)
    settings.restore_all()
    assert all(f.read_text().strip() == "4600000" for f in files)


def test_cpu_max_frequency_absent_in_a_container():
    ctl = discover_cpu_max(
        SysfsRoot(os.path.join(os.path.dirname(__file__), "..", "fixtures", "empty_container"))
    )
    assert not ctl.writable and ctl.reason == "no cpufreq"


def test_nvpmodel_through_its_tool(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nvpmodel.conf").write_text(
        "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n"
        "< POWER_MODEL ID=1 NAME=15W >\n< POWER_MODEL ID=2 NAME=7W >\n"
    )
    state = tmp_path / "mode"
    state.write_text("0")
    tool = tmp_path / "nvpmodel"
    tool.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            if [ "$1" = "-q" ]; then echo "NV Power Mode: X"; cat {state}; exit 0; fi
            if [ "$1" = "-m" ]; then echo "$2" > {state}; exit 0; fi
            exit 2
            """
        )
    )
    tool.chmod(0o755)
    monkeypatch.setenv("ANUBIS_NVPMODEL", str(tool))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert discover_nvpmodel(SysfsRoot(tmp_path)).reason == "needs root"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    ctl = discover_nvpmodel(SysfsRoot(tmp_path))
    assert ctl.writable and ctl.steps == [0, 1, 2]
    assert ctl.value() == 0
    assert ctl.step(2, 1) == 0  # n cycles
    settings = DeviceSettings([ctl])
    settings.set("nvpmodel", 2)
    assert state.read_text().strip() == "2"
    settings.restore_all()
    assert state.read_text().strip() == "0"


def test_a_live_owner_blocks_other_changes(gpu):
    """A journal owned by another live anubis is neither restored nor added to."""
    journal = Journal()
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    # an anubis: its command line names anubis_tui (a plain sleeper is no owner)
    code = "import time, anubis_tui; time.sleep(30)"
    sleeper = subprocess.Popen([sys.executable, "-c", code])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        journal.path.write_text(
            json.dumps({"version": 1, "pid": sleeper.pid, "started": started, "changes": {}})
        )
        ctl = discover_power_limit()
        assert ctl is not None
        settings = DeviceSettings([ctl], journal)
        assert settings.blocked_by() == f"another anubis (pid {sleeper.pid}) holds device changes"
        from anubis_tui.device import JournalError

        with pytest.raises(JournalError):
            settings.set("power_limit_w", 300)
        assert ctl.value() == 700.0
        # the same pid after a reboot (a process started later than the journal) is no owner
        data = json.loads(journal.path.read_text())
        journal.path.write_text(json.dumps({**data, "started": started - 3600}))
        assert settings.blocked_by() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_9_then_anubis_restore_puts_the_limit_back(gpu):
    """A real process sets the limit and is killed with SIGKILL; `anubis restore` undoes it."""
    code = textwrap.dedent(
        """
        import os, signal
        from anubis_tui.device import DeviceSettings
        s = DeviceSettings.discover()
        s.set("power_limit_w", 250)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert gpu.read_text() == "250000"
    journal = Journal()
    assert journal.changes()["power_limit_w:gpu"]["original"] == [700000]
    assert journal.owner() is None  # its owner is dead
    r = subprocess.run(
        [*ANUBIS, "restore"],
        env=cli_env(None, **{k: v for k, v in env.items() if k.startswith("ANUBIS")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "power_limit_w:gpu: restored to [700000]" in r.stdout
    assert gpu.read_text() == "700000" and not journal.path.exists()
    again = subprocess.run(
        [*ANUBIS, "restore"],
        env=cli_env(None, **{k: v for k, v in env.items() if k.startswith("ANUBIS")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_restore_names_what_it_cannot_find(tmp_path):
    journal = Journal(tmp_path / "j.json")
    journal.remember("power_limit_w:gpu", "power_limit_w", [300000])
    journal.path.write_text(
        journal.path.read_text().replace(f'"pid": {os.getpid()}', '"pid": null')
    )
    lines = restore(journal, [])
    assert lines == [
        f"power_limit_w:gpu: no such setting on this machine now; left in {journal.path}"
    ]
    assert journal.changes()  # kept for a later try


def test_a_damaged_journal_is_no_journal_and_restore_says_so_in_one_line(tmp_path):
    journal = Journal()
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    for junk in (b"\x00\xff not json", b"[1, 2]", b'{"changes": "x"}', b"{" * 100000):
        journal.path.write_bytes(junk)
        assert journal.changes() == {} and journal.owner() is None
        r = subprocess.run(
            [*ANUBIS, "restore"], env=cli_env(), capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and "nothing to restore" in r.stdout, r.stderr
    # an entry whose original is not what the setting takes is reported, and kept
    journal.path.write_text(
        json.dumps({"version": 1, "pid": None, "changes": {"cpu_max_mhz:cpu": {"original": "hot"}}})
    )
    r = subprocess.run(
        [*ANUBIS, "restore"],
        env=cli_env("intel_laptop"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cpu_max_mhz:cpu: not restored" in r.stdout
