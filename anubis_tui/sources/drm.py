"""DRM cards under ``/sys/class/drm``: which driver runs each, and where its hwmon chip is.

Shared by the amdgpu and Intel GPU sources and by the sysfs GPU power-cap knob
(`anubis_tui.device.gpu_sysfs`). Cards are ``cardN`` entries (connectors such
as ``card0-DP-1`` and render nodes are skipped); one PCI device reached
through two names counts once. The driver is the last part of the
``device/driver`` link (``../../bus/pci/drivers/amdgpu``), read with
``readlink`` so a fake tree needs no driver directory behind it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from anubis_tui.sources.base import SysfsRoot, read_text, unique_dirs

CARD_RE = re.compile(r"^card(\d+)$")
MAX_CARDS = 16


@dataclass(frozen=True)
class DrmCard:
    """One GPU: `name` (``card1``), `device` (its PCI device directory), `driver`, `hwmon`."""

    name: str
    device: Path
    driver: str
    slot: str  # PCI address (``0000:03:00.0``): stable across reboots, unlike cardN
    hwmon: Path | None

    @property
    def drm_dir(self) -> Path:
        """``/sys/class/drm/cardN`` under the device (i915's ``gt/`` lives here)."""
        return self.device / "drm" / self.name

    @property
    def on_root_bus(self) -> bool:
        """True for a device on PCI bus 0 (Intel integrated graphics sits at 00:02.0)."""
        return bool(re.match(r"^[0-9a-f]{4}:00:", self.slot))


def _driver(device: Path) -> str:
    try:
        return os.path.basename(os.readlink(device / "driver"))
    except OSError:
        return ""


def hwmon_dir(device: Path, chips: tuple[str, ...]) -> Path | None:
    """The device's ``hwmon/hwmonN`` whose ``name`` is one of `chips`; None if it has none."""
    try:
        entries = sorted((device / "hwmon").iterdir())
    except OSError:
        return None
    for d in entries:
        try:
            name = read_text(d / "name")
        except PermissionError:
            continue
        if name in chips:
            return d
    return None


def drm_cards(root: SysfsRoot, drivers: tuple[str, ...], chips: tuple[str, ...]) -> list[DrmCard]:
    """Every ``cardN`` whose driver is one of `drivers`, in card order, each PCI device once."""
    out: list[DrmCard] = []
    seen: set[str] = set()
    found = [p for p in root.glob("/sys/class/drm", "card*") if CARD_RE.match(p.name)]
    found.sort(key=lambda p: int(CARD_RE.match(p.name).group(1)))  # type: ignore[union-attr]
    for p in found[:MAX_CARDS]:
        device = p / "device"
        drv = _driver(device)
        if drv not in drivers:
            continue
        try:
            real = os.path.realpath(device)
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        out.append(
            DrmCard(
                name=p.name,
                device=device,
                driver=drv,
                slot=os.path.basename(real),
                hwmon=hwmon_dir(device, chips),
            )
        )
    # A GPU's hwmon chip whose device no DRM card led to (a tree or container that shows
    # /sys/class/hwmon but not /sys/class/drm): the chip names the driver.
    for h in unique_dirs(root.glob("/sys/class/hwmon", "hwmon*")):
        try:
            chip = read_text(h / "name")
        except PermissionError:
            continue
        if chip not in chips or chip not in drivers or len(out) >= MAX_CARDS:
            continue
        real_h = Path(os.path.realpath(h))
        device = h / "device" if (h / "device").exists() else real_h.parent.parent
        real = os.path.realpath(device)
        if real in seen or (real_h.parent.name != "hwmon" and not (h / "device").exists()):
            continue
        seen.add(real)
        drm = sorted(n.name for n in (Path(real) / "drm").glob("card*") if CARD_RE.match(n.name))
        out.append(
            DrmCard(
                name=drm[0] if drm else h.name,
                device=device,
                driver=chip,
                slot=os.path.basename(real),
                hwmon=h,
            )
        )
    return out
