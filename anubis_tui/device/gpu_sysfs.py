"""The GPU power-cap knob for AMD and Intel GPUs, through their hwmon files.

* amdgpu: ``power1_cap`` (µW), within ``power1_cap_min``..``power1_cap_max``
  (``Documentation/gpu/amdgpu/thermal.rst``: "power1_cap: selected power cap
  in microWatts", writable by root).
* i915 and xe: ``power1_max`` (µW, the sustained limit PL1 of the card),
  up to ``power1_rated_max`` (the card's default TDP); the drivers publish
  no minimum (``sysfs-driver-intel-i915-hwmon``: "the value is clamped to
  the PKG_POWER_SKU min/max" internally), so the ladder starts at half the
  rated TDP. xe's package limit (``power2_max``) is left alone: the card
  limit is the one the card meter answers to. A ``power1_max`` of 0 means
  the limit is disabled ("A read value of 0 means that the PL1 power limit is
  disabled"): it is journalled and put back as 0.

The knob is ``power_limit_w``, the same one NVML serves: every such GPU gets
the same cap, journalled before the first change (``original`` maps each
card's PCI address to its µW) and put back exactly as NVML's limit is.
Where the file cannot be written the knob is greyed with the reason
("needs root" for a user, "read-only" where even root may not write).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anubis_tui.device.controls import (
    Control,
    ControlError,
    Restored,
    ladder_w,
    write_attr,
)
from anubis_tui.sources.base import SysfsRoot, read_int
from anubis_tui.sources.drm import drm_cards

TARGET = "gpu-sysfs"


@dataclass(frozen=True)
class CapFile:
    """One card's cap file and the range it accepts, in µW."""

    slot: str  # PCI address: the journal's key (card numbers change across boots)
    path: Path
    lo_uw: int
    hi_uw: int
    zero_ok: bool = False  # i915/xe: 0 is "PL1 disabled", a value to put back as it was


def cap_files(root: SysfsRoot | None = None) -> list[CapFile]:
    """Every amdgpu ``power1_cap`` and i915/xe ``power1_max`` with a known range."""
    root = root or SysfsRoot()
    out: list[CapFile] = []
    for card in drm_cards(root, ("amdgpu", "i915", "xe"), ("amdgpu", "i915", "xe")):
        hw = card.hwmon
        if hw is None:
            continue
        if card.driver == "amdgpu":
            path, lo, hi = (hw / "power1_cap", _int(hw / "power1_cap_min"),
                            _int(hw / "power1_cap_max"))  # fmt: skip
        else:
            path, hi = hw / "power1_max", _int(hw / "power1_rated_max")
            lo = hi // 2 if hi else None
        if _int(path) is None or not hi or lo is None or lo > hi:
            continue
        # amdgpu reports power1_cap_min 0 on some boards: a cap of 0 W is no cap to offer.
        lo = max(lo, 1_000_000)
        out.append(CapFile(card.slot, path, lo, hi, zero_ok=card.driver != "amdgpu"))
    return out


def _int(p: Path) -> int | None:
    try:
        return read_int(p)
    except PermissionError:
        return None


class GpuPowerCap(Control):
    """Every sysfs GPU's power cap, in W (one value for all of them, as NVML's limit)."""

    def __init__(self, files: list[CapFile]) -> None:
        super().__init__(knob="power_limit_w", target=TARGET, unit="W")
        self.files = files
        # The range every card accepts; where they share none, the first card's.
        lo = max(f.lo_uw for f in files)
        hi = min(f.hi_uw for f in files)
        if lo > hi:
            self.files = files[:1]
            lo, hi = files[0].lo_uw, files[0].hi_uw
        self.lo_w, self.hi_w = lo / 1e6, hi / 1e6
        self.steps = ladder_w(self.lo_w, self.hi_w)

    def value(self) -> float | None:
        """The first card's cap in W (its hwmon file holds µW); None when unreadable."""
        uw = _int(self.files[0].path)
        return None if uw is None else uw / 1e6

    def original(self) -> dict[str, int]:
        """Each card's cap in µW by PCI address; ControlError when a file cannot be read."""
        out = {}
        for f in self.files:
            uw = _int(f.path)
            if uw is None:
                raise ControlError(f"cannot read {f.path}")
            out[f.slot] = uw
        return out

    def set(self, value: Any) -> None:
        """Write `value` W (as µW) to every card's cap file.

        ControlError outside the shared range or when the kernel refuses the write.
        """
        w = float(value)
        if not self.lo_w <= w <= self.hi_w:
            raise ControlError(f"power cap must be within {self.lo_w:g}-{self.hi_w:g} W")
        for f in self.files:
            write_attr(f.path, f"{round(w * 1e6)}\n")

    def restore(self, original: Any) -> Restored:
        """Each card's cap back: cards this machine has, ints of µW within that card's range."""
        if not isinstance(original, dict):
            raise ControlError("the journal's GPU power caps are not a map")
        by_slot = {f.slot: f for f in self.files}
        out = Restored()
        left: dict[str, Any] = {}
        for slot, uw in original.items():
            f = by_slot.get(slot)
            try:
                if f is None:
                    raise ControlError("no such GPU on this machine")
                if (
                    not isinstance(uw, int)
                    or isinstance(uw, bool)
                    or not (f.lo_uw <= uw <= f.hi_uw or (uw == 0 and f.zero_ok))
                ):
                    raise ControlError(f"{str(uw)[:20]} is not a cap within {f.lo_uw}-{f.hi_uw} µW")
                write_attr(f.path, f"{uw}\n")
            except (ControlError, OSError) as e:
                out.failed.append(f"{str(slot)[:40]}: {e}")
                left[slot] = uw
                continue
            out.wrote.append(f"GPU {slot} power cap {uw} µW")
        out.left = left or None
        return out


def discover_gpu_power_cap(root: SysfsRoot | None = None) -> Control | None:
    """The sysfs power-cap control of this machine's AMD/Intel GPUs; None where there is none."""
    files = cap_files(root)
    if not files:
        return None
    ctl = GpuPowerCap(files)
    blocked = [f.path for f in ctl.files if not _writable(f.path)]
    if blocked:
        ctl.reason = "needs root" if os.geteuid() != 0 else f"{blocked[0].name} is read-only"
    return ctl


def _writable(p: Path) -> bool:
    # Root passes access(W_OK) on any file; a sysfs attribute without a store method has no
    # write bit at all (0444), and the kernel refuses it even to root.
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(p, os.W_OK)
