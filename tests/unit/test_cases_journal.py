"""The device-journal cases of ../shared/cases/reliability/journal/, and the kinds they stand for.

Each runs `anubis restore` (a real subprocess) against a writable copy of the
intel_laptop sysfs tree, whose cpufreq policies are named cpu0..cpu3 and run
400000-4600000 kHz. A journal value is written only when it is an int (not a
bool) within that policy's cpuinfo range on a policy this machine has; what is
not written is said and kept; a journal not owned by the user, writable by
others, nested or huge is refused without a traceback; the owner pid counts
only when it is a live anubis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from anubis_tui.device import DeviceSettings, Journal, JournalError, restore
from anubis_tui.device.controls import discover_cpu_max
from anubis_tui.sources.base import SysfsRoot
from tests.conftest import ANUBIS, FIXTURES, cli_env

CASES = FIXTURES / "reliability" / "journal"  # copies of ../shared/cases/reliability/journal
POLICIES = "sys/devices/system/cpu/cpufreq"


@pytest.fixture
def machine(tree, tmp_path, monkeypatch):
    """A writable intel_laptop tree, its state dir and the env `anubis restore` runs in."""
    root = tree("intel_laptop")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(root))
    monkeypatch.setenv("ANUBIS_STATE_DIR", str(state))
    env = cli_env(root, ANUBIS_STATE_DIR=str(state))
    return root, state / "device-state.json", env


def freqs(root: Path) -> dict[str, str]:
    return {
        p.parent.name: p.read_text().strip()
        for p in sorted((root / POLICIES).glob("policy*/scaling_max_freq"))
    }


def run_restore(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [*ANUBIS, "restore"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def put(journal: Path, text: str | bytes, mode: int = 0o600) -> None:
    journal.write_bytes(text.encode() if isinstance(text, str) else text)
    journal.chmod(mode)


def case(name: str) -> bytes:
    return (CASES / name).read_bytes()


def test_bad_values_are_not_written_and_stay_in_the_journal(machine):
    root, journal, env = machine
    put(journal, case("journal-bad-values.json"))
    before = freqs(root)
    r = run_restore(env)
    assert r.returncode == 1
    out = r.stdout
    # True, 1, -5 and a string: each named with why, none written, none called restored
    for name, shown in (("cpu0", "True"), ("cpu1", "1"), ("cpu2", "-5"), ("cpu3", "4600000")):
        assert f"{name}: {shown} is not a frequency within 400000-4600000 kHz" in out, out
    assert "restored to" not in out and "wrote" not in out
    assert freqs(root) == before
    kept = json.loads(journal.read_text())["changes"]["cpu_max_mhz:cpu"]["original"]
    assert kept == {"cpu0": True, "cpu1": 1, "cpu2": -5, "cpu3": "4600000"}


def test_a_mixed_entry_writes_the_good_part_and_keeps_the_rest(machine):
    root, journal, env = machine
    entry = {"cpu0": 2000000, "cpu1": True, "cpu2": 2000000, "cpu3": 2000000}
    put(
        journal,
        json.dumps(
            {
                "version": 1,
                "pid": None,
                "changes": {"cpu_max_mhz:cpu": {"knob": "cpu_max_mhz", "original": entry}},
            }
        ),
    )
    r = run_restore(env)
    assert r.returncode == 1
    assert "cpu_max_mhz:cpu: wrote cpu0 scaling_max_freq 2000000 kHz" in r.stdout
    assert "cpu_max_mhz:cpu: not restored: cpu1: True is not a frequency" in r.stdout
    assert freqs(root) == {
        "policy0": "2000000",
        "policy1": "4600000",
        "policy2": "2000000",
        "policy3": "2000000",
    }
    left = json.loads(journal.read_text())["changes"]["cpu_max_mhz:cpu"]["original"]
    assert left == {"cpu1": True}
    # a second try says the same about what is left, and writes nothing more
    again = run_restore(env)
    assert again.returncode == 1 and "cpu1: True is not a frequency" in again.stdout
    assert "wrote" not in again.stdout


def test_foreign_policy_names_are_not_reported_restored(machine):
    root, journal, env = machine
    put(journal, case("journal-foreign-policy-names.json"))
    before = freqs(root)
    r = run_restore(env)
    assert r.returncode == 1
    assert "policy0: no such cpufreq policy on this machine" in r.stdout
    assert "policy1: no such cpufreq policy on this machine" in r.stdout
    assert "restored to" not in r.stdout
    assert freqs(root) == before
    assert json.loads(journal.read_text())["changes"]["cpu_max_mhz:cpu"]["original"] == {
        "policy0": 4600000,
        "policy1": 4600000,
    }


@pytest.mark.parametrize(
    "text",
    [
        None,  # the case file: 100,000 levels, 200 KB
        "[" * 30_000,  # under the size bound, over the depth bound
        '{"changes": {"k": ' + "[" * 5000 + "]" * 5000 + "}}",
        '{"changes": {"cpu_max_mhz:cpu": {"original": "'
        + "[" * 20_000
        + '"}}}',  # brackets inside a string
    ],
)
def test_nested_and_huge_journals_are_refused_without_recursion(machine, text):
    _root, journal, env = machine
    put(journal, case("journal-nested-100k.json") if text is None else text)
    j = Journal(journal)
    changes = j.changes()  # no RecursionError
    assert j.owner() is None
    r = run_restore(env)
    assert "RecursionError" not in r.stderr
    if changes:  # the string one is a well-formed journal with a junk value
        assert r.returncode == 1 and "not restored" in r.stdout
    else:
        assert r.returncode == 0 and "ignored a damaged journal" in r.stdout, r.stdout


def test_every_start_survives_a_nested_journal(machine):
    """`record` reads the journal at start: a nested one is ignored, not a RecursionError."""
    _root, journal, env = machine
    put(journal, case("journal-nested-100k.json"))
    r = subprocess.run(
        [
            *ANUBIS,
            "record",
            "--no-model",
            "--duration",
            "1",
            "-o",
            str(journal.parent / "r.msgpack"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr


GOOD = {
    "cpu_max_mhz:cpu": {"knob": "cpu_max_mhz", "original": {f"cpu{i}": 400000 for i in range(4)}}
}


@pytest.mark.parametrize("how", ["other-owner", "world-writable", "group-writable", "symlink"])
def test_an_untrusted_journal_is_refused_like_ssh_strictmodes(machine, how, tmp_path):
    root, journal, env = machine
    text = json.dumps({"version": 1, "pid": None, "changes": GOOD})
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere.json"
        put(elsewhere, text)
        journal.symlink_to(elsewhere)
    else:
        put(
            journal,
            text,
            0o666 if how == "world-writable" else 0o620 if how == "group-writable" else 0o600,
        )
        if how == "other-owner":
            if os.geteuid() != 0:
                pytest.skip("chown to another user needs root")
            os.chown(journal, 12345, 12345)
    before = freqs(root)
    r = run_restore(env)
    assert r.returncode == 2
    assert f"not using {journal}" in r.stderr
    want = {
        "other-owner": "owned by uid 12345",
        "world-writable": "others may write it",
        "group-writable": "others may write it",
        "symlink": "cannot open it safely",
    }[how]
    assert want in r.stderr, r.stderr
    assert freqs(root) == before  # not a core set to 400 MHz
    # a session neither restores it nor writes over it
    ctl = discover_cpu_max(SysfsRoot(root))
    settings = DeviceSettings([ctl], Journal(journal))
    assert (settings.blocked_by() or "").startswith("journal not trusted")  # the knob says why
    with pytest.raises(JournalError, match="not trusted"):
        settings.set("cpu_max_mhz", 1200)
    assert freqs(root) == before


def _journal_owned_by(journal: Path, pid: int) -> None:
    started = psutil.Process(pid).create_time()
    put(journal, json.dumps({"version": 1, "pid": pid, "started": started, "changes": GOOD}))


def test_pid_1_and_a_non_anubis_process_are_not_live_owners(machine):
    root, journal, env = machine
    put(
        journal,
        json.dumps(
            {"version": 1, "pid": 1, "started": psutil.Process(1).create_time(), "changes": GOOD}
        ),
    )
    assert Journal(journal).owner() is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _journal_owned_by(journal, sleeper.pid)
        assert Journal(journal).owner() is None
        r = run_restore(env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert set(freqs(root).values()) == {"400000"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_live_anubis_owner_is_left_alone(machine):
    root, journal, env = machine
    owner = subprocess.Popen([sys.executable, "-c", "import time, anubis_tui; time.sleep(30)"])
    try:
        _journal_owned_by(journal, owner.pid)
        assert Journal(journal).owner() == owner.pid
        before = freqs(root)
        r = run_restore(env)
        assert r.returncode == 2 and f"pid {owner.pid}" in r.stderr
        assert freqs(root) == before
    finally:
        owner.kill()
        owner.wait()


HOLD = textwrap.dedent(
    """
    import os, signal, sys, time
    from anubis_tui.device import DeviceSettings, restore
    s = DeviceSettings.discover()
    j = s.journal
    if j.changes() and j.owner() is None:  # what every session start does
        restore(j, list(s.controls.values()))
    s.set("cpu_max_mhz", int(sys.argv[1]))
    if sys.argv[2] == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def _session(env: dict[str, str], mhz: int, then: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(mhz), then],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("leftover", [False, True])
def test_after_a_crash_a_later_sessions_change_survives_a_third_start(machine, leftover):
    """A sets and is killed; B (live) restores A and sets its own; a third start leaves B's alone.

    With `leftover`, A's entry also names a policy this machine lacks, so it stays in the
    journal when B starts: B's change of the same setting must still make the journal B's.
    """
    root, journal, env = machine
    a = _session(env, 1200, "crash")
    a.wait(timeout=60)
    assert a.returncode == -signal.SIGKILL, a.stderr.read() if a.stderr else ""
    assert set(freqs(root).values()) == {"1200000"}
    if leftover:
        data = json.loads(journal.read_text())
        data["changes"]["cpu_max_mhz:cpu"]["original"]["policy9"] = 4600000
        put(journal, json.dumps(data))
    b = _session(env, 2000, "hold")
    try:
        assert b.stdout is not None and b.stdout.readline().strip() == "ready"
        assert set(freqs(root).values()) == {"2000000"}
        j = Journal(journal)
        assert j.owner() == b.pid
        # the third start: it must not restore what B holds
        ctl = discover_cpu_max(SysfsRoot(root))
        if j.changes() and j.owner() is None:
            restore(j, [ctl])
        r = run_restore(env)
        assert r.returncode == 2 and f"pid {b.pid}" in r.stderr
        assert set(freqs(root).values()) == {"2000000"}
    finally:
        b.kill()
        b.wait()
    # B died without cleaning up: now its journal is restored, to the machine's real original
    time.sleep(0.1)
    r = run_restore(env)
    assert set(freqs(root).values()) == {"4600000"}
    if leftover:
        assert r.returncode == 1 and "policy9: no such cpufreq policy" in r.stdout
    else:
        assert r.returncode == 0, r.stdout


def test_restore_in_process_never_writes_a_bool(machine):
    root, journal, _env = machine
    put(
        journal,
        json.dumps(
            {
                "version": 1,
                "pid": None,
                "changes": {"cpu_max_mhz:cpu": {"original": {"cpu0": True, "cpu1": False}}},
            }
        ),
    )
    lines = restore(Journal(journal), [discover_cpu_max(SysfsRoot(root))])
    assert all("not restored" in line for line in lines) and len(lines) == 2
    assert set(freqs(root).values()) == {"4600000"}
    shutil.rmtree(journal.parent)
