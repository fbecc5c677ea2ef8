"""Every source against fake sysfs trees built from real file formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anubis_tui.records import decode_flags
from anubis_tui.session.sampler import Sampler
from anubis_tui.sources.base import SysfsRoot
from anubis_tui.sources.registry import choose_system_power, discover
from tests.conftest import FIXTURES


def snapshot(root: Path, config: dict | None = None, ticks: int = 1) -> tuple[dict, Sampler]:
    sources = discover(
        SysfsRoot(root), config=config or {"nvml_module": "absent-module"}, warn=lambda m: None
    )
    s = Sampler(sources, emit=lambda r: None)
    t = 1_000_000_000
    for _ in range(ticks):
        s.tick(t, force=True)
        t += 500_000_000
    return dict(zip((c.id for c in s.channels), s.latest(), strict=True)), s


def by_name(sources, name):
    return next(s for s in sources if s.name == name)


def test_intel_laptop_rapl_values_in_joules_and_dedup(monkeypatch):
    vals, s = snapshot(FIXTURES / "intel_laptop")
    assert vals["rapl.package-0.energy"] == pytest.approx(52649.883221)
    assert vals["rapl.psys.energy"] == pytest.approx(104884.773001)
    # core and uncore subzones are found once each, though class/ and the parent dir both list them
    ids = [c.id for c in s.channels]
    assert ids.count("rapl.package-0.core.energy") == 1
    assert ids.count("rapl.package-0.energy") == 1  # intel-rapl-mmio:0 is the same package
    assert s.system is not None and s.system.channels == ("rapl.psys.power",)
    assert s.system.tier == "platform"


def test_intel_laptop_temps_battery_cpufreq_throttle():
    vals, s = snapshot(FIXTURES / "intel_laptop")
    assert vals["hwmon.coretemp.temp1"] == 52.0
    chan = {c.id: c for c in s.channels}
    assert chan["hwmon.coretemp.temp1"].scope == "cpu-package"
    assert chan["hwmon.coretemp.temp1"].meta["critical_c"] == 100.0
    assert chan["hwmon.coretemp.temp2"].scope == "cpu-core"
    assert vals["battery.BAT0.power"] == pytest.approx(19.195)
    assert vals["cpufreq.mean"] == 1.8e9
    assert vals["intel_throttle.package-0.time"] == 600.0
    assert vals["intel_throttle.package-0.package_count"] == 12  # package_throttle_count
    assert vals["intel_throttle.package-0.core_count"] == 0  # Σ core_throttle_count, 4 cores
    assert chan["intel_throttle.package-0.package_count"].unit == "events"

    # acpitz is both an hwmon chip and a thermal zone: counted once
    assert "thermal.acpitz" not in vals and "hwmon.acpitz.temp1" in vals
    assert chan["thermal.x86_pkg_temp"].meta == {
        "zone": "thermal_zone0",
        "trip_c": 95.0,
        "critical_c": 100.0,
    }


def test_intel_throttle_event_counts_follow_the_files(tree):
    root = tree("intel_laptop")
    sources = discover(SysfsRoot(root), config={"nvml_module": "absent"}, warn=lambda m: None)
    src = by_name(sources, "intel-throttle")
    ids = [c.id for c in src.channels]
    cpu = root / "sys/devices/system/cpu"
    (cpu / "cpu0/thermal_throttle/package_throttle_count").write_text("15\n")
    (cpu / "cpu1/thermal_throttle/core_throttle_count").write_text("3\n")
    (cpu / "cpu2/thermal_throttle/core_throttle_count").write_text("4\n")
    vals = dict(zip(ids, src.groups[0].read(0), strict=True))
    assert vals["intel_throttle.package-0.package_count"] == 15
    assert vals["intel_throttle.package-0.core_count"] == 7


def test_rapl_counter_wraparound(tree):
    root = tree("intel_laptop")
    sources = discover(
        SysfsRoot(root), config={"nvml_module": "absent-module"}, warn=lambda m: None
    )
    rapl = by_name(sources, "rapl")
    read = rapl.groups[0].read
    pkg = next(z.path for z in rapl.zones if z.name == "package-0")
    assert "mmio" in pkg.name  # MMIO preferred when both providers expose the package
    rng = 262143328850
    (pkg / "energy_uj").write_text(f"{rng - 1_000_000}\n")
    read(0)
    (pkg / "energy_uj").write_text("4000000\n")  # wrapped: 1 J before the top + 4 J after
    out = read(1_000_000_000)
    idx = [c.id for c in rapl.channels].index("rapl.package-0.power")
    assert out[idx] == pytest.approx(5.0)
    assert out[idx - 1] == pytest.approx((rng + 4_000_000) / 1e6)


def test_rapl_permission_denied_gives_exact_fix(tree, monkeypatch):
    root = tree("intel_laptop")
    # Tests run as root, where mode 0400 does not stop a read: inject the kernel's EACCES.
    real = os.open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    sources = discover(
        SysfsRoot(root), config={"nvml_module": "absent-module"}, warn=lambda m: None
    )
    rapl = by_name(sources, "rapl")
    assert not rapl.available
    assert "CVE-2020-8694" in rapl.reason and "chmod a+r" in rapl.reason
    assert "/etc/sysfs.conf" in rapl.reason
    # with RAPL unreadable, the CPU falls back to an estimate, and says so
    est = by_name(sources, "estimate")
    assert est.available and est.tdp_w == 15.0  # i7-8565U from the table


def test_amd_desktop_k10temp_gap_nvme_amdgpu():
    vals, s = snapshot(FIXTURES / "amd_desktop")
    assert vals["hwmon.k10temp.temp1"] == 61.375
    assert vals["hwmon.k10temp.temp3"] == 45.5
    assert "hwmon.k10temp.temp2" not in vals
    assert vals["hwmon.nvme.temp1"] == 46.85
    assert vals["hwmon.amdgpu.power1_avg"] == 35.0
    assert vals["hwmon.amdgpu.in0"] == 0.8
    assert vals["rapl.package-0-die-0.energy"] == pytest.approx(7123.456789)
    assert s.system is not None
    assert set(s.system.channels) == {"hwmon.amdgpu.power1_avg", "rapl.package-0-die-0.power"}
    assert not any(src.startswith("hwmon:asus") for src in {c.source for c in s.channels})


def test_jetson_orin_rails_power_is_v_times_i_and_skips_nc_and_sum():
    vals, s = snapshot(FIXTURES / "jetson_orin_jp6")
    assert vals["jetson.VDD_IN.power"] == pytest.approx(5.080 * 1.180)
    assert vals["jetson.VDD_CPU_GPU_CV.power"] == pytest.approx(5.080 * 0.410)
    assert vals["jetson.VDD_SOC.current"] == pytest.approx(0.29)
    assert not any("NC" in k or "sum" in k for k in vals)
    assert [c.id for c in s.channels].count("jetson.VDD_IN.power") == 1  # two symlinks, one device
    assert s.system is not None and s.system.channels == ("jetson.VDD_IN.power",)
    assert s.system.tier == "board-input"
    assert vals["jetson.gpu.util"] == 0.9
    assert vals["jetson.gpu.clock"] == 306e6


def test_jetson_broken_zones_read_none_never_zero():
    vals, _ = snapshot(FIXTURES / "jetson_orin_jp6")
    assert vals["thermal.tj-thermal"] is None  # empty read
    assert vals["thermal.soc0-thermal"] is None  # stuck at 0
    assert vals["thermal.cpu-thermal"] == pytest.approx(48.406)


def test_jetson_tx2_iio_layout_in_milliwatts():
    vals, s = snapshot(FIXTURES / "jetson_tx2_jp4")
    assert vals["jetson.VDD_IN.power"] == pytest.approx(2.412)
    assert vals["jetson.VDD_SYS_DDR.power"] == pytest.approx(0.554)
    assert vals["jetson.VDD_IN.voltage"] == pytest.approx(19.144)
    assert s.system is not None and s.system.channels == ("jetson.VDD_IN.power",)


def test_rpi4_get_throttled_sysfs_hex_without_0x():
    vals, s = snapshot(FIXTURES / "rpi4")
    assert vals["rpi.throttled"] == 0x50000
    ch = next(c for c in s.channels if c.id == "rpi.throttled")
    assert decode_flags(ch, vals["rpi.throttled"]) == ([], ["under_voltage", "throttled"])
    assert vals["rpi.undervoltage"] == 0
    assert s.system is not None and s.system.tier == "estimate"
    est = next(c for c in s.channels if c.id == "estimate.cpu.power")
    assert est.meta["tdp_w"] == 6.0  # Raspberry Pi 4 from the device-tree model


def test_rpi5_pmic_rails_paired_by_name(monkeypatch):
    root = FIXTURES / "rpi5"
    monkeypatch.setenv("PATH", f"{root / 'bin'}:{os.environ['PATH']}")
    vals, s = snapshot(root)
    assert vals["rpi.pmic.VDD_CORE"] == pytest.approx(6.22421 * 0.861733)
    assert "rpi.pmic.EXT5V" not in vals and "rpi.pmic.BATT" not in vals  # no current / NaN
    rails = [k for k in vals if k.startswith("rpi.pmic.") and k != "rpi.pmic.total"]
    assert vals["rpi.pmic.total"] == pytest.approx(sum(vals[k] for k in rails))
    assert vals["rpi.throttled"] == 0x50005
    assert s.system is not None and s.system.channels == ("rpi.pmic.total",)
    assert not any(c.method == "estimated" for c in s.channels)


def test_empty_container_has_psutil_and_estimate_only():
    vals, s = snapshot(FIXTURES / "empty_container")
    sources = {c.source for c in s.channels}
    assert sources == {"process", "estimate", "anubis"}
    assert s.system is not None and s.system.method == "estimated"
    assert vals["estimate.cpu.power"] is not None and vals["estimate.cpu.power"] > 0


def test_sensor_disappearing_mid_run_reads_none_and_is_reported(tree):
    root = tree("intel_laptop")
    events = []
    sources = discover(
        SysfsRoot(root), config={"nvml_module": "absent-module"}, warn=lambda m: None
    )
    s = Sampler(sources, emit=events.append)
    s.tick(0, force=True)
    bat = root / "sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00/power_supply/BAT0"
    for name in ("power_now", "status", "voltage_now"):
        (bat / name).unlink()
    for k in range(1, 5):
        sample = s.tick(k * 1_000_000_000, force=True)
    i = [c.id for c in s.channels].index("battery.BAT0.power")
    assert sample.values[i] is None
    lost = [e for e in events if getattr(e, "kind", "") == "sensor_lost"]
    assert lost and "battery.BAT0.power" in lost[0].payload["channels"]


def test_choose_system_power_never_sums_nested_domains():
    _, s = snapshot(FIXTURES / "intel_laptop")
    sp = choose_system_power(s.channels)
    assert sp is not None
    assert sp.channels == ("rapl.psys.power",)  # not psys + package + core
    assert sp.energy_channels == ("rapl.psys.energy",)
    assert sp.method == "counter"


def test_broken_plugin_is_reported_and_skipped(monkeypatch):
    from anubis_tui.sources import registry

    monkeypatch.setitem(registry.BUILTINS, "broken", "no_such_module_xyz:Source")
    warnings: list[str] = []
    sources = discover(
        SysfsRoot(FIXTURES / "empty_container"),
        config={"nvml_module": "absent-module"},
        warn=warnings.append,
    )
    assert any("broken" in w and "skipped" in w for w in warnings)
    assert any(s.name == "process" for s in sources)
