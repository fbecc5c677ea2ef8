"""amdgpu and i915/xe sources on fake sysfs trees built from the drivers' documentation.

The trees come from tests/fixtures/gpu_trees/build.py (each field's source is named
there); gpu_metrics blobs are packed by hand there, independently of the reader's layouts.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anubis_tui.records import Channel, decode_flags
from anubis_tui.sources import amdgpu
from anubis_tui.sources.base import SysfsRoot, close_attrs
from anubis_tui.sources.registry import choose_system_power, discover
from tests.conftest import ROOT
from tests.fixtures.gpu_trees import build as gpu

GB = 1e9


class Machine:
    """Sources discovered on one tree, read at t=0 and (after `between`) at t=0.5 s."""

    def __init__(self, root: Path, between: Any = None) -> None:
        close_attrs()
        self.sources = discover(SysfsRoot(root), warn=lambda m: None)
        self.channels: dict[str, Channel] = {c.id: c for s in self.sources for c in s.channels}
        self.values: dict[str, Any] = {}
        for k, t in enumerate((0, 500_000_000)):
            if k == 1 and between is not None:
                between()
            for s in self.sources:
                for g in s.groups:
                    for c, v in zip(g.channels, g.read(t), strict=True):
                        if k == 1 or v is not None:
                            self.values[c.id] = v
        for s in self.sources:
            s.close()

    def source(self, prefix: str) -> Any:
        return next(s for s in self.sources if s.name.startswith(prefix))

    def flags(self, cid: str) -> list[str]:
        return decode_flags(self.channels[cid], self.values[cid])[0]

    def system(self) -> tuple[str, ...]:
        sp = choose_system_power(list(self.channels.values()))
        assert sp is not None
        return sp.channels


def make(tmp_path: Path, name: str) -> Path:
    return gpu.build(name, tmp_path / name)


def _bump(path: Path, delta: int) -> None:
    v = int(path.read_text())
    path.write_text(f"{v + delta}\n")


def test_hand_packed_layouts_match_the_reader():
    for fmt, version in ((gpu.FMT_V1_3, (1, 3)), (gpu.FMT_V2_1, (2, 1)), (gpu.FMT_V3_0, (3, 0))):
        assert struct.calcsize(fmt) == amdgpu.LAYOUTS[version].size
    v13 = amdgpu.LAYOUTS[(1, 3)].fields
    assert v13["energy_accumulator"][0] == 24 and v13["system_clock_counter"][0] == 32
    assert v13["throttle_status"][0] == 68 and v13["indep_throttle_status"][0] == 112
    # v1.0 and v2.0 are "not naturally aligned" (kgd_pp_interface.h): 4 pad bytes after the
    # header before the u64 counter, as a C compiler lays them out.
    assert struct.calcsize("<HBB4xQ6H3HHI7H7HIHBB4x") == amdgpu.LAYOUTS[(1, 0)].size == 80
    assert amdgpu.LAYOUTS[(1, 0)].fields["energy_accumulator"][:2] == (36, "I")
    assert struct.calcsize("<HBB4xQ2H8H2H2H4H8H6H6H8H2HIHH") == amdgpu.LAYOUTS[(2, 0)].size
    # v1.4 (MI300): energy at 24, 288 bytes in all
    assert amdgpu.LAYOUTS[(1, 4)].fields["energy_accumulator"][0] == 24
    assert amdgpu.LAYOUTS[(1, 4)].size == 288
    v30 = amdgpu.LAYOUTS[(3, 0)].fields
    assert v30["system_clock_counter"][0] == 104 and v30["average_apu_power"][0] == 120
    assert v30["throttle_residency_prochot"][0] == 228


def test_rdna3_discrete(tmp_path):
    m = Machine(make(tmp_path, "gpu_rdna3"))
    src = m.source("amdgpu:card1")
    assert src.available and "discrete GPU 0000:03:00.0, gpu_metrics v1.3" in src.reason
    v, ch = m.values, m.channels
    assert v["amdgpu.card1.power_avg"] == pytest.approx(299.0)
    assert ch["amdgpu.card1.power_avg"].scope == "gpu"
    assert "amdgpu.card1.power" not in v  # RDNA3 has no power1_input
    assert v["amdgpu.card1.temp_edge"] == 62.0 and ch["amdgpu.card1.temp_edge"].meta[
        "critical_c"
    ] == pytest.approx(100.0)
    assert v["amdgpu.card1.temp_junction"] == 84.0
    assert ch["amdgpu.card1.temp_junction"].meta["critical_c"] == pytest.approx(110.0)
    assert v["amdgpu.card1.temp_mem"] == 78.0
    assert v["amdgpu.card1.clock_gfx"] == pytest.approx(2412e6)
    assert v["amdgpu.card1.clock_mem"] == pytest.approx(1249e6)
    assert v["amdgpu.card1.busy"] == pytest.approx(0.99)
    assert v["amdgpu.card1.vram_used"] == 21045821440
    assert m.flags("amdgpu.card1.throttle") == ["power_cap"]
    caps = {k: v[f"amdgpu.card1.{k}"] for k in ("power_cap", "power_cap_min", "power_cap_max",
                                                 "power_cap_default")}  # fmt: skip
    assert caps == pytest.approx(
        {"power_cap": 300, "power_cap_min": 294, "power_cap_max": 327, "power_cap_default": 327}
    )
    assert all(ch[f"amdgpu.card1.{k}"].meta["is_limit"] for k in caps)
    # v1.3's accumulator: a counter with its (assumed) unit said, and no power of its own.
    e = ch["amdgpu.card1.energy"]
    assert e.method == "counter" and e.meta["unit_assumed"]
    assert v["amdgpu.card1.energy"] == pytest.approx(2893457000 % 2**32 * 2**-16)
    assert "amdgpu.card1.power_counter" not in ch
    assert not any(s.name.startswith("hwmon:amdgpu") for s in m.sources)  # read once, here
    assert "rapl.package-0.power" in m.system() and "amdgpu.card1.power_avg" in m.system()


def test_rdna2_power_input_sentinels_and_dpm_clocks(tmp_path):
    m = Machine(make(tmp_path, "gpu_rdna2"))
    v, ch = m.values, m.channels
    assert v["amdgpu.card0.power"] == pytest.approx(255.0)
    assert ch["amdgpu.card0.power"].method == "instant"
    assert v["amdgpu.card0.clock_gfx"] == pytest.approx(2250e6)  # pp_dpm_sclk "1: 2250Mhz *"
    assert ch["amdgpu.card0.clock_gfx"].meta["max_hz"] == pytest.approx(2575e6)
    assert v["amdgpu.card0.clock_mem"] == pytest.approx(1000e6)
    # 0xFFFF fields are no reading, never 65535 or 655.35.
    assert "amdgpu.card0.temp_mem" in ch and v["amdgpu.card0.temp_mem"] is None
    assert v["amdgpu.card0.temp_vrmem"] is None and v["amdgpu.card0.temp_vrgfx"] == 80.0
    for cid, x in v.items():
        assert x not in (65535, 65535.0, 655.35, 65.535, 6.5535e10), cid
    assert m.flags("amdgpu.card0.throttle") == ["thermal"]  # SMU_THROTTLER_TEMP_HOTSPOT_BIT
    assert "power_cap_default" not in " ".join(ch)  # the chip has no power1_cap_default


def test_phoenix_apu_package_is_not_added_to_rapl(tmp_path):
    m = Machine(make(tmp_path, "gpu_phoenix"))
    src = m.source("amdgpu:card0")
    assert "APU" in src.reason and "v2.1" in src.reason
    v, ch = m.values, m.channels
    ppt = ch["amdgpu.card0.power_avg"]
    assert ppt.scope == "apu-package" and v[ppt.id] == pytest.approx(28.0)
    gfx = ch["amdgpu.card0.gfx_power"]
    assert gfx.scope == "gpu-integrated" and gfx.meta["within"] == ppt.id
    assert v[gfx.id] == pytest.approx(12.5)  # 12500 mW
    assert v["amdgpu.card0.cpu_power"] == pytest.approx(9.0)
    assert v["amdgpu.card0.temp_edge"] == 61.5  # hwmon
    assert "amdgpu.card0.temp_gfx" not in ch  # the same GfxTemperature, shown once
    assert v["amdgpu.card0.temp_soc"] == pytest.approx(58.0)  # 5800 centi-°C
    assert v["amdgpu.card0.clock_gfx"] == pytest.approx(2700e6)  # gpu_metrics, no hwmon freq
    assert m.flags("amdgpu.card0.throttle") == ["power_cap"]  # THROTTLER_STATUS_BIT_SPL
    chosen = m.system()
    assert "rapl.package-0.power" in [c.id for c in ch.values()]
    assert "amdgpu.card0.power_avg" in chosen
    assert not any(c.startswith("rapl.") for c in chosen), chosen  # the CPU is inside the PPT


def test_strix_v3_residency_counters_and_socket_power(tmp_path):
    root = make(tmp_path, "gpu_strix")
    metrics = next(root.glob("sys/devices/**/gpu_metrics"))

    def advance() -> None:  # the SPL residency counter moves: power-limited now
        metrics.write_bytes(
            gpu.v3_0([0, 180, 0, 0, 0, 0, 0], gfx_t=5500, soc_t=5200, act=64, socket=33000,
                     apu=30000, gfx=14000, all_core=11000, gfxclk=2600, uclk=3750)
        )  # fmt: skip

    m = Machine(root, advance)
    v, ch = m.values, m.channels
    sock = ch["amdgpu.card1.power_socket"]
    assert sock.scope == "apu-package" and v[sock.id] == pytest.approx(33.0)
    assert v["amdgpu.card1.temp_edge"] == pytest.approx(55.0)  # hwmon; = temperature_gfx
    assert v["amdgpu.card1.temp_soc"] == pytest.approx(52.0)  # 5200 centi-°C
    assert v["amdgpu.card1.busy"] == pytest.approx(0.64)
    assert v["amdgpu.card1.clock_gfx"] == pytest.approx(2600e6)
    assert m.flags("amdgpu.card1.throttle") == ["power_cap"]
    assert decode_flags(ch["amdgpu.card1.throttle"], 0)[0] == []


def test_unknown_gpu_metrics_revision_is_one_line_and_no_crash(tmp_path):
    root = make(tmp_path, "gpu_unknown_metrics")
    m = Machine(root)
    src = m.source("amdgpu:card0")
    assert src.available and m.values["amdgpu.card0.power_avg"] == pytest.approx(150.0)
    assert "gpu_metrics v1.9 is a revision anubis does not know" in src.reason
    assert "\n" not in src.reason and "amdgpu.card0.throttle" not in m.channels
    env = {**os.environ, "ANUBIS_SYSFS_ROOT": str(root), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "anubis_tui", "sensors"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("✓ amdgpu:card0"))
    assert "v1.9" in line and "not decoded" in line


def test_short_gpu_metrics_is_a_reason(tmp_path):
    root = make(tmp_path, "gpu_rdna3")
    metrics = next(root.glob("sys/devices/**/gpu_metrics"))
    metrics.write_bytes(metrics.read_bytes()[:60])
    m = Machine(root)
    assert "is 60 bytes, its struct is 120" in m.source("amdgpu:card1").reason
    assert m.values["amdgpu.card1.power_avg"] == pytest.approx(299.0)


def test_arc_a770_on_i915(tmp_path):
    root = make(tmp_path, "gpu_arc_a770")
    energy = next(root.glob("sys/devices/**/hwmon3/energy1_input"))
    m = Machine(root, lambda: _bump(energy, 95_000_000))  # 95 J in 0.5 s
    v, ch = m.values, m.channels
    assert m.source("i915:card0").reason.startswith("discrete GPU 0000:03:00.0 on i915")
    assert v["i915.card0.energy_card"] == pytest.approx(1384221.905012 + 95)
    assert v["i915.card0.power_card"] == pytest.approx(190.0)
    assert ch["i915.card0.power_card"].meta["energy_channel"] == "i915.card0.energy_card"
    assert v["i915.card0.power1_max"] == pytest.approx(190.0)
    assert v["i915.card0.power1_rated_max"] == pytest.approx(225.0)
    assert ch["i915.card0.power1_max"].meta["is_limit"]
    assert v["i915.card0.gt0.clock_actual"] == pytest.approx(2050e6)
    assert v["i915.card0.gt0.clock_requested"] == pytest.approx(2400e6)
    assert m.flags("i915.card0.gt0.throttle") == ["power_cap"]
    assert not [c for c in ch.values() if c.source.startswith("i915") and c.kind == "temperature"]
    assert "i915.card0.power_card" in m.system()


def test_battlemage_on_xe_card_and_package_meters(tmp_path):
    root = make(tmp_path, "gpu_battlemage")
    hw = next(root.glob("sys/devices/**/hwmon2"))
    m = Machine(root, lambda: (_bump(hw / "energy1_input", 80_000_000),
                               _bump(hw / "energy2_input", 60_000_000)))  # fmt: skip
    v, ch = m.values, m.channels
    card, pkg = ch["xe.card0.power_card"], ch["xe.card0.power_pkg"]
    assert v[card.id] == pytest.approx(160.0) and v[pkg.id] == pytest.approx(120.0)
    assert pkg.meta["within"] == card.id and card.meta["domain"] != pkg.meta["domain"]
    chosen = m.system()
    assert card.id in chosen and pkg.id not in chosen
    assert v["xe.card0.temp_pkg"] == 71.0 and v["xe.card0.temp_vram"] == 74.0
    assert v["xe.card0.power1_max"] == pytest.approx(190.0)
    assert v["xe.card0.power2_max"] == pytest.approx(150.0)
    assert v["xe.card0.gt0.clock_actual"] == pytest.approx(2650e6)
    assert v["xe.card0.gt0.clock_requested"] == pytest.approx(2850e6)
    assert m.flags("xe.card0.gt0.throttle") == ["thermal"]


def test_integrated_xe_without_hwmon_reports_clocks_and_throttle_only(tmp_path):
    m = Machine(make(tmp_path, "gpu_lunar_lake"))
    src = m.source("xe:card0")
    assert src.available and "integrated GPU 0000:00:02.0" in src.reason
    assert "no hwmon power meter" in src.reason and not src.missing
    ours = [c for c in m.channels.values() if c.source == "xe:card0"]
    assert not [c for c in ours if c.kind in ("power", "energy")]
    assert m.values["xe.card0.gt0.clock_actual"] == pytest.approx(1950e6)
    assert m.values["xe.card0.gt1.clock_actual"] == pytest.approx(1000e6)  # the media GT
    assert m.flags("xe.card0.gt0.throttle") == []


def test_sensors_json_on_the_rdna3_tree(tmp_path):
    root = make(tmp_path, "gpu_rdna3")
    env = {**os.environ, "ANUBIS_SYSFS_ROOT": str(root), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "anubis_tui", "sensors", "--json"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    src = next(s for s in doc["sources"] if s["name"] == "amdgpu:card1")
    thr = next(c for c in src["channels"] if c["id"] == "amdgpu.card1.throttle")
    assert thr["flags_active"] == ["power_cap"]
    assert doc["system_power"]["value"] == pytest.approx(299 + 0, abs=400)


def test_apu_without_gpu_metrics_is_still_a_package_meter(tmp_path):
    root = make(tmp_path, "gpu_phoenix")
    next(root.glob("sys/devices/**/gpu_metrics")).unlink()
    m = Machine(root)
    ppt = m.channels["amdgpu.card0.power_avg"]
    assert ppt.scope == "apu-package"  # behind 00:08.1, no junction/mem/mclk: not a dGPU
    assert not any(c.startswith("rapl.") for c in m.system())


def test_van_gogh_v2_2_uses_the_asic_independent_bits(tmp_path):
    root = make(tmp_path, "gpu_phoenix")
    metrics = next(root.glob("sys/devices/**/gpu_metrics"))
    body = gpu.v2_1(gfx_t=7000, socket=15000, throttle=0xFFFF)[4:]  # dependent bits: ignored
    indep = (1 << 33) | (1 << 46)  # TEMP_CORE, PROCHOT_CPU
    metrics.write_bytes(struct.pack("<HBB", 128, 2, 2) + body + struct.pack("<Q", indep))
    m = Machine(root)
    assert "gpu_metrics v2.2" in m.source("amdgpu:card0").reason
    assert sorted(m.flags("amdgpu.card0.throttle")) == ["hw_slowdown", "thermal"]
    assert m.values["amdgpu.card0.temp_soc"] is None  # 0xFFFF


FAKE_AMDSMI = """
import enum
class AmdSmiException(Exception):
    pass
class AmdSmiTemperatureType(enum.IntEnum):
    EDGE = 0
    HOTSPOT = 1
    VRAM = 2
class AmdSmiTemperatureMetric(enum.IntEnum):
    CURRENT = 0
class AmdSmiClkType(enum.IntEnum):
    GFX = 0
ENERGY = [2_000_000]
def amdsmi_init(*a): pass
def amdsmi_shut_down(): pass
def amdsmi_get_processor_handles(): return ["h0"]
def amdsmi_get_gpu_device_bdf(h): return "0000:03:00.0"
def amdsmi_get_power_info(h):
    return {"current_socket_power": "N/A", "average_socket_power": 299, "power_limit": 300}
def amdsmi_get_energy_count(h):
    ENERGY[0] += 9_773_000  # 149.5 J a read, at 15.3 µJ a count
    return {"energy_accumulator": ENERGY[0], "counter_resolution": 15.3, "timestamp": 0}
def amdsmi_get_temp_metric(h, t, m):
    if t == AmdSmiTemperatureType.VRAM:
        raise AmdSmiException("not supported")
    return {0: 62, 1: 84}[int(t)]
def amdsmi_get_clock_info(h, c): return {"clk": 2412, "min_clk": 500, "max_clk": 2600}
def amdsmi_get_gpu_activity(h): return {"gfx_activity": 99, "umc_activity": "N/A"}
"""


def _amdsmi_plugin() -> Any:
    sys.path.insert(0, str(ROOT / "plugins" / "anubis-amdsmi"))
    try:
        import anubis_amdsmi
    finally:
        sys.path.pop(0)
    return anubis_amdsmi


def test_amdsmi_plugin_absent_is_a_reason(monkeypatch):
    plugin = _amdsmi_plugin()
    monkeypatch.setenv("ANUBIS_AMDSMI_MODULE", "anubis_no_such_amdsmi")
    from anubis_tui.sources.base import DiscoveryContext

    (src,) = plugin.AmdSmiSource.discover(DiscoveryContext(root=SysfsRoot("/nonexistent")))
    assert not src.available and src.reason.startswith("amdsmi is not usable here")


def test_amdsmi_plugin_reads_the_gpu_and_system_power_counts_it_once(tmp_path, monkeypatch):
    plugin = _amdsmi_plugin()
    fake = tmp_path / "fake_amdsmi.py"
    fake.write_text(FAKE_AMDSMI)
    monkeypatch.setenv("ANUBIS_AMDSMI_MODULE", str(fake))
    from anubis_tui.sources.base import DiscoveryContext

    root = make(tmp_path, "gpu_rdna3")
    close_attrs()
    ctx = DiscoveryContext(root=SysfsRoot(root))
    ctx.found = discover(SysfsRoot(root), warn=lambda m: None)
    (src,) = plugin.AmdSmiSource.discover(ctx)
    assert src.available and src.reason == "GPU 0000:03:00.0 through amdsmi"
    (g,) = src.groups
    g.read(0)
    vals = dict(zip((c.id for c in g.channels), g.read(1_000_000_000), strict=True))
    assert vals["amdsmi.0.power"] == 299.0  # average_socket_power; "N/A" skipped
    assert vals["amdsmi.0.temp_edge"] == 62.0 and vals["amdsmi.0.temp_junction"] == 84.0
    assert "amdsmi.0.temp_mem" not in vals  # not supported: no channel
    assert vals["amdsmi.0.clock_gfx"] == pytest.approx(2412e6)
    assert vals["amdsmi.0.busy"] == pytest.approx(0.99)
    assert vals["amdsmi.0.power_counter"] == pytest.approx(149.5269, rel=1e-3)
    chans = [c for s in ctx.found for c in s.channels] + g.channels
    sp = choose_system_power(chans)
    assert sp is not None
    gpu_parts = [c for c in sp.channels if c.startswith(("amdsmi.", "amdgpu."))]
    assert len(gpu_parts) == 1, sp.channels  # one domain, gpu:0000:03:00.0, counted once


def test_dpm_levels_with_a_deep_sleep_line(tmp_path):
    p = tmp_path / "pp_dpm_sclk"
    p.write_text("S: 19Mhz *\n0: 800Mhz\n1: 2700Mhz\n")
    assert amdgpu._dpm_current(p) == pytest.approx(19e6)
    assert amdgpu._dpm_max(p) == {"max_hz": pytest.approx(2700e6)}
    p.write_text("0: 800Mhz\n1: 2700Mhz\n")  # no level marked: no reading
    assert amdgpu._dpm_current(p) is None


def test_apu_known_by_its_cpu_model_without_gpu_metrics_or_bridge(tmp_path):
    root = make(tmp_path, "gpu_unknown_metrics")  # a card behind 00:01.1, no junction/mem
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        "model name\t: AMD Ryzen 7 7840U w/ Radeon 780M Graphics\n"
    )
    m = Machine(root)
    assert m.channels["amdgpu.card0.power_avg"].scope == "apu-package"
    (root / "proc/cpuinfo").write_text("model name\t: AMD Ryzen 9 5950X 16-Core Processor\n")
    assert Machine(root).channels["amdgpu.card0.power_avg"].scope == "gpu"


@pytest.mark.parametrize("name", sorted(gpu.MACHINES))
def test_committed_trees_are_what_the_builder_makes(tmp_path, name):
    """tests/fixtures/<name> is committed for ANUBIS_SYSFS_ROOT use; it must not drift."""

    def listing(root: Path) -> dict[str, tuple[str, bytes]]:
        out = {}
        for dirpath, dirs, files in os.walk(root):
            for n in dirs + files:
                p = Path(dirpath) / n
                rel = str(p.relative_to(root))
                if p.is_symlink():
                    out[rel] = ("link", os.readlink(p).encode())
                elif p.is_file():
                    out[rel] = ("file", p.read_bytes())
        return out

    committed = ROOT / "tests" / "fixtures" / name
    assert listing(committed) == listing(make(tmp_path, name)), (
        f"rebuild with: python -m tests.fixtures.gpu_trees.build ({name})"
    )
