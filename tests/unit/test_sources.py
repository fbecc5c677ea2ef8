"""Every source against fake sysfs trees built from real file formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anubis_tui.records import decode_flags
from anubis_tui.session.sampler import Sampler
from anubis_tui.sources.base import DiscoveryContext, SysfsRoot
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
    # amdgpu is read by its own source (issue 25), found here by its hwmon chip alone.
    assert vals["amdgpu.hwmon1.power_avg"] == 35.0
    assert vals["amdgpu.hwmon1.voltage_vddgfx"] == 0.8
    assert vals["rapl.package-0-die-0.energy"] == pytest.approx(7123.456789)
    assert s.system is not None
    assert set(s.system.channels) == {"amdgpu.hwmon1.power_avg", "rapl.package-0-die-0.power"}
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


def test_rapl_drop_that_cannot_be_a_wrap_is_a_reset_with_no_energy(tree):
    """786,432 J in 5 s (2.6 MW) came from taking every drop as a full wrap."""
    root = tree("intel_laptop")
    sources = discover(SysfsRoot(root), config={"nvml_module": "absent"}, warn=lambda m: None)
    rapl = by_name(sources, "rapl")
    group = rapl.groups[0]
    pkg = next(z.path for z in rapl.zones if z.name == "package-0")
    ids = [c.id for c in rapl.channels]
    e_i, p_i = ids.index("rapl.package-0.energy"), ids.index("rapl.package-0.power")
    (pkg / "energy_uj").write_text("50000000\n")  # 50 J
    first = group.read(0)
    (pkg / "energy_uj").write_text("20000000\n")  # 20 J, 0.1 s later: a reset, not 262 kJ
    out = group.read(100_000_000)
    assert out[p_i] is None  # no power for that interval
    assert out[e_i] == pytest.approx(first[e_i])  # the running total does not jump
    kinds = [k for k, _ in group.notes]
    assert kinds == ["counter_reset"] and group.notes[0][1]["channel"] == "rapl.package-0"
    group.notes.clear()
    (pkg / "energy_uj").write_text("21000000\n")  # then 1 J in 0.1 s: counting again
    out = group.read(200_000_000)
    assert out[p_i] == pytest.approx(10.0)
    assert out[e_i] == pytest.approx(first[e_i] + 1.0)


def test_energy_counter_wrap_reset_and_glitch():
    from anubis_tui.sources.base import EnergyCounter

    c = EnergyCounter("x", range_j=100.0, max_w=1000.0)
    notes: list = []
    assert c.update(99.0, 0, notes) == (99.0, None)
    total, p = c.update(1.0, 1_000_000_000, notes)  # wrapped: 1 J + 1 J in 1 s
    assert total == pytest.approx(101.0) and p == pytest.approx(2.0) and c.wraps == 1
    total, p = c.update(0.5, 1_001_000_000, notes)  # a glitch 1 ms later: no wrap fits
    assert p is None and total == pytest.approx(101.0) and c.resets == 1 and len(notes) == 1
    total, p = c.update(1.5, 2_001_000_000, notes)
    assert total == pytest.approx(102.0) and p == pytest.approx(1.0)
    # without a known range (hwmon, NVML) every drop is a reset
    n = EnergyCounter("y", range_j=None)
    n.update(10.0, 0)
    assert n.update(5.0, 10**9) == (10.0, None) and n.resets == 1


def test_hwmon_and_nvml_energy_resets_are_recorded_not_invented(tree, fake_nvml, monkeypatch):
    from anubis_tui.sources import nvml as nvml_mod
    from anubis_tui.sources.hwmon import HwmonSource
    from anubis_tui.sources.nvml import NvmlSource

    root = tree("amd_desktop")
    # an amd_energy chip (a 64-bit µJ counter), made in the copied tree
    chip = root / "sys/devices/platform/amd_energy.0/hwmon/hwmon7"
    chip.mkdir(parents=True)
    (chip / "name").write_text("amd_energy\n")
    (chip / "energy1_input").write_text("9000000\n")
    (chip / "energy1_label").write_text("Esocket0\n")
    link = root / "sys/class/hwmon/hwmon7"
    link.symlink_to("../../devices/platform/amd_energy.0/hwmon/hwmon7")
    found = discover(SysfsRoot(root), config={"nvml_module": "absent"}, warn=lambda m: None)
    hw = [s for s in found if isinstance(s, HwmonSource)]
    group = next(g for s in hw for g in s.groups if any(c.kind == "energy" for c in g.channels))
    ids = [c.id for c in group.channels]
    e_i = next(i for i, c in enumerate(group.channels) if c.kind == "energy")
    path = chip / "energy1_input"
    Path(path).write_text("9000000\n")
    first = group.read(0)
    Path(path).write_text("1000000\n")
    out = group.read(100_000_000)
    assert out[e_i] == pytest.approx(first[e_i]) and out[ids.index(ids[e_i] + ".power")] is None
    assert [k for k, _ in group.notes] == ["counter_reset"]
    # NVML: a counter that goes back (a driver reload) is a reset too
    mod = fake_nvml("trace")
    ctx = DiscoveryContext(SysfsRoot(root), config={"nvml_module": mod})
    src = next(s for s in NvmlSource.discover(ctx) if s.available)
    eg = next(g for g in src.groups if g.channels[0].kind == "energy")
    readings = iter([5000.0, 5100.0, 10.0])
    monkeypatch.setattr(nvml_mod.NvmlAdapter, "energy_j", lambda self, h: next(readings))
    eg.read(0)
    assert eg.read(1_000_000_000)[1] == pytest.approx(100.0)
    e, p = eg.read(2_000_000_000)
    assert e == pytest.approx(5100.0) and p is None
    assert [k for k, _ in eg.notes] == ["counter_reset"]


def test_huge_hwmon_directories_are_bounded(tree):
    from anubis_tui.sources.hwmon import MAX_ATTRS_PER_CHIP, MAX_CHIPS, HwmonSource

    root = tree("empty_container")
    cls = root / "sys/class/hwmon"
    cls.mkdir(parents=True, exist_ok=True)
    big = cls / "hwmon0"
    big.mkdir()
    (big / "name").write_text("bigchip\n")
    for i in range(1, 2001):
        (big / f"temp{i}_input").write_text("40000\n")
    for k in range(1, MAX_CHIPS + 20):
        d = cls / f"hwmon{k}"
        d.mkdir()
        (d / "name").write_text(f"chip{k}\n")
        (d / "temp1_input").write_text("30000\n")
    found = [s for s in discover(SysfsRoot(root), config={"nvml_module": "absent"},
             warn=lambda m: None) if isinstance(s, HwmonSource)]  # fmt: skip
    bigsrc = next(s for s in found if s.chip == "bigchip")
    assert len(bigsrc.channels) == MAX_ATTRS_PER_CHIP and "2000 attributes" in bigsrc.reason
    assert len([s for s in found if s.available]) == MAX_CHIPS
    assert any("hwmon chips: the first" in s.reason for s in found if not s.available)


def test_read_int_keeps_the_file_open_and_sees_every_new_value(tmp_path):
    """One pread a reading on a kept descriptor: a value written in place is read back."""
    import os as _os

    from anubis_tui.sources import base

    f = tmp_path / "energy_uj"
    f.write_text("100\n")
    assert base.read_int(f) == 100
    assert str(f) in base._OPEN
    f.write_text("250\n")  # sysfs makes the value again for each read from offset 0
    assert base.read_int(f) == 250
    fifo = tmp_path / "planted"
    _os.mkfifo(fifo)
    assert base.read_int(fifo) is None  # never blocks, never kept
    assert str(fifo) not in base._OPEN
    assert base.read_int(tmp_path / "missing") is None
    base.close_attrs(str(tmp_path))
    assert not any(k.startswith(str(tmp_path)) for k in base._OPEN)


def test_hwmon_inputs_lists_readable_inputs_in_index_order_with_labels_and_limits(tmp_path):
    from anubis_tui.sources.base import TEMP_CRIT, hwmon_inputs

    for name, text in {
        "temp10_input": "30000",
        "temp2_input": "45000",
        "temp2_label": "junction",
        "temp2_crit": "110000",
        "temp10_crit": "-273150",  # "no limit" placeholder
        "temp3_input": "",  # empty: no reading, so not a channel
    }.items():
        (tmp_path / name).write_text(text + "\n")
    got = hwmon_inputs(tmp_path, "temp", TEMP_CRIT)
    assert [(t.index, t.name, t.meta) for t in got] == [
        (2, "junction", {"file": "hwmon temp2_input", "critical_c": 110.0}),
        (10, "temp10", {"file": "hwmon temp10_input"}),
    ]


def test_derived_power_sits_beside_its_counter():
    from anubis_tui.records import Channel
    from anubis_tui.sources.base import derived_power

    e = Channel(id="x.energy", label="x energy", source="s", kind="energy", unit="J",
                scope="cpu-package", method="counter", update_period_s=0.1,
                meta={"domain": "d"})  # fmt: skip
    p = derived_power(e, "x.power", "x power")
    assert (p.kind, p.unit, p.method, p.scope, p.update_period_s) == (
        "power", "W", "derived", "cpu-package", 0.1,
    )  # fmt: skip
    assert p.meta == {"domain": "d", "energy_channel": "x.energy"} and e.meta == {"domain": "d"}
