"""The sysfs GPU power-cap knob (amdgpu power1_cap, i915/xe power1_max) on fake trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from anubis_tui.device import DeviceSettings, Journal, restore
from anubis_tui.device.controls import ControlError, discover_controls
from anubis_tui.device.gpu_sysfs import GpuPowerCap, discover_gpu_power_cap
from anubis_tui.sources.base import SysfsRoot, close_attrs
from tests.fixtures.gpu_trees import build as gpu


@pytest.fixture(autouse=True)
def _fresh_attrs():
    close_attrs()  # read_int keeps descriptors by path; every test has its own tree
    yield
    close_attrs()


def _tree(tmp_path: Path, name: str) -> tuple[SysfsRoot, Path]:
    root = gpu.build(name, tmp_path / name)
    return SysfsRoot(root), root


def test_amdgpu_cap_steps_within_cap_min_max_and_is_put_back(tmp_path):
    sysfs, root = _tree(tmp_path, "gpu_rdna3")
    cap = next(root.glob("sys/devices/**/hwmon2/power1_cap"))
    ctl = discover_gpu_power_cap(sysfs)
    assert isinstance(ctl, GpuPowerCap) and ctl.writable
    assert ctl.value() == pytest.approx(300.0)
    assert ctl.steps[0] == pytest.approx(294.0) and ctl.steps[-1] == pytest.approx(327.0)
    assert ctl.step(327.0, +1) == pytest.approx(327.0)
    with pytest.raises(ControlError, match="294-327 W"):
        ctl.set(350)
    settings = DeviceSettings([ctl])
    assert settings.set("power_limit_w", 310) == pytest.approx(300.0)
    assert cap.read_text() == "310000000\n"
    data = json.loads(settings.journal.path.read_text())
    assert data["changes"]["power_limit_w:gpu-sysfs"]["original"] == {"0000:03:00.0": 300000000}
    settings.set("power_limit_w", 320)  # a second change keeps the first original
    lines = settings.restore_all()
    assert lines == ["power_limit_w:gpu-sysfs: restored to {'0000:03:00.0': 300000000}"]
    assert cap.read_text() == "300000000\n" and not settings.journal.path.exists()


def test_read_only_cap_is_greyed_with_the_reason_and_nothing_journalled(tmp_path):
    sysfs, _ = _tree(tmp_path, "gpu_rdna2")  # power1_cap is 0444 there
    ctl = discover_gpu_power_cap(sysfs)
    assert ctl is not None and not ctl.writable
    assert ctl.reason == ("needs root" if os.geteuid() != 0 else "power1_cap is read-only")
    settings = DeviceSettings([ctl])
    with pytest.raises(ControlError, match=ctl.reason):
        settings.set("power_limit_w", 200)
    assert not settings.journal.changes()


def test_intel_power1_max_steps_up_to_rated_max(tmp_path):
    sysfs, root = _tree(tmp_path, "gpu_arc_a770")
    pl1 = next(root.glob("sys/devices/**/hwmon3/power1_max"))
    ctl = discover_gpu_power_cap(sysfs)
    assert ctl is not None and ctl.writable and ctl.value() == pytest.approx(190.0)
    assert ctl.steps[-1] == pytest.approx(225.0) and ctl.steps[0] == pytest.approx(112.5)
    settings = DeviceSettings([ctl])
    settings.set("power_limit_w", 225)
    assert pl1.read_text() == "225000000\n"
    settings.restore_all()
    assert pl1.read_text() == "190000000\n"


def test_restore_after_a_crash_checks_each_value_against_the_card(tmp_path):
    sysfs, root = _tree(tmp_path, "gpu_rdna3")
    cap = next(root.glob("sys/devices/**/hwmon2/power1_cap"))
    journal = Journal()
    journal.remember(
        "power_limit_w:gpu-sysfs",
        "power_limit_w",
        {"0000:03:00.0": 305000000, "0000:09:00.0": 250000000},
    )
    ctl = discover_gpu_power_cap(sysfs)
    assert ctl is not None
    journal.path.write_text(journal.path.read_text().replace(f'"pid": {os.getpid()}', '"pid": 1'))
    lines = restore(journal, [ctl])
    assert "power_limit_w:gpu-sysfs: wrote GPU 0000:03:00.0 power cap 305000000 µW" in lines
    assert any("0000:09:00.0: no such GPU on this machine" in x for x in lines)
    assert cap.read_text() == "305000000\n"
    assert journal.changes()["power_limit_w:gpu-sysfs"]["original"] == {"0000:09:00.0": 250000000}
    with pytest.raises(ControlError, match="not a map"):
        ctl.restore([1, 2])


def test_discover_controls_offers_the_sysfs_cap_without_nvml(tmp_path, monkeypatch):
    sysfs, _ = _tree(tmp_path, "gpu_rdna3")
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "anubis_no_such_nvml_module")
    ctls = {c.knob: c for c in discover_controls(sysfs)}
    assert isinstance(ctls["power_limit_w"], GpuPowerCap)


def test_no_cap_on_an_integrated_gpu(tmp_path):
    sysfs, _ = _tree(tmp_path, "gpu_lunar_lake")
    assert discover_gpu_power_cap(sysfs) is None


def test_intel_pl1_disabled_is_put_back_as_zero(tmp_path):
    sysfs, root = _tree(tmp_path, "gpu_arc_a770")
    pl1 = next(root.glob("sys/devices/**/hwmon3/power1_max"))
    pl1.write_text("0\n")  # "A read value of 0 means that the PL1 power limit is disabled"
    ctl = discover_gpu_power_cap(sysfs)
    assert ctl is not None
    settings = DeviceSettings([ctl])
    settings.set("power_limit_w", 200)
    assert pl1.read_text() == "200000000\n"
    assert settings.restore_all() == ["power_limit_w:gpu-sysfs: restored to {'0000:03:00.0': 0}"]
    # sysfs takes the write whole; a plain file keeps the longer value's tail after it
    assert pl1.read_text().splitlines()[0] == "0"
