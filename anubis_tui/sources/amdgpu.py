"""AMD GPUs, discrete and APU, through amdgpu's hwmon chip and its device sysfs files.

What is read, per ``/sys/class/drm/cardN`` whose driver is amdgpu (sources:
the kernel's ``Documentation/gpu/amdgpu/thermal.rst``, which renders the
``hwmon``, ``pp_dpm_*``, ``gpu_busy_percent`` and ``gpu_metrics`` DOC blocks of
``drivers/gpu/drm/amd/pm/amdgpu_pm.c``; the ``gpu_metrics_v*`` structs of
``drivers/gpu/drm/amd/include/kgd_pp_interface.h``; the throttler bits of
``drivers/gpu/drm/amd/pm/swsmu/inc/amdgpu_smu.h``):

* power: hwmon ``power1_average`` (µW, the SMU's averaged socket power; the
  only one RDNA3 has) and ``power1_input`` (µW, instantaneous) where present;
  "On APUs this includes the CPU": an APU's meter is its package (scope
  ``apu-package``), a discrete card's is its own branch (``gpu``).
* energy: ``gpu_metrics`` ``energy_accumulator`` where the format has one
  (v1.x), in units of 2^-16 J (15.259 µJ: documented in the v1.4+ structs;
  v1.0–v1.3 fill it from the SMU's 32-bit accumulator, so it wraps at 2^32
  counts = 65536 J).
* temperatures by hwmon label (``edge``, ``junction``, ``mem``) with
  ``tempN_crit`` as the limit; placeholders (-273150 m°C) are no reading.
* clocks: hwmon ``freq1_input``/``freq2_input`` (Hz, labels ``sclk``/``mclk``),
  else the ``*`` level of ``pp_dpm_sclk``/``pp_dpm_mclk``, else gpu_metrics.
* ``gpu_busy_percent``, ``mem_busy_percent`` (%), ``mem_info_vram_used`` (bytes).
* power caps: hwmon ``power1_cap``, ``power1_cap_min``, ``power1_cap_max``,
  ``power1_cap_default`` (µW), as limit channels.
* ``gpu_metrics``: decoded by its header's format and content revision
  (v1.0–v1.6 discrete, v2.0–v2.4 APU, v3.0 APU); every all-ones field
  (0xFFFF, 0xFFFFFFFF: the driver fills the table with 0xFF before writing
  what the firmware has) is no reading; units per revision (v1: °C, W, %;
  v2: centi-°C, mW, centi-%; v3.0: centi-°C, mW, %). Throttling from
  ``indep_throttle_status`` (ASIC-independent SMU_THROTTLER_* bits, v1.3,
  v2.2+), else the APU ``throttle_status`` bits of
  ``smu13_driver_if_v13_0_4.h`` (v2.0/v2.1), else v3.0's throttle residency
  counters (a counter that advanced since the last read is an active reason).
  An unknown revision is one line in the source's reason; nothing is decoded.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.errors import AnubisError
from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import (
    PLACEHOLDER_MILLIDEG,
    DiscoveryContext,
    EnergyCounter,
    ReadGroup,
    Source,
    hwmon_inputs,
    read_int,
    read_label,
    read_text,
    readable,
    slug,
)
from anubis_tui.sources.drm import DrmCard, drm_cards

POWER_PERIOD_S = 0.1  # the SMU metrics table the driver caches refreshes every ~1 ms
STATE_PERIOD_S = 0.25
LIMIT_PERIOD_S = 2.0
ENERGY_UNIT_J = 2.0**-16  # "Energy (15.259uJ (2^-16) units)", gpu_metrics_v1_4+
ENERGY_WRAP_COUNTS = 2**32  # v1.0-v1.3: the SMU's u32 EnergyAccumulator
TEMP_LIMITS = (("critical_c", "crit"), ("emergency_c", "emergency"))  # hwmon tempN_* (m°C)

# -- gpu_metrics layouts (kgd_pp_interface.h) ------------------------------------------------

_H = [("structure_size", "H", 1), ("format_revision", "B", 1), ("content_revision", "B", 1)]
_T6 = [(f"temperature_{n}", "H", 1) for n in ("edge", "hotspot", "mem", "vrgfx", "vrsoc", "vrmem")]
_A3 = [("average_gfx_activity", "H", 1), ("average_umc_activity", "H", 1),
       ("average_mm_activity", "H", 1)]  # fmt: skip
_CLK7 = [f"{x}_frequency" for x in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0", "vclk1", "dclk1")]
_AVG7 = [(f"average_{c}", "H", 1) for c in _CLK7]
_CUR7 = [(f"current_{c}", "H", 1) for c in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0",
                                            "vclk1", "dclk1")]  # fmt: skip

V1_0 = [*_H, ("system_clock_counter", "Q", 1), *_T6, *_A3, ("average_socket_power", "H", 1),
        ("energy_accumulator", "I", 1), *_AVG7, *_CUR7, ("throttle_status", "I", 1),
        ("current_fan_speed", "H", 1), ("pcie_link_width", "B", 1),
        ("pcie_link_speed", "B", 1)]  # fmt: skip
V1_1 = [*_H, *_T6, *_A3, ("average_socket_power", "H", 1), ("energy_accumulator", "Q", 1),
        ("system_clock_counter", "Q", 1), *_AVG7, *_CUR7, ("throttle_status", "I", 1),
        ("current_fan_speed", "H", 1), ("pcie_link_width", "H", 1), ("pcie_link_speed", "H", 1),
        ("padding", "H", 1), ("gfx_activity_acc", "I", 1), ("mem_activity_acc", "I", 1),
        ("temperature_hbm", "H", 4)]  # fmt: skip
V1_2 = [*V1_1, ("firmware_timestamp", "Q", 1)]
V1_3 = [*V1_2, ("voltage_soc", "H", 1), ("voltage_gfx", "H", 1), ("voltage_mem", "H", 1),
        ("padding1", "H", 1), ("indep_throttle_status", "Q", 1)]  # fmt: skip


def _v1_4(jpeg: bool, residency: bool, nak: bool) -> list[tuple[str, str, int]]:
    """gpu_metrics_v1_4 (MI300), v1_5 (+ jpeg_activity, NAK counts), v1_6 (+ residencies)."""
    out = [*_H, ("temperature_hotspot", "H", 1), ("temperature_mem", "H", 1),
           ("temperature_vrsoc", "H", 1), ("curr_socket_power", "H", 1),
           ("average_gfx_activity", "H", 1), ("average_umc_activity", "H", 1),
           ("vcn_activity", "H", 4)]  # fmt: skip
    if jpeg:
        out.append(("jpeg_activity", "H", 32))
    out += [("energy_accumulator", "Q", 1), ("system_clock_counter", "Q", 1)]
    if residency:
        out += [(n, "I", 1) for n in ("accumulation_counter", "prochot_residency_acc",
                                      "ppt_residency_acc", "socket_thm_residency_acc",
                                      "vr_thm_residency_acc", "hbm_thm_residency_acc")]  # fmt: skip
    out += [("throttle_status", "I", 1), ("gfxclk_lock_status", "I", 1),
            ("pcie_link_width", "H", 1), ("pcie_link_speed", "H", 1),
            ("xgmi_link_width", "H", 1), ("xgmi_link_speed", "H", 1),
            ("gfx_activity_acc", "I", 1), ("mem_activity_acc", "I", 1),
            ("pcie_bandwidth_acc", "Q", 1), ("pcie_bandwidth_inst", "Q", 1),
            ("pcie_l0_to_recov_count_acc", "Q", 1), ("pcie_replay_count_acc", "Q", 1),
            ("pcie_replay_rover_count_acc", "Q", 1)]  # fmt: skip
    if nak:
        out += [("pcie_nak_sent_count_acc", "I", 1), ("pcie_nak_rcvd_count_acc", "I", 1)]
    out += [("xgmi_read_data_acc", "Q", 8), ("xgmi_write_data_acc", "Q", 8),
            ("firmware_timestamp", "Q", 1), ("current_gfxclk", "H", 8),
            ("current_socclk", "H", 4), ("current_vclk0", "H", 4), ("current_dclk0", "H", 4),
            ("current_uclk", "H", 1), ("padding", "H", 1)]  # fmt: skip
    return out


_APU_T = [("temperature_gfx", "H", 1), ("temperature_soc", "H", 1),
          ("temperature_core", "H", 8), ("temperature_l3", "H", 2)]  # fmt: skip
_APU_A = [("average_gfx_activity", "H", 1), ("average_mm_activity", "H", 1)]
_APU_P = [("average_socket_power", "H", 1), ("average_cpu_power", "H", 1),
          ("average_soc_power", "H", 1), ("average_gfx_power", "H", 1),
          ("average_core_power", "H", 8)]  # fmt: skip
_APU_C = [(f"average_{c}_frequency", "H", 1) for c in ("gfxclk", "socclk", "uclk", "fclk",
                                                         "vclk", "dclk")] + [
    (f"current_{c}", "H", 1) for c in ("gfxclk", "socclk", "uclk", "fclk", "vclk", "dclk")
] + [("current_coreclk", "H", 8), ("current_l3clk", "H", 2)]  # fmt: skip
V2_0 = [*_H, ("system_clock_counter", "Q", 1), *_APU_T, *_APU_A, *_APU_P, *_APU_C,
        ("throttle_status", "I", 1), ("fan_pwm", "H", 1), ("padding", "H", 1)]  # fmt: skip
V2_1 = [*_H, *_APU_T, *_APU_A, ("system_clock_counter", "Q", 1), *_APU_P, *_APU_C,
        ("throttle_status", "I", 1), ("fan_pwm", "H", 1), ("padding", "H", 3)]  # fmt: skip
V2_2 = [*V2_1, ("indep_throttle_status", "Q", 1)]
V2_3 = [*V2_2, ("average_temperature_gfx", "H", 1), ("average_temperature_soc", "H", 1),
        ("average_temperature_core", "H", 8), ("average_temperature_l3", "H", 2)]  # fmt: skip
V2_4 = [
    *V2_3,
    *[
        (f"average_{x}", "H", 1)
        for x in (
            "cpu_voltage",
            "soc_voltage",
            "gfx_voltage",
            "cpu_current",
            "soc_current",
            "gfx_current",
        )
    ],
]
V3_RESIDENCY = ("prochot", "spl", "fppt", "sppt", "thm_core", "thm_gfx", "thm_soc")
V3_0 = [*_H, ("temperature_gfx", "H", 1), ("temperature_soc", "H", 1),
        ("temperature_core", "H", 16), ("temperature_skin", "H", 1),
        ("average_gfx_activity", "H", 1), ("average_vcn_activity", "H", 1),
        ("average_ipu_activity", "H", 8), ("average_core_c0_activity", "H", 16),
        ("average_dram_reads", "H", 1), ("average_dram_writes", "H", 1),
        ("average_ipu_reads", "H", 1), ("average_ipu_writes", "H", 1),
        ("system_clock_counter", "Q", 1), ("average_socket_power", "I", 1),
        ("average_ipu_power", "H", 1), ("average_apu_power", "I", 1),
        ("average_gfx_power", "I", 1), ("average_dgpu_power", "I", 1),
        ("average_all_core_power", "I", 1), ("average_core_power", "H", 16),
        ("average_sys_power", "H", 1), ("stapm_power_limit", "H", 1),
        ("current_stapm_power_limit", "H", 1),
        *[(f"average_{c}_frequency", "H", 1) for c in ("gfxclk", "socclk", "vpeclk", "ipuclk",
                                                         "fclk", "vclk", "uclk", "mpipu")],
        ("current_coreclk", "H", 16), ("current_core_maxfreq", "H", 1),
        ("current_gfx_maxfreq", "H", 1),
        *[(f"throttle_residency_{r}", "I", 1) for r in V3_RESIDENCY],
        ("time_filter_alphavalue", "I", 1)]  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """One gpu_metrics revision: field → (offset, struct code, count); units of its family."""

    version: tuple[int, int]
    fields: dict[str, tuple[int, str, int]]
    size: int
    temp_scale: float  # to °C
    power_scale: float  # to W
    activity_scale: float  # to a 0..1 ratio
    apu: bool


def _layout(
    version: tuple[int, int], spec: list[tuple[str, str, int]], temp: float, power: float,
    activity: float, apu: bool,
) -> Layout:  # fmt: skip
    """C's natural alignment, as the kernel's (unpacked) structs have it on every ABI it runs."""
    off = 0
    fields: dict[str, tuple[int, str, int]] = {}
    biggest = 1
    for name, code, count in spec:
        size = struct.calcsize("<" + code)
        biggest = max(biggest, size)
        off = (off + size - 1) // size * size
        fields[name] = (off, code, count)
        off += size * count
    off = (off + biggest - 1) // biggest * biggest
    return Layout(version, fields, off, temp, power, activity, apu)


LAYOUTS: dict[tuple[int, int], Layout] = {
    v: _layout(v, spec, t, p, a, apu)
    for v, spec, t, p, a, apu in (
        ((1, 0), V1_0, 1.0, 1.0, 0.01, False),
        ((1, 1), V1_1, 1.0, 1.0, 0.01, False),
        ((1, 2), V1_2, 1.0, 1.0, 0.01, False),
        ((1, 3), V1_3, 1.0, 1.0, 0.01, False),
        ((1, 4), _v1_4(False, False, False), 1.0, 1.0, 0.01, False),
        ((1, 5), _v1_4(True, False, True), 1.0, 1.0, 0.01, False),
        ((1, 6), _v1_4(True, True, True), 1.0, 1.0, 0.01, False),
        ((2, 0), V2_0, 0.01, 1e-3, 1e-4, True),
        ((2, 1), V2_1, 0.01, 1e-3, 1e-4, True),
        ((2, 2), V2_2, 0.01, 1e-3, 1e-4, True),
        ((2, 3), V2_3, 0.01, 1e-3, 1e-4, True),
        ((2, 4), V2_4, 0.01, 1e-3, 1e-4, True),
        ((3, 0), V3_0, 0.01, 1e-3, 0.01, True),
    )
}

_ALL_ONES = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}

# -- throttle reasons ---------------------------------------------------------------------------

# SMU_THROTTLER_*_BIT (amdgpu_smu.h) → the canonical name (NVML's where it means the same:
# power_cap, thermal, hw_slowdown), the SMU's own name kept in meta["reasons"].
SMU_THROTTLER: dict[int, tuple[str, str]] = {
    0: ("PPT0", "power_cap"), 1: ("PPT1", "power_cap"), 2: ("PPT2", "power_cap"),
    3: ("PPT3", "power_cap"), 4: ("SPL", "power_cap"), 5: ("FPPT", "power_cap"),
    6: ("SPPT", "power_cap"), 7: ("SPPT_APU", "power_cap"),
    16: ("TDC_GFX", "current_limit"), 17: ("TDC_SOC", "current_limit"),
    18: ("TDC_MEM", "current_limit"), 19: ("TDC_VDD", "current_limit"),
    20: ("TDC_CVIP", "current_limit"), 21: ("EDC_CPU", "current_limit"),
    22: ("EDC_GFX", "current_limit"), 23: ("APCC", "current_limit"),
    32: ("TEMP_GPU", "thermal"), 33: ("TEMP_CORE", "thermal"), 34: ("TEMP_MEM", "thermal"),
    35: ("TEMP_EDGE", "thermal"), 36: ("TEMP_HOTSPOT", "thermal"), 37: ("TEMP_SOC", "thermal"),
    38: ("TEMP_VR_GFX", "thermal"), 39: ("TEMP_VR_SOC", "thermal"),
    40: ("TEMP_VR_MEM0", "thermal"), 41: ("TEMP_VR_MEM1", "thermal"),
    42: ("TEMP_LIQUID0", "thermal"), 43: ("TEMP_LIQUID1", "thermal"),
    44: ("VRHOT0", "thermal"), 45: ("VRHOT1", "thermal"),
    46: ("PROCHOT_CPU", "hw_slowdown"), 47: ("PROCHOT_GFX", "hw_slowdown"),
    56: ("PPM", "reliability"), 57: ("FIT", "reliability"),
}  # fmt: skip
# APU THROTTLER_STATUS_BIT_* (smu12 Renoir, smu13 v13_0_1/4/5 driver_if headers): bits 0-8
# mean the same on every one; 9 and up differ (PROCHOT or TDC_GFX), so they stay unnamed.
APU_THROTTLER: dict[int, tuple[str, str]] = {
    0: ("SPL", "power_cap"), 1: ("FPPT", "power_cap"), 2: ("SPPT", "power_cap"),
    3: ("SPPT_APU", "power_cap"), 4: ("THM_CORE", "thermal"), 5: ("THM_GFX", "thermal"),
    6: ("THM_SOC", "thermal"), 7: ("TDC_VDD", "current_limit"),
    8: ("TDC_SOC", "current_limit"),
}  # fmt: skip
V3_THROTTLER: dict[int, tuple[str, str]] = {
    0: ("PROCHOT", "hw_slowdown"), 1: ("SPL", "power_cap"), 2: ("FPPT", "power_cap"),
    3: ("SPPT", "power_cap"), 4: ("THM_CORE", "thermal"), 5: ("THM_GFX", "thermal"),
    6: ("THM_SOC", "thermal"),
}  # fmt: skip


def throttle_meta(table: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """A throttle channel's meta: canonical ``flags`` and the driver's own ``reasons``."""
    return {
        "flags": {1 << bit: canon for bit, (_, canon) in table.items()},
        "reasons": {str(1 << bit): own for bit, (own, _) in table.items()},
    }


# -- gpu_metrics decoding ---------------------------------------------------------------------


class MetricsError(AnubisError):
    """gpu_metrics cannot be decoded; the message is one line for `anubis sensors`."""


def header(raw: bytes) -> tuple[int, int, int]:
    """(structure_size, format_revision, content_revision) of a gpu_metrics blob."""
    if len(raw) < 4:
        raise MetricsError(f"gpu_metrics is {len(raw)} bytes, shorter than its header")
    size, fmt, content = struct.unpack_from("<HBB", raw, 0)
    return size, fmt, content


def layout_for(raw: bytes) -> Layout:
    """The Layout of `raw` by its header; MetricsError for an unknown revision or a short file."""
    _size, fmt, content = header(raw)
    lay = LAYOUTS.get((fmt, content))
    if lay is None:
        known = ", ".join(f"v{a}.{b}" for a, b in LAYOUTS)
        raise MetricsError(
            f"gpu_metrics v{fmt}.{content} is a revision anubis does not know ({known}): "
            "not decoded"
        )
    if len(raw) < lay.size:
        raise MetricsError(
            f"gpu_metrics v{fmt}.{content} is {len(raw)} bytes, its struct is {lay.size}: "
            "not decoded"
        )
    return lay


def field_value(raw: bytes, lay: Layout, name: str, index: int = 0) -> int | None:
    """The raw integer of one field (element `index` of an array); None if absent or all-ones."""
    f = lay.fields.get(name)
    if f is None:
        return None
    off, code, count = f
    if index >= count:
        return None
    size = struct.calcsize("<" + code)
    (v,) = struct.unpack_from("<" + code, raw, off + index * size)
    return None if v == _ALL_ONES[code] else int(v)


def _scaled(raw: bytes, lay: Layout, name: str, scale: float, kind: str) -> float | None:
    v = field_value(raw, lay, name)
    if v is None:
        return None
    x = v * scale
    return x if _sane(kind, x) else None


def _sane(kind: str, x: float) -> bool:
    """Whether `x` (SI units) can be a GPU reading of `kind`.

    A centi-°C field read as °C lands 100x too high, an all-ones field that
    slipped through lands far out: both are no reading.
    """
    if x != x or x in (float("inf"), float("-inf")):
        return False
    if kind == "temperature":
        return -40.0 <= x <= 150.0
    if kind == "frequency":
        return 0.0 <= x <= 10e9
    if kind == "power":
        return 0.0 <= x <= 1500.0
    if kind == "utilization":
        return 0.0 <= x <= 1.0
    if kind == "voltage":
        return 0.0 <= x <= 5.0
    return True


class MetricsFile:
    """The binary ``gpu_metrics`` attribute, kept open and read with one ``pread``."""

    MAX = 4096

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def read(self) -> bytes:
        """The whole table (at most `MAX` bytes) from offset 0; reopens once after a failed read.

        OSError (PermissionError included) propagates: discovery turns it into a reason,
        the sampler into no reading.
        """
        if self.fd is not None:
            try:
                return os.pread(self.fd, self.MAX, 0)
            except OSError:
                self.close()
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        return os.pread(self.fd, self.MAX, 0)

    def close(self) -> None:
        """Close the kept descriptor (errors ignored)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


# -- the source ---------------------------------------------------------------------------------


@dataclass
class _Reader:
    """One channel's reading: a function of (t_ns, gpu_metrics blob or None)."""

    channel: Channel
    fn: Any


@dataclass
class AmdgpuSource(Source):
    """One amdgpu card (discrete or APU): its power, energy, temperatures, clocks, busy
    ratios, VRAM, power caps and throttle reasons, from hwmon, the device's sysfs files
    and ``gpu_metrics`` (module docstring: which file gives what, in which unit).

    Unavailable, with the reason, when no attribute of the card reads; a card
    without any power reading is named in `missing`.
    """

    order: ClassVar[int] = 12
    card: DrmCard | None = None
    metrics: MetricsFile | None = None
    apu: bool = False
    cpu_model: str = ""

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source per amdgpu card under ``/sys/class/drm`` (`drm_cards`); one unavailable
        source with the reason when there is none."""
        cards = drm_cards(ctx.root, ("amdgpu",), ("amdgpu",))
        if not cards:
            return [cls(name="amdgpu", reason="no amdgpu GPU under /sys/class/drm or hwmon")]
        out: list[Source] = []
        for card in cards:
            src = cls(name=f"amdgpu:{card.name}", card=card, cpu_model=_cpu_model(ctx))
            src._setup()
            out.append(src)
        return out

    # -- discovery of one card ----------------------------------------------------------------

    def _setup(self) -> None:
        card = self.card
        assert card is not None
        notes: list[str] = []
        blob, lay = self._open_metrics(card, notes)
        self.apu = lay.apu if lay is not None else _looks_like_apu(card, card.hwmon, self.cpu_model)
        b = _CardBuild(self.name, card, self.apu, blob, lay)
        b.power()
        b.energy()
        b.apu_rails()
        b.temperatures()
        b.voltages()
        for clock in _CLOCKS:
            b.clock(*clock)
        b.busy()
        b.vram()
        b.throttle()
        b.power_caps()
        for readers, period, cost in ((b.fast, POWER_PERIOD_S, 1e-5),
                                      (b.state, STATE_PERIOD_S, 4e-5),
                                      (b.limits, LIMIT_PERIOD_S, 2e-5)):  # fmt: skip
            if readers:
                self.groups.append(self._group(readers, period, cost, None))
        if b.mfast and self.metrics is not None:
            notes_list: list[tuple[str, dict[str, Any]]] = []
            self.groups.append(self._group(b.mfast, STATE_PERIOD_S, 1e-4, self.metrics, notes_list))
        kind = "APU" if self.apu else "discrete GPU"
        mver = f", gpu_metrics v{lay.version[0]}.{lay.version[1]}" if lay else ""
        self.available = bool(self.groups)
        self.reason = f"{kind} {card.slot}{mver}" + (f"; {'; '.join(notes)}" if notes else "")
        if not self.groups:
            self.reason += "; no readable hwmon or gpu_metrics attribute"
        if not b.have_power:
            self.missing.append(
                f"{card.name} power not measured: no power1_average, "
                "power1_input or gpu_metrics socket power"
            )

    def _open_metrics(self, card: DrmCard, notes: list[str]) -> tuple[bytes | None, Layout | None]:
        """(the first gpu_metrics blob, its Layout) and `self.metrics` kept open; (None, None)
        with a line in `notes` when the file is absent, unreadable or of an unknown revision."""
        mpath = card.device / "gpu_metrics"
        if not mpath.exists():
            return None, None
        mf = MetricsFile(mpath)
        try:
            blob = mf.read()
            lay = layout_for(blob)
        except PermissionError:
            notes.append("gpu_metrics not readable")
        except (OSError, MetricsError) as e:
            notes.append(str(e) if isinstance(e, MetricsError) else f"gpu_metrics: {e}")
        else:
            self.metrics = mf
            return blob, lay
        mf.close()
        return None, None

    def _group(
        self,
        readers: list[_Reader],
        period: float,
        cost: float,
        metrics: MetricsFile | None,
        notes: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> ReadGroup:
        notes = notes if notes is not None else []

        def read(t_ns: int) -> list[Value]:
            blob: bytes | None = None
            if metrics is not None:
                blob = metrics.read()
            out: list[Value] = []
            ctx = {"t": t_ns, "blob": blob, "notes": notes}
            for r in readers:
                try:
                    out.append(r.fn(ctx))
                except (struct.error, ValueError):
                    out.append(None)
            return out

        return ReadGroup([r.channel for r in readers], read, period, cost_s=cost, notes=notes)

    def close(self) -> None:
        """Close the kept ``gpu_metrics`` descriptor."""
        if self.metrics is not None:
            self.metrics.close()


# (which, hwmon freq label, pp_dpm file, gpu_metrics fields in preference order)
_CLOCKS = (
    ("gfx", "sclk", "pp_dpm_sclk", ("current_gfxclk", "average_gfxclk_frequency")),
    ("mem", "mclk", "pp_dpm_mclk", ("current_uclk", "average_uclk_frequency")),
)
# gpu_metrics temperature fields → the hwmon label they would duplicate.
_METRIC_TEMPS = (
    ("temperature_hotspot", "junction"),
    ("temperature_mem", "mem"),
    ("temperature_edge", "edge"),
    ("temperature_gfx", "gfx"),
    ("temperature_soc", "soc"),
    ("temperature_vrgfx", "vrgfx"),
    ("temperature_vrsoc", "vrsoc"),
    ("temperature_vrmem", "vrmem"),
)
_APU_RAILS = (
    ("average_gfx_power", "integrated GPU power (gpu_metrics)", "gpu-integrated"),
    ("average_cpu_power", "CPU rail power (gpu_metrics)", "soc-rail"),
    ("average_soc_power", "SoC rail power (gpu_metrics)", "soc-rail"),
    ("average_all_core_power", "CPU cores power (gpu_metrics)", "soc-rail"),
)


class _CardBuild:
    """The channels of one card, built once at discovery into four reader lists: `fast`
    (hwmon power), `state`, `limits` (hwmon and device files) and `mfast` (gpu_metrics)."""

    def __init__(
        self, source: str, card: DrmCard, apu: bool, blob: bytes | None, lay: Layout | None
    ) -> None:
        self.source, self.card, self.apu = source, card, apu
        self.hw = card.hwmon
        # gpu_metrics, decoded (a blob is only kept with its layout)
        self.metrics = (blob, lay) if blob is not None and lay is not None else None
        self.domain = f"apu:{card.slot}" if apu else f"gpu:{card.slot}"
        self.power_scope = "apu-package" if apu else "gpu"
        self.power_note = (
            "APU socket (PPT) power: contains its CPU cores and integrated GPU"
            if apu
            else "GPU socket (chip) power, not total board power"
        )
        self.fast: list[_Reader] = []
        self.state: list[_Reader] = []
        self.limits: list[_Reader] = []
        self.mfast: list[_Reader] = []
        self.have_power = False
        self.socket_id: str | None = None  # the first power channel: APU rails are inside it
        self.temp_labels: set[str] = set()

    def ch(self, suffix: str, label: str, kind: str, unit: str, method: str, period: float,
           scope: str = "gpu", **meta: Any) -> Channel:  # fmt: skip
        """A channel of this card; ``domain`` is kept on power and energy channels only."""
        m = {"chip": "amdgpu", "domain": self.domain, "pci": self.card.slot, **meta}
        if kind not in ("power", "energy"):
            m.pop("domain", None)
        return Channel(
            id=f"amdgpu.{self.card.name}.{suffix}",
            label=f"{self.card.name} {label}",
            source=self.source,
            kind=kind,
            unit=unit,
            scope=scope,
            method=method,
            update_period_s=period,
            meta=m,
        )

    def power(self) -> None:
        """hwmon ``power{1,2}_{average,input}`` (µW); gpu_metrics socket power where hwmon has none.

        power2 is an APU's second PPT window (fastPPT beside slowPPT): the same package.
        """
        hw = self.hw
        for n, item in ((1, "average"), (1, "input"), (2, "average"), (2, "input")):
            if hw is None:
                break
            f = hw / f"power{n}_{item}"
            if readable(f):
                label = read_label(hw / f"power{n}_label") or ("PPT" if n == 1 else f"power{n}")
                avg = item == "average"
                c = self.ch(f"power{'' if n == 1 else n}{'_avg' if avg else ''}",
                            f"{label} power ({'average' if avg else 'input'})", "power", "W",
                            "average:driver" if avg else "instant", POWER_PERIOD_S,
                            self.power_scope, note=self.power_note,
                            file=f"hwmon power{n}_{item}")  # fmt: skip
                self.fast.append(_Reader(c, _attr(f, 1e-6, "power")))
                self.have_power = True
        self.socket_id = next((r.channel.id for r in self.fast), None)
        if self.metrics is None or self.have_power:
            return
        lay = self.metrics[1]
        name = "curr_socket_power" if "curr_socket_power" in lay.fields else "average_socket_power"
        c = self.ch("power_socket", "socket power (gpu_metrics)", "power", "W", "average:driver",
                    STATE_PERIOD_S, self.power_scope, note=self.power_note,
                    file=f"gpu_metrics {name}")  # fmt: skip
        self.mfast.append(_Reader(c, _metric(lay, name, lay.power_scale, "power")))
        self.have_power = True
        self.socket_id = c.id

    def energy(self) -> None:
        """The gpu_metrics ``energy_accumulator`` (v1.x only; 2^-16 J units) and, where that
        unit is documented (v1.4+), the power derived from it."""
        if self.metrics is None or "energy_accumulator" not in self.metrics[1].fields:
            return
        lay = self.metrics[1]
        wraps = lay.version < (1, 4)
        pfx = f"amdgpu.{self.card.name}"
        counter = EnergyCounter(
            f"{pfx}.energy", ENERGY_WRAP_COUNTS * ENERGY_UNIT_J if wraps else None
        )
        note = (
            "unit 2^-16 J: documented from gpu_metrics v1.4 on; v1.0-v1.3 leave it "
            "undocumented (ROCm uses the same 15.3 µJ)"
            if wraps
            else "unit 2^-16 J (gpu_metrics v1.4+)"
        )
        energy_ch = self.ch("energy", "energy (gpu_metrics accumulator)", "energy", "J",
                            "counter", STATE_PERIOD_S, self.power_scope, note=note,
                            unit_assumed=wraps, file="gpu_metrics energy_accumulator")  # fmt: skip
        self.mfast.append(_Reader(energy_ch, _energy(lay, counter)))
        if not wraps:
            # Documented unit: the counter's power is the preferred reading of the socket.
            p = self.ch("power_counter", "power (from energy counter)", "power", "W", "derived",
                        STATE_PERIOD_S, self.power_scope, energy_channel=energy_ch.id,
                        note=self.power_note)  # fmt: skip
            self.mfast.append(_Reader(p, _energy_power(counter)))

    def apu_rails(self) -> None:
        """APU rails inside the package meter (gpu_metrics v2.x/v3.0; mW → W)."""
        if self.metrics is None or not self.metrics[1].apu:
            return
        lay = self.metrics[1]
        for name, label, scope in _APU_RAILS:
            if name not in lay.fields:
                continue
            meta: dict[str, Any] = {"file": f"gpu_metrics {name}",
                                    "domain": f"{self.domain}:{name}"}  # fmt: skip
            if self.socket_id:
                meta["within"] = self.socket_id
            c = self.ch(name.removeprefix("average_"), label, "power", "W", "average:driver",
                        STATE_PERIOD_S, scope, **meta)  # fmt: skip
            self.mfast.append(_Reader(c, _metric(lay, name, lay.power_scale, "power")))

    def temperatures(self) -> None:
        """hwmon ``tempN_input`` by label (m°C) with ``tempN_crit``/``tempN_emergency``; then
        the gpu_metrics temperatures hwmon does not have."""
        if self.hw is not None:
            for t in hwmon_inputs(self.hw, "temp", TEMP_LIMITS):
                self.temp_labels.add(t.name)
                c = self.ch(f"temp_{slug(t.name, 'temp')}", f"{t.name} temperature",
                            "temperature", "°C", "instant", STATE_PERIOD_S, **t.meta)  # fmt: skip
                self.state.append(_Reader(c, _attr(t.path, 1e-3, "temperature")))
        if self.metrics is None:
            return
        lay = self.metrics[1]
        for name, label in _METRIC_TEMPS:
            # On APUs hwmon's edge is GfxTemperature (METRICS_TEMPERATURE_EDGE in
            # smu_v13_0_4_ppt.c): the same reading, shown once.
            same = "edge" if label == "gfx" else label
            if name in lay.fields and not {label, same} & self.temp_labels:
                c = self.ch(f"temp_{label}", f"{label} temperature (gpu_metrics)",
                            "temperature", "°C", "instant", STATE_PERIOD_S,
                            file=f"gpu_metrics {name}")  # fmt: skip
                self.mfast.append(_Reader(c, _metric(lay, name, lay.temp_scale, "temperature")))

    def voltages(self) -> None:
        """hwmon ``inN_input`` (mV → V): in0 vddgfx, in1 vddnb (APUs)."""
        for v in hwmon_inputs(self.hw, "in") if self.hw is not None else []:
            c = self.ch(f"voltage_{slug(v.name, 'temp')}", f"{v.name} voltage", "voltage", "V",
                        "instant", STATE_PERIOD_S, **v.meta)  # fmt: skip
            self.state.append(_Reader(c, _attr(v.path, 1e-3, "voltage")))

    def _hwmon_clock(self, which: str, hw_label: str) -> tuple[Any, str] | None:
        """(reader, file) of hwmon's ``freqN_input`` (Hz) for `which`, if it reads.

        freq1 is sclk, freq2 mclk (amdgpu_pm.c hwmon DOC); the label says so too.
        """
        if self.hw is None:
            return None
        for f in sorted(self.hw.glob("freq*_input")):
            flabel = read_label(f.with_name(f.name.replace("_input", "_label")))
            if flabel == hw_label or (
                flabel is None and f.name == ("freq1_input" if which == "gfx" else "freq2_input")
            ):
                return (_attr(f, 1.0, "frequency"), f"hwmon {f.name}") if readable(f) else None
        return None

    def clock(self, which: str, hw_label: str, dpm: str, gm: tuple[str, ...]) -> None:
        """One clock (Hz): hwmon ``freqN_input``, else the ``*`` level of `dpm` (MHz), else
        the first gpu_metrics field of `gm` that reads (MHz)."""
        label = "graphics clock (sclk)" if which == "gfx" else "memory clock (mclk)"
        cid = f"clock_{which}"
        dev = self.card.device
        src_reader = self._hwmon_clock(which, hw_label)
        if src_reader is None and _dpm_current(dev / dpm) is not None:
            src_reader = (_dpm_reader(dev / dpm), dpm)
        if src_reader is not None:
            c = self.ch(cid, label, "frequency", "Hz", "instant", STATE_PERIOD_S,
                        file=src_reader[1], **_dpm_max(dev / dpm))  # fmt: skip
            self.state.append(_Reader(c, src_reader[0]))
            return
        if self.metrics is None:
            return
        blob, lay = self.metrics
        gname: str | None = next(
            (g for g in gm if field_value(blob, lay, g) is not None),
            next((g for g in gm if g in lay.fields), None),
        )
        if gname is not None:
            c = self.ch(cid, f"{label} (gpu_metrics)", "frequency", "Hz", "instant",
                        STATE_PERIOD_S, file=f"gpu_metrics {gname}")  # fmt: skip
            self.mfast.append(_Reader(c, _metric(lay, gname, 1e6, "frequency")))

    def busy(self) -> None:
        """``gpu_busy_percent``, ``mem_busy_percent`` (% → ratio); gpu_metrics
        ``average_gfx_activity`` when the first does not read."""
        for fname, suffix, label in (
            ("gpu_busy_percent", "busy", "busy"),
            ("mem_busy_percent", "mem_busy", "memory controller busy"),
        ):
            f = self.card.device / fname
            if readable(f):
                c = self.ch(suffix, label, "utilization", "ratio", "instant", STATE_PERIOD_S,
                            file=fname)  # fmt: skip
                self.state.append(_Reader(c, _attr(f, 0.01, "utilization")))
        if self.metrics is None or any(r.channel.id.endswith(".busy") for r in self.state):
            return
        lay = self.metrics[1]
        c = self.ch("busy", "busy (gpu_metrics)", "utilization", "ratio", "average:driver",
                    STATE_PERIOD_S, file="gpu_metrics average_gfx_activity")  # fmt: skip
        self.mfast.append(
            _Reader(c, _metric(lay, "average_gfx_activity", lay.activity_scale, "utilization"))
        )

    def vram(self) -> None:
        """``mem_info_vram_used`` (bytes, a state reading) and ``mem_info_vram_total`` (a limit)."""
        for fname, label in (("mem_info_vram_used", "VRAM used"),
                             ("mem_info_vram_total", "VRAM total")):  # fmt: skip
            f = self.card.device / fname
            if readable(f):
                total = fname.endswith("total")
                c = self.ch(fname.removeprefix("mem_info_"), label, "memory", "bytes", "instant",
                            LIMIT_PERIOD_S if total else STATE_PERIOD_S, file=fname)  # fmt: skip
                (self.limits if total else self.state).append(_Reader(c, _attr(f, 1.0)))

    def throttle(self) -> None:
        """Throttle reasons as one flags channel (gpu_metrics only, `_throttle_reader`)."""
        tr = _throttle_reader(self.metrics[1]) if self.metrics is not None else None
        if tr is None:
            return
        fn, table, what = tr
        c = self.ch("throttle", f"throttle reasons ({what})", "throttle", "flags", "instant",
                    STATE_PERIOD_S, **throttle_meta(table), file=f"gpu_metrics {what}")  # fmt: skip
        self.mfast.append(_Reader(c, fn))

    def power_caps(self) -> None:
        """hwmon ``power{1,2}_cap{,_min,_max,_default}`` (µW → W): limit channels, never summed."""
        hw = self.hw
        if hw is None:
            return
        for n in (1, 2):
            for what in ("", "_min", "_max", "_default"):
                f = hw / f"power{n}_cap{what}"
                if not readable(f):
                    continue
                pl = read_label(hw / f"power{n}_label") if n > 1 else None
                c = self.ch(f"power{'' if n == 1 else n}_cap{what}",
                            f"{pl + ' ' if pl else ''}power cap{what.replace('_', ' ')}",
                            "power", "W", "instant", LIMIT_PERIOD_S, self.power_scope,
                            is_limit=True, file=f"hwmon {f.name}")  # fmt: skip
                self.limits.append(_Reader(c, _attr(f, 1e-6, "power")))


# -- readers (each a function of a context: t, gpu_metrics blob, notes) --------------------------


def _attr(path: Path, scale: float, kind: str = "") -> Any:
    p = str(path)

    def fn(ctx: dict[str, Any]) -> Value:
        try:
            v = read_int(p)
        except PermissionError:  # EPERM: the GPU is runtime-suspended; no reading now
            return None
        if v is None:
            return None
        if kind == "temperature" and v in PLACEHOLDER_MILLIDEG:
            return None
        x = v * scale
        if kind and not _sane(kind, x):
            return None
        return x if scale != 1.0 else v

    return fn


def _metric(lay: Layout, name: str, scale: float, kind: str) -> Any:
    def fn(ctx: dict[str, Any]) -> Value:
        blob = ctx["blob"]
        if blob is None or len(blob) < lay.size or header(blob)[1:] != lay.version:
            return None
        return _scaled(blob, lay, name, scale, kind)

    return fn


def _energy(lay: Layout, counter: EnergyCounter) -> Any:
    def fn(ctx: dict[str, Any]) -> Value:
        blob = ctx["blob"]
        ctx["power"] = None
        if blob is None or len(blob) < lay.size or header(blob)[1:] != lay.version:
            return None
        raw = field_value(blob, lay, "energy_accumulator")
        if raw is None:
            return None
        if lay.version < (1, 4):
            raw %= ENERGY_WRAP_COUNTS  # a u32 accumulator in a u64 field
        dt = (ctx["t"] - counter.last_t) / 1e9
        e, p = counter.update(raw * ENERGY_UNIT_J, ctx["t"], ctx["notes"])
        ctx["power"] = p if dt >= 0.05 else None
        return e

    return fn


def _energy_power(counter: EnergyCounter) -> Any:
    def fn(ctx: dict[str, Any]) -> Value:
        return ctx.get("power")

    return fn


def _throttle_reader(lay: Layout) -> tuple[Any, dict[int, tuple[str, str]], str] | None:
    """(reader, bit table, source field) for this revision; None if it has no throttle data."""
    if "indep_throttle_status" in lay.fields:

        def indep(ctx: dict[str, Any]) -> Value:
            blob = ctx["blob"]
            if blob is None or len(blob) < lay.size:
                return None
            return field_value(blob, lay, "indep_throttle_status")

        return indep, SMU_THROTTLER, "indep_throttle_status"
    if "throttle_residency_spl" in lay.fields:
        last: dict[str, int] = {}

        def residency(ctx: dict[str, Any]) -> Value:
            blob = ctx["blob"]
            if blob is None or len(blob) < lay.size:
                return None
            mask = 0
            seen = False
            for bit, name in enumerate(V3_RESIDENCY):
                v = field_value(blob, lay, f"throttle_residency_{name}")
                if v is None:
                    continue
                prev = last.get(name)
                last[name] = v
                if prev is not None:
                    seen = True
                    if v > prev:
                        mask |= 1 << bit
            return mask if seen else None

        return residency, V3_THROTTLER, "throttle_residency_*"
    if "throttle_status" in lay.fields:
        table = APU_THROTTLER if lay.apu else {}

        def dep(ctx: dict[str, Any]) -> Value:
            blob = ctx["blob"]
            if blob is None or len(blob) < lay.size:
                return None
            return field_value(blob, lay, "throttle_status")

        return dep, table, "throttle_status"
    return None


# "1: 2412Mhz *"; APUs add a deep-sleep level "S: 19Mhz" (amdgpu_pm.c pp_dpm_* DOC).
_DPM_RE = re.compile(r"^\s*(?:\d+|S):\s*(\d+)\s*[Mm][Hh]z\s*(\*)?\s*$")


def _dpm_levels(path: Path) -> list[tuple[int, bool]]:
    try:
        text = read_text(path)
    except PermissionError:
        return []
    out = []
    for line in (text or "").splitlines():
        m = _DPM_RE.match(line)
        if m:
            out.append((int(m.group(1)), bool(m.group(2))))
    return out


def _dpm_current(path: Path) -> float | None:
    """The level marked ``*`` in ``pp_dpm_sclk``/``pp_dpm_mclk`` ("1: 2412Mhz *"), in Hz."""
    cur = [mhz for mhz, star in _dpm_levels(path) if star]
    return cur[0] * 1e6 if cur else None


def _dpm_max(path: Path) -> dict[str, Any]:
    levels = _dpm_levels(path)
    return {"max_hz": max(m for m, _ in levels) * 1e6} if levels else {}


def _dpm_reader(path: Path) -> Any:
    def fn(ctx: dict[str, Any]) -> Value:
        v = _dpm_current(path)
        return v if v is not None and _sane("frequency", v) else None

    return fn


def _looks_like_apu(card: DrmCard, hw: Path | None, cpu_model: str = "") -> bool:
    """Whether a card without a decodable gpu_metrics is an APU's integrated GPU.

    Documented facts only: ``temp2``/``temp3`` (junction, mem) and ``freq2``
    (mclk) are "supported on SOC15 dGPUs only" (amdgpu_pm.c hwmon DOC), so a
    chip that has any of them is discrete; an APU's GPU sits behind the
    SoC's internal bridge 00:08.1 (Raven, Renoir, Van Gogh, Phoenix, Strix),
    and its hwmon may carry a fast-PPT meter (``power2_label`` "fastPPT"); an
    APU's model name says it has Radeon graphics ("AMD Ryzen 7 7840U w/ Radeon
    780M Graphics", "… with Radeon Graphics").
    """
    if hw is not None and any(
        (hw / f).exists() for f in ("temp2_input", "temp3_input", "freq2_input")
    ):
        return False
    if "/0000:00:08.1/" in os.path.realpath(card.device) + "/":
        return True
    label = (read_label(hw / "power2_label") or "") if hw is not None else ""
    return "fast" in label.lower() or "radeon" in cpu_model.lower()


def _cpu_model(ctx: DiscoveryContext) -> str:
    """The first ``model name`` of /proc/cpuinfo ("" if there is none)."""
    try:
        text = ctx.root.read("/proc/cpuinfo") or ""
    except PermissionError:
        return ""
    for line in text.splitlines()[:64]:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""
