"""Machines as users have them: the meter tree, plausible readings, and a reason for every gap.

The trees under tests/fixtures/field/ are the field cases (each rebuilt from a public bug
report; the source is named in each test). The other machines here are built from the
kernel's hwmon documentation and from what users reported, so each kind of fault is covered
by more than one machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from anubis_tui.records import Channel, Event, plausible
from anubis_tui.session.sampler import Sampler
from anubis_tui.sources.base import SysfsRoot, temperature_limit_c
from anubis_tui.sources.registry import choose_system_power, discover
from tests.conftest import ANUBIS, FIXTURES, cli_env, errors

FIELD = FIXTURES / "field"
FAKES = Path(__file__).resolve().parents[1] / "fakes"


def sample(root: Path, ticks: int = 2, config: dict | None = None, between=None):
    """Discover `root`, tick `ticks` times 0.5 s apart: (values, sampler, events, sources)."""
    sources = discover(
        SysfsRoot(root), config=config or {"nvml_module": "absent-module"}, warn=lambda m: None
    )
    events: list[Event] = []
    s = Sampler(sources, emit=lambda r: events.append(r) if isinstance(r, Event) else None)
    t = 1_000_000_000
    for k in range(ticks):
        if k and between is not None:
            between(k)
        s.tick(t, force=True)
        t += 500_000_000
    vals = dict(zip((c.id for c in s.channels), s.latest(), strict=True))
    return vals, s, events, sources


def write(root: Path, rel: str, text: str | int) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{text}\n")


def bump(path: Path, uj: int) -> None:
    path.write_text(f"{int(path.read_text()) + uj}\n")


def roles(sp) -> dict[str, tuple[str, str | None]]:
    return {m.channel: (m.role, m.parent) for m in sp.meters}


# -- kind 1: overlapping meters, and the meter that counts ------------------------------------


def test_agx_orin_without_vdd_in_sums_its_module_rails(tree):
    """jetson_stats#344: no VDD_IN; VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 = 13.91 W, measured."""
    vals, s, _, _ = sample(tree("field/agx_orin_no_vdd_in"))
    sp = s.system
    assert sp is not None and sp.tier == "module-rails" and sp.method != "estimated"
    assert vals["system.power"] == pytest.approx(5.140 + 3.270 + 5.500, abs=1e-3)
    r = roles(sp)
    assert r["jetson.VDDQ_VDD2_1V8AO.power"] == ("inside", "jetson.VIN_SYS_5V0.power")
    assert "no VDD_IN" in sp.reason
    assert any("carrier board" in u for u in sp.uncovered)
    assert not any(c.method == "estimated" for c in s.channels if c.kind == "power")


def test_amd_energy_socket_and_rapl_package_count_once(tree):
    """amd/amd_energy: Esocket0 and powercap package-0 are one MSR read twice (≈ 60 W, not 120)."""
    root = tree("field/amd_energy_plus_rapl")
    rapl = root / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
    sock = root / "sys/devices/platform/amd_energy.0/hwmon/hwmon4/energy17_input"

    def advance(k: int) -> None:  # 60 W for the 0.5 s between ticks, on both counters
        bump(rapl, 30_000_000)
        bump(sock, 30_000_000)

    vals, s, _, _ = sample(root, ticks=3, between=advance)
    assert vals["system.power"] == pytest.approx(60.0)
    sp = s.system
    assert sp is not None and sp.tier == "components" and len(sp.channels) == 1
    r = roles(sp)
    other = "hwmon.amd_energy.energy17.power"
    assert r[other][0] == "same-domain" and r[other][1] in sp.channels
    # the per-core counters sit inside the package, never added to it
    assert r["hwmon.amd_energy.energy1.power"][0] == "inside"


def test_a_64_core_amd_energy_keeps_its_socket_counter(tree, tmp_path):
    """EPYC 7713 (64 cores): Esocket0 is energy65, after 64 Ecore counters; the cap keeps it."""
    root = tmp_path / "epyc"
    chip = "sys/devices/platform/amd_energy.0/hwmon/hwmon2"
    write(root, f"{chip}/name", "amd_energy")
    for k in range(64):
        write(root, f"{chip}/energy{k + 1}_input", 1_000_000 * k)
        write(root, f"{chip}/energy{k + 1}_label", f"Ecore{k:03d}")
    write(root, f"{chip}/energy65_input", 5_000_000_000)
    write(root, f"{chip}/energy65_label", "Esocket0")
    os.makedirs(root / "sys/class/hwmon")
    os.symlink(f"../../{chip[4:]}", root / "sys/class/hwmon/hwmon2")
    write(root, "proc/cpuinfo", "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7713 64-Core")
    counter = root / chip / "energy65_input"
    vals, s, _, sources = sample(root, ticks=3, between=lambda k: bump(counter, 100_000_000))
    assert vals["hwmon.amd_energy.energy65.power"] == pytest.approx(200.0)
    assert s.system is not None and s.system.channels == ("hwmon.amd_energy.energy65.power",)
    assert s.system.method == "counter"
    hw = next(x for x in sources if x.name == "hwmon:amd_energy")
    assert "per-core ones dropped" in hw.reason


def test_thor_carrier_ina238_is_the_board_input(tree):
    """jetson_stats#900: the carrier's INA238 labelled VIN is the total input (50 W)."""
    vals, s, _, sources = sample(tree("field/thor_ina238_vin"))
    sp = s.system
    assert sp is not None and sp.tier == "board-input"
    assert sp.channels == ("hwmon.ina238.power1",)
    assert vals["system.power"] == pytest.approx(50.0)
    jetson = next(x for x in sources if x.name == "jetson")
    assert "Jetson AGX Thor" in jetson.reason and "not a Jetson" not in jetson.reason
    assert not any(c.scope == "battery" for c in s.channels)  # the UCSI supply is no battery


def test_acpi_power_meter_is_the_board_input(tmp_path):
    """ACPI 4.0 power meter (Documentation/hwmon/acpi_power_meter.rst): the server's input."""
    root = tmp_path / "server"
    chip = "sys/devices/LNXSYSTM:00/ACPI000D:00/hwmon/hwmon1"
    write(root, f"{chip}/name", "power_meter")
    write(root, f"{chip}/power1_average", 245_000_000)
    write(root, f"{chip}/power1_average_interval", 1000)
    os.makedirs(root / "sys/class/hwmon")
    os.symlink(f"../../{chip[4:]}", root / "sys/class/hwmon/hwmon1")
    vals, s, _, _ = sample(root)
    assert s.system is not None and s.system.tier == "board-input"
    assert vals["system.power"] == pytest.approx(245.0)


def power(cid: str, scope: str, **meta) -> Channel:
    return Channel(
        id=cid,
        label=cid,
        source=cid.split(".")[0],
        kind="power",
        unit="W",
        scope=scope,
        method=str(meta.pop("method", "derived")),
        update_period_s=0.1,
        meta=meta,
    )


def test_apu_ppt_contains_the_rapl_package():
    """An AMD laptop APU: amdgpu's PPT is the whole package; RAPL package-0 is inside it."""
    ppt = power("amdgpu.ppt", "apu-package", domain="apu:0")
    pkg = power("rapl.package-0.power", "cpu-package", domain="cpu-package:0")
    igpu = power("amdgpu.gfx", "gpu-integrated")
    sp = choose_system_power([ppt, pkg, igpu])
    assert sp is not None and sp.channels == ("amdgpu.ppt",)
    assert roles(sp)["rapl.package-0.power"] == ("inside", "amdgpu.ppt")
    assert roles(sp)["amdgpu.gfx"][0] == "inside"


def test_two_sockets_are_both_counted_and_psys_contains_them():
    a = power("rapl.package-0.power", "cpu-package", domain="cpu-package:0")
    b = power("rapl.package-1.power", "cpu-package", domain="cpu-package:1")
    dram = power("rapl.dram.power", "dram", domain="rapl:package-0/dram")
    sp = choose_system_power([a, b, dram])
    assert sp is not None and set(sp.channels) == {a.id, b.id, dram.id}
    psys = power("rapl.psys.power", "platform", domain="platform")
    sp = choose_system_power([a, b, dram, psys])
    assert sp is not None and sp.channels == (psys.id,) and sp.tier == "platform"


def test_gpu_branch_with_estimated_cpu_says_what_is_estimated():
    gpu = power("gpu0.power_counter", "gpu", energy_channel="gpu0.energy")
    mem = power("gpu0.power_memory", "gpu-memory", method="average:1s")
    est = power("estimate.cpu.power", "cpu-package", method="estimated")
    sp = choose_system_power([gpu, mem, est])
    assert sp is not None and sp.channels == ("gpu0.power_counter", "estimate.cpu.power")
    assert sp.method == "estimated"
    assert roles(sp)["gpu0.power_memory"] == ("inside", "gpu0.power_counter")
    assert any("CPU" in u and "estimated" in u for u in sp.uncovered)


def test_jetson_module_input_contains_its_rails_by_declaration():
    vin = power("jetson.VDD_IN.power", "board-input")
    cpu = power("jetson.VDD_CPU_GPU_CV.power", "soc-rail", within="jetson.VDD_IN.power")
    sp = choose_system_power([vin, cpu])
    assert sp is not None and sp.channels == (vin.id,)
    assert roles(sp)[cpu.id] == ("inside", vin.id)


def test_a_meter_of_unknown_place_is_named_not_summed():
    odd = power("hwmon.nct6798.power1", "board")
    est = power("estimate.cpu.power", "cpu-package", method="estimated")
    sp = choose_system_power([odd, est])
    assert sp is not None and sp.tier == "estimate"
    assert roles(sp)[odd.id][0] == "not-placed"


# -- kind 2: implausible readings and placeholder limits ---------------------------------------


def test_unset_limits_are_no_limits(tree):
    """psutil#2959 (cros_ec −273150) and lm-sensors#574 (nvme 65261850): neither is a limit."""
    vals, s, _, _ = sample(tree("field/sentinel_limits"))
    chan = {c.id: c for c in s.channels}
    for k in range(1, 5):
        meta = chan[f"hwmon.cros_ec.temp{k}"].meta
        assert "critical_c" not in meta and "max_c" not in meta
    assert "max_c" not in chan["hwmon.nvme.temp2"].meta
    assert chan["hwmon.nvme.temp1"].meta["max_c"] == pytest.approx(74.85)
    assert vals["hwmon.nvme.temp2"] == pytest.approx(81.85)  # the reading itself is real


def test_an_impossible_temperature_is_no_reading_and_an_event(tree):
    """netdata#23673: nct6793 temp15 = 3,892,313,987 m°C must never be the hottest sensor."""
    vals, s, events, _ = sample(tree("field/nct6793_bogus_temp"), ticks=3)
    assert vals["hwmon.nct6793.temp15"] is None
    temps = [v for c, v in zip(s.channels, s.latest(), strict=True) if c.kind == "temperature"]
    assert max(v for v in temps if v is not None) == 127.0
    bad = [e for e in events if e.kind == "implausible_reading"]
    assert len(bad) == 1  # once, however many ticks
    assert bad[0].payload["channel"] == "hwmon.nct6793.temp15"
    assert bad[0].payload["value"] == pytest.approx(3892313.987)


def test_other_placeholders_of_the_same_kinds(tmp_path):
    """An emulated NVMe at −273.15 °C, an ITE superio input at −128 °C (not connected), and a
    thermal zone whose critical trip is −273150: no reading, no limit."""
    root = tmp_path / "box"
    nvme = "sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/hwmon/hwmon1"
    write(root, f"{nvme}/name", "nvme")
    write(root, f"{nvme}/temp1_input", -273150)
    write(root, f"{nvme}/temp1_label", "Composite")
    ite = "sys/devices/platform/it87.2624/hwmon/hwmon2"
    write(root, f"{ite}/name", "it8686")
    write(root, f"{ite}/temp1_input", 38000)
    write(root, f"{ite}/temp3_input", -128000)
    write(root, f"{ite}/temp1_max", 127000)
    os.makedirs(root / "sys/class/hwmon")
    os.symlink(f"../../{nvme[4:]}", root / "sys/class/hwmon/hwmon1")
    os.symlink(f"../../{ite[4:]}", root / "sys/class/hwmon/hwmon2")
    zone = "sys/devices/virtual/thermal/thermal_zone0"
    write(root, f"{zone}/type", "x86_pkg_temp")
    write(root, f"{zone}/temp", 45000)
    write(root, f"{zone}/trip_point_0_type", "critical")
    write(root, f"{zone}/trip_point_0_temp", -273150)
    os.makedirs(root / "sys/class/thermal")
    os.symlink(f"../../{zone[4:]}", root / "sys/class/thermal/thermal_zone0")
    vals, s, events, _ = sample(root)
    assert vals["hwmon.nvme.temp1"] is None and vals["hwmon.it8686.temp3"] is None
    assert vals["hwmon.it8686.temp1"] == 38.0
    chan = {c.id: c for c in s.channels}
    assert "critical_c" not in chan["thermal.x86_pkg_temp"].meta
    assert {e.payload["channel"] for e in events if e.kind == "implausible_reading"} == {
        "hwmon.nvme.temp1",
        "hwmon.it8686.temp3",
    }


def test_plausibility_rules():
    assert plausible("temperature", 105.0) and plausible("temperature", -40.0)
    assert not plausible("temperature", -273.15) and not plausible("temperature", 3892313.987)
    assert not plausible("power", float("nan")) and not plausible("power", 1e6)
    assert plausible("energy", 1e12) and plausible("utilization", None)
    assert temperature_limit_c(-273150) is None and temperature_limit_c(65261850) is None
    assert temperature_limit_c(105000) == 105.0 and temperature_limit_c(None) is None


# -- kind 3: a meter that disappears says why ---------------------------------------------------


def test_gpu_whose_power_is_not_supported_is_named_uncovered(tmp_path):
    """NVIDIA/nvidia-docker#40: Quadro K2100M, power N/A, temperature works."""
    config = {"nvml_module": str(FAKES / "nvml_quadro_k2100m.py")}
    vals, s, _, sources = sample(tmp_path, config=config)
    gpu = next(x for x in sources if x.name == "nvml:0")
    assert gpu.available and "power not measured" in gpu.reason and "Not Supported" in gpu.reason
    assert vals["gpu0.temp"] == 55.0
    sp = s.system
    assert sp is not None
    assert any("GPU0" in u and "Not Supported" in u for u in sp.uncovered)
    sysch = next(c for c in s.channels if c.id == "system.power")
    assert any("GPU0" in u for u in sysch.meta["uncovered"])


def test_pi5_vcgencmd_without_group_video_says_how_to_fix(tree, monkeypatch):
    """A Pi 5 user outside group video: vcgencmd fails with "VCHI initialization failed"."""
    root = tree("rpi5")
    tool = root / "bin" / "vcgencmd"
    tool.write_text("#!/bin/sh\necho 'VCHI initialization failed' >&2\nexit 255\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{root / 'bin'}:{os.environ['PATH']}")
    _, s, _, sources = sample(root)
    rpi = next(x for x in sources if x.name == "rpi")
    text = rpi.reason + " ".join(rpi.missing)
    assert "PMIC power not measured" in text and "group video" in text
    assert s.system is not None
    assert any("group video" in u for u in s.system.uncovered)


# -- kind 4: one unreadable file costs only what it feeds ---------------------------------------


def test_rapl_without_max_energy_range_still_reads_energy(tree, monkeypatch):
    """pyJoules#13 listing + codecarbon#244 workaround: only package-0's energy_uj is readable."""
    root = tree("field/rapl_maxrange_denied")
    real = os.open

    def deny(path, *a, **k):
        p = str(path)
        if p.endswith("max_energy_range_uj") or (
            p.endswith("energy_uj") and ("intel-rapl:0:" in p or "intel-rapl:0/intel-rapl" in p)
        ):
            raise PermissionError(13, "Permission denied", p)
        return real(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    energy = root / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
    vals, s, _, sources = sample(root, ticks=3, between=lambda k: bump(energy, 20_000_000))
    rapl = next(x for x in sources if x.name == "rapl")
    assert rapl.available
    assert vals["rapl.package-0.power"] == pytest.approx(40.0)
    assert "max_energy_range_uj not readable" in rapl.reason and "262,143 J" in rapl.reason
    zone = rapl.zones[0]
    assert zone.counter is not None and zone.counter.range_j == pytest.approx(262143.32885)
    assert s.system is not None and s.system.channels == ("rapl.package-0.power",)


# -- kind 5: any locale -------------------------------------------------------------------------


def test_sensors_and_report_print_under_latin1(tree, tmp_path):
    """mhddos_proxy_releases#10: an ISO-8859-1 stdout over SSH; nothing may crash."""
    root = tree("field/latin1_locale")
    env = cli_env(root, PYTHONIOENCODING="iso-8859-1", LC_ALL="", LANG="en_US.ISO-8859-1")
    out = subprocess.run([*ANUBIS, "sensors"], env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"Traceback" not in out.stderr
    text = out.stdout.decode("iso-8859-1")
    assert "system power:" in text and "\\u" not in text
    rec = tmp_path / "r.msgpack"
    made = subprocess.run(
        [*ANUBIS, "record", "--no-model", "--duration", "1.5", "-o", str(rec)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    rep = subprocess.run([*ANUBIS, "report", str(rec)], env=env, capture_output=True, timeout=60)
    assert rep.returncode == 0 and b"Traceback" not in rep.stderr, rep.stderr
    assert rep.stdout.decode("iso-8859-1").strip()
    app = subprocess.run([*ANUBIS, "replay", str(rec)], env=env, capture_output=True, timeout=60)
    assert app.returncode == 2
    assert b"not UTF-8" in app.stderr and len(errors(app.stderr).strip().splitlines()) == 1


def test_ascii_stand_ins_replace_what_the_encoding_lacks():
    from anubis_tui.cli import encoding

    encoding.install()
    s = "✓ 45 °C Δ −2 % ≥ 1 µJ"
    assert s.encode("ascii", errors=encoding.HANDLER) == b"ok 45 degC d -2 % >= 1 uJ"
    assert s.encode("latin-1", errors=encoding.HANDLER) == "ok 45 °C d -2 % >= 1 µJ".encode(
        "latin-1"
    )


def ina3221(root: Path, bus_addr: str, rails: list[tuple[str, int, int]]) -> None:
    """An INA3221 as the mainline driver shows it (Documentation/hwmon/ina3221.rst): per channel
    in<k>_input (mV), curr<k>_input (mA) and in<k>_label; the device under i2c's ina3221 driver."""
    dev = f"sys/devices/platform/3160000.i2c/i2c-1/{bus_addr}"
    hw = f"{dev}/hwmon/hwmon{bus_addr[-1]}"
    write(root, f"{dev}/name", "ina3221")
    write(root, f"{hw}/name", "ina3221")
    for k, (label, mv, ma) in enumerate(rails, start=1):
        write(root, f"{hw}/in{k}_label", label)
        write(root, f"{hw}/in{k}_input", mv)
        write(root, f"{hw}/curr{k}_input", ma)
    drv = root / "sys/bus/i2c/drivers/ina3221"
    drv.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../../{dev[4:]}", drv / bus_addr)


def test_agx_xavier_sums_its_six_rails(tmp_path):
    """AGX Xavier (JetPack 5): GPU, CPU, SOC at 0x40 and CV, VDDRQ, SYS5V at 0x41, no VDD_IN;
    jtop's total is their sum (jetson_stats docs), so anubis's is too, labelled as such."""
    root = tmp_path / "xavier"
    write(root, "proc/device-tree/model", "Jetson-AGX")
    ina3221(root, "1-0040", [("GPU", 19104, 160), ("CPU", 19104, 320), ("SOC", 19104, 480)])
    ina3221(root, "1-0041", [("CV", 19104, 0), ("VDDRQ", 19104, 80), ("SYS5V", 4984, 1000)])
    vals, s, _, _ = sample(root)
    assert s.system is not None and s.system.tier == "module-rails"
    expected = 19.104 * (0.160 + 0.320 + 0.480 + 0.0 + 0.080) + 4.984 * 1.0
    assert vals["system.power"] == pytest.approx(expected, abs=1e-3)


def test_orin_nx_vdd_in_is_the_input_and_its_rails_sit_inside(tmp_path):
    """Orin NX/Nano (JetPack 6): VDD_IN, VDD_CPU_GPU_CV, VDD_SOC: only VDD_IN counts."""
    root = tmp_path / "orin-nx"
    write(
        root, "proc/device-tree/model", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    )
    ina3221(
        root,
        "1-0040",
        [("VDD_IN", 5000, 1600), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)],
    )
    vals, s, _, _ = sample(root)
    assert s.system is not None and s.system.tier == "board-input"
    assert vals["system.power"] == pytest.approx(8.0)
    r = roles(s.system)
    assert r["jetson.VDD_SOC.power"] == ("inside", "jetson.VDD_IN.power")
