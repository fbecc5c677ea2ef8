"""Raspberry Pi: firmware throttle flags, the rpi_volt under-voltage alarm, Pi 5 PMIC rails.

``get_throttled`` in sysfs is hex without ``0x`` (the kernel prints ``%x``);
``vcgencmd get_throttled`` prints ``throttled=0x50005`` and is the fallback.
Bits 0–3 are "now", bits 16–19 the same conditions "since boot" (sticky).
The firmware refreshes these every 2 s. ``vcgencmd pmic_read_adc`` (Pi 5)
lists rail currents and voltages with different indices: they are paired by
rail name. Their sum covers the PMIC's internal rails, not USB peripherals.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, ReadGroup, Source, read_int, read_text

FIRMWARE_PERIOD_S = 2.0
PMIC_PERIOD_S = 1.0  # one process spawn per read; more would cost the Pi measurable CPU
RPI_FLAGS = {0x1: "under_voltage", 0x2: "freq_capped", 0x4: "throttled", 0x8: "soft_temp_limit"}
RPI_STICKY = {
    0x10000: "under_voltage",
    0x20000: "freq_capped",
    0x40000: "throttled",
    0x80000: "soft_temp_limit",
}
PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-+0-9.eE]+|nan)[AV]?\s*$")


def parse_get_throttled(text: str) -> int | None:
    """``50005`` (sysfs) or ``throttled=0x50005`` (vcgencmd) → int."""
    text = text.strip()
    if "=" in text:
        text = text.split("=", 1)[1]
    try:
        return int(text, 16)
    except ValueError:
        return None


def parse_pmic(text: str) -> dict[str, float]:
    """Rail name → power in W (V × A), pairing currents and voltages by name; NaN skipped."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = PMIC_LINE.match(line)
        if not m:
            continue
        rail, unit, num = m.groups()
        v = float(num)
        if math.isnan(v):
            continue
        (amps if unit == "A" else volts)[rail] = v
    return {r: amps[r] * volts[r] for r in sorted(amps) if r in volts}


@dataclass
class RaspberryPiSource(Source):
    """A Raspberry Pi's firmware throttle flags (sysfs ``get_throttled``, else ``vcgencmd
    get_throttled``; bits per `RPI_FLAGS`/`RPI_STICKY`), the ``rpi_volt`` hwmon
    under-voltage alarm, and on a Pi 5 the PMIC rails (``vcgencmd pmic_read_adc``, W per
    rail and their total).

    Unavailable, with the reason, off a Pi. A vcgencmd that fails or is
    absent on a Pi 5 is named in `missing` with the fix (group video,
    raspi-utils).
    """

    order: ClassVar[int] = 26
    throttled_path: Path | None = None
    vcgencmd: str | None = None
    flags_tool: bool = False  # the throttle flags come from `vcgencmd get_throttled`
    volt_alarm: Path | None = None
    pmic_rails: list[str] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source when a firmware interface answers; else one unavailable source whose
        reason names what was missing."""
        src = cls(name="rpi")
        model = src._find(ctx)
        flags = src._flags_group()
        if flags is not None:
            src.groups.append(flags)
        if src.vcgencmd:
            src._pmic(model)
        if "Raspberry Pi 5" in model and not src.vcgencmd:
            src.missing.append(
                "Pi 5 PMIC power not measured: vcgencmd not found (it comes with the "
                "raspi-utils package on Raspberry Pi OS)"
            )
        if not src.groups:
            reason = "no Raspberry Pi firmware interface"
            if src.missing:
                reason += "; " + "; ".join(src.missing)
            return [cls(name="rpi", reason=reason, missing=src.missing)]
        src.available = True
        via = [g.channels[0].id for g in src.groups]
        src.reason = (model.strip("\x00 ") or "Raspberry Pi") + " (" + ", ".join(via) + ")"
        if src.missing:
            src.reason += "; " + "; ".join(src.missing)
        return [src]

    def _find(self, ctx: DiscoveryContext) -> str:
        """Find the get_throttled file, vcgencmd and the rpi_volt alarm; the model name
        (``/proc/device-tree/model``, "" if none)."""
        paths = ctx.root.glob("/sys/devices/platform/soc", "soc:firmware/get_throttled")
        paths += ctx.root.glob("/sys/devices/platform", "soc@*/*firmware*/get_throttled")
        self.throttled_path = paths[0] if paths else None
        model = read_text(ctx.root.path("/proc/device-tree/model")) or ""
        vc = shutil.which("vcgencmd")
        if vc and (self.throttled_path is None or "Raspberry Pi" in model):
            self.vcgencmd = vc
        for hw in ctx.root.glob("/sys/class/hwmon", "hwmon*"):
            if read_text(hw / "name") == "rpi_volt" and (hw / "in0_lcrit_alarm").exists():
                self.volt_alarm = hw / "in0_lcrit_alarm"
                break
        if self.throttled_path is None and self.vcgencmd:
            out, err = run_tool(self.vcgencmd, "get_throttled")
            self.flags_tool = out is not None
            if out is None:
                self.missing.append(f"firmware throttle flags not read: {vcgencmd_fix(err)}")
        return model

    def _flags_group(self) -> ReadGroup | None:
        """The throttle flags and under-voltage alarm, every 2 s (the firmware's refresh)."""
        chans: list[Channel] = []
        if self.throttled_path is not None or self.flags_tool:
            meta = {
                "flags": dict(RPI_FLAGS),
                "sticky": dict(RPI_STICKY),
                "via": "sysfs" if self.throttled_path else "vcgencmd",
            }
            chans.append(
                self._channel(
                    "rpi.throttled",
                    "firmware throttle flags",
                    "throttle",
                    "flags",
                    "soc",
                    "instant",
                    FIRMWARE_PERIOD_S,
                    meta,
                )
            )
        if self.volt_alarm is not None:
            chans.append(
                self._channel(
                    "rpi.undervoltage",
                    "rpi_volt under-voltage alarm",
                    "throttle",
                    "flags",
                    "board-input",
                    "instant",
                    FIRMWARE_PERIOD_S,
                    {"flags": {0x1: "under_voltage"}},
                )
            )
        return ReadGroup(chans, self._read_flags, FIRMWARE_PERIOD_S) if chans else None

    def _pmic(self, model: str) -> None:
        """The Pi 5 PMIC rails (W) and their total, once a second, where pmic_read_adc answers."""
        assert self.vcgencmd
        out, err = run_tool(self.vcgencmd, "pmic_read_adc")
        rails = parse_pmic(out or "")
        if out is None and "Raspberry Pi 5" in model:
            self.missing.append(f"Pi 5 PMIC power not measured: {vcgencmd_fix(err)}")
        if not rails:
            return
        self.pmic_rails = list(rails)
        note = {"note": "internal PMIC rails only; excludes USB and the 5 V input"}
        pchans = [
            self._channel(
                "rpi.pmic.total",
                "PMIC rails total",
                "power",
                "W",
                "soc",
                "derived",
                PMIC_PERIOD_S,
                note,
            )
        ]
        pchans += [
            self._channel(
                f"rpi.pmic.{r}",
                f"{r} power",
                "power",
                "W",
                "soc-rail",
                "derived",
                PMIC_PERIOD_S,
                {"rail": r},
            )
            for r in self.pmic_rails
        ]
        self.groups.append(ReadGroup(pchans, self._read_pmic, PMIC_PERIOD_S, cost_s=5e-3))

    def _channel(
        self,
        cid: str,
        label: str,
        kind: str,
        unit: str,
        scope: str,
        method: str,
        period: float,
        meta: dict[str, Any],
    ) -> Channel:
        return Channel(
            id=cid,
            label=label,
            source=self.name,
            kind=kind,
            unit=unit,
            scope=scope,
            method=method,
            update_period_s=period,
            meta=meta,
        )

    def _read_flags(self, t_ns: int) -> list[Value]:
        out: list[Value] = []
        if self.throttled_path is not None or self.flags_tool:
            text = None
            if self.throttled_path is not None:
                text = read_text(self.throttled_path)
            elif self.vcgencmd:
                text = _run(self.vcgencmd, "get_throttled")
            out.append(None if text is None else parse_get_throttled(text))
        if self.volt_alarm is not None:
            out.append(read_int(self.volt_alarm))
        return out

    def _read_pmic(self, t_ns: int) -> list[Value]:
        assert self.vcgencmd
        rails = parse_pmic(_run(self.vcgencmd, "pmic_read_adc") or "")
        vals: list[Value] = [rails.get(r) for r in self.pmic_rails]
        known = [v for v in vals if v is not None]
        return [sum(known) if known else None, *vals]


def _run(cmd: str, arg: str) -> str | None:
    return run_tool(cmd, arg)[0]


def run_tool(cmd: str, arg: str) -> tuple[str | None, str]:
    """(stdout, "") when `cmd arg` succeeds; (None, why) when it cannot run or fails."""
    try:
        p = subprocess.run([cmd, arg], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{type(e).__name__}: {e}"
    if p.returncode == 0:
        return p.stdout, ""
    lines = (p.stderr or p.stdout or "").strip().splitlines()
    return None, (lines[-1] if lines else f"exit status {p.returncode}")[:200]


def vcgencmd_fix(err: str) -> str:
    """vcgencmd's failure with its fix: the firmware device (/dev/vcio) belongs to group video."""
    why = f"vcgencmd failed ({err})" if err else "vcgencmd failed"
    if "VCHI" in err or "ermission" in err or "/dev/vcio" in err:
        return why + ": add the user to group video (`sudo usermod -aG video $USER`, then log in)"
    return why
