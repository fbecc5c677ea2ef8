"""Hostile device journals: journal-shaped JSON with hostile values, and random bytes.

Whatever the file holds, reading it (`Journal.changes`, `owner`) and
`restore` never raise; restore writes only ints (not bools) within each
policy's cpuinfo range, on policies this machine has, and only values the
journal named; every line it says is one line; what it could not restore
stays in the journal, and what it restored in full leaves it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_tui.device import Journal, restore
from anubis_tui.device.controls import discover_cpu_max
from anubis_tui.sources.base import SysfsRoot
from tests.conftest import FIXTURES

EXAMPLES = 300
LO, HI = 400_000, 4_600_000  # the intel_laptop tree's cpuinfo_min_freq / cpuinfo_max_freq
NAMES = ("cpu0", "cpu1", "cpu2", "cpu3", "policy0", "cpu9", "", "../cpu0", "cpu0/../cpu1")

scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([LO, HI, LO - 1, HI + 1, 2_000_000, 0, -5, 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
original = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), value, max_size=6) | value
entry = (
    st.fixed_dictionaries({"original": original}, optional={"knob": value, "since": value}) | value
)
journal_doc = st.fixed_dictionaries(
    {
        "changes": st.dictionaries(
            st.sampled_from(["cpu_max_mhz:cpu", "power_limit_w:gpu", "nvpmodel:jetson", "x"]),
            entry,
            max_size=3,
        )
        | value
    },
    optional={
        "version": value,
        "pid": value | st.sampled_from([0, 1, -1, 2**31]),
        "started": value,
    },
)
raw_bytes = st.binary(max_size=300) | st.builds(
    lambda open_, n, close: (open_ * n + close * n).encode(),
    st.sampled_from(["[", "{", '{"changes":']),
    st.integers(0, 40_000),
    st.sampled_from(["]", "}", ""]),
)


def _freqs(root: Path) -> dict[str, int]:
    return {
        p.parent.name: int(p.read_text())
        for p in sorted((root / "sys/devices/system/cpu/cpufreq").glob("policy*/scaling_max_freq"))
    }


def _check(tmp: Path, content: bytes) -> None:
    root = tmp / "sysfs"
    if root.exists():
        shutil.rmtree(root)
    cpu_dir = "sys/devices/system/cpu"  # all that discover_cpu_max reads
    shutil.copytree(FIXTURES / "intel_laptop" / cpu_dir, root / cpu_dir, symlinks=True)
    path = tmp / "state" / "device-state.json"
    path.parent.mkdir(exist_ok=True, mode=0o700)
    path.write_bytes(content)
    path.chmod(0o600)
    before = _freqs(root)
    journal = Journal(path)
    changes = journal.changes()
    journal.owner()
    named: set[int] = set()
    cpu = changes.get("cpu_max_mhz:cpu", {}).get("original")
    if isinstance(cpu, dict):
        named = {v for v in cpu.values() if isinstance(v, int) and not isinstance(v, bool)}
    ctl = discover_cpu_max(SysfsRoot(root))
    lines = restore(journal, [ctl])
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    for name, khz in _freqs(root).items():
        if khz != before[name]:
            assert LO <= khz <= HI and khz in named, (name, khz)
    after = journal.changes()
    for key in changes:
        said = [line for line in lines if line.startswith(f"{key}:")]
        assert said, (key, lines)
        if any("restored to" in line for line in said):
            assert key not in after
        else:
            assert key in after  # kept for a later try


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=journal_doc)
def test_journal_shaped_hostile_values(tmp_path_factory, doc):
    try:
        text = json.dumps(doc, allow_nan=True)
    except (ValueError, RecursionError):
        return
    _check(tmp_path_factory.mktemp("j"), text.encode())


@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=raw_bytes)
def test_random_and_nested_bytes(tmp_path_factory, content):
    _check(tmp_path_factory.mktemp("b"), content)
