"""Device controls: settings of the machine a knob can change, each where it is writable.

* ``power_limit_w``: the GPU power limit through NVML, in steps within
  ``nvmlDeviceGetPowerManagementLimitConstraints`` (every GPU gets the same
  limit). Writable when a write of the current limit succeeds (NVML needs
  root for it).
* ``cpu_max_mhz``: cpufreq ``scaling_max_freq`` of every policy, stepping
  through ``scaling_available_frequencies`` or tenths of the hardware range.
  Writable when every policy's file is.
* ``nvpmodel``: the Jetson power mode, through the ``nvpmodel`` tool and the
  modes listed in ``/etc/nvpmodel.conf``. Writable as root.

A control's `original` is what `restore` needs to put the machine back
(every GPU's or every policy's own value); `value` is what the knob shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError
from anubis_tui.sources.base import SysfsRoot, read_int, unique_dirs
from anubis_tui.sources.nvml import NvmlUnavailable, load_nvml_module


class ControlError(AnubisError):
    """A device setting could not be read or written; the message is one line."""


@dataclass
class Restored:
    """What one `Control.restore` did: each value written, each refused, and what is left.

    `left` is the part of the journal's original still to put back (None when
    all of it was written); the journal keeps it for a later try.
    """

    wrote: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left: Any = None


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Control:
    """One device setting. Subclasses implement the four primitives."""

    knob: str
    target: str
    unit: str
    reason: str = ""  # why it cannot be changed here ("" when it can)
    steps: list[Any] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``knob:target`` (``power_limit_w:gpu``): the journal's key for this setting."""
        return f"{self.knob}:{self.target}"

    @property
    def writable(self) -> bool:
        """Whether this session may change it (no `reason` against it)."""
        return not self.reason

    def value(self) -> Any:
        """The knob's current value in `unit` (None where it cannot be read)."""
        return None

    def original(self) -> Any:
        """What `restore` needs to put this setting back as it is now."""
        raise ControlError(f"{self.knob}: {self.reason or 'cannot be read'}")

    def set(self, value: Any) -> None:
        """Set the knob to `value` in `unit`; ControlError (one line) when out of range or
        refused.
        """
        raise ControlError(f"{self.knob}: {self.reason or 'cannot be changed'}")

    def restore(self, original: Any) -> Restored:
        """Put back a journal's `original`, each part checked against this device's limits.

        ControlError when none of it fits this device (wrong shape, no such setting).
        """
        raise ControlError(f"{self.knob}: {self.reason or 'cannot be changed'}")

    def step(self, value: Any, direction: int) -> Any:
        """The next value of the ladder from `value` (the nearest step, then one further)."""
        if not self.steps:
            return value
        if value not in self.steps:
            nums = [s for s in self.steps if isinstance(s, int | float)]
            if nums and isinstance(value, int | float):
                value = min(nums, key=lambda s: abs(s - value))
            else:
                value = self.steps[0]
        i = self.steps.index(value) + (1 if direction > 0 else -1)
        return self.steps[max(0, min(len(self.steps) - 1, i))]


# -- GPU power limit -------------------------------------------------------------------------


class PowerLimit(Control):
    """Every GPU's NVML power management limit, in W."""

    def __init__(self, module: Any, handles: list[Any], lo_w: float, hi_w: float) -> None:
        super().__init__(knob="power_limit_w", target="gpu", unit="W")
        self.m = module
        self.handles = handles
        self.lo_w, self.hi_w = lo_w, hi_w
        self.steps = ladder_w(lo_w, hi_w)

    def _get_mw(self, h: Any) -> int:
        return int(self.m.nvmlDeviceGetPowerManagementLimit(h))

    def value(self) -> float:
        """GPU 0's limit in W (``nvmlDeviceGetPowerManagementLimit``, which gives mW)."""
        return self._get_mw(self.handles[0]) / 1000.0

    def original(self) -> list[int]:
        """Every GPU's limit in mW (``nvmlDeviceGetPowerManagementLimit``), in NVML index order."""
        return [self._get_mw(h) for h in self.handles]

    def _set_mw(self, h: Any, mw: int) -> None:
        try:
            self.m.nvmlDeviceSetPowerManagementLimit(h, int(mw))
        except Exception as e:
            raise ControlError(f"NVML refused the power limit {mw / 1000:g} W: {e}") from None

    def set(self, value: Any) -> None:
        """Set every GPU's limit to `value` W (``nvmlDeviceSetPowerManagementLimit``, in mW).

        ControlError outside the constraints (``nvmlDeviceGetPowerManagementLimitConstraints``)
        or when NVML refuses (no permission, not supported).
        """
        w = float(value)
        if not self.lo_w <= w <= self.hi_w:
            raise ControlError(f"power limit must be within {self.lo_w:g}-{self.hi_w:g} W")
        for h in self.handles:
            self._set_mw(h, round(w * 1000))

    def restore(self, original: Any) -> Restored:
        """Every GPU's limit back, each an int of mW within NVML's constraints."""
        if not isinstance(original, list) or len(original) != len(self.handles):
            raise ControlError("the journal's power limits do not match this machine's GPUs")
        out = Restored()
        lo, hi = round(self.lo_w * 1000), round(self.hi_w * 1000)
        for i, (h, mw) in enumerate(zip(self.handles, original, strict=True)):
            try:
                if not _whole(mw) or not lo <= mw <= hi:
                    raise ControlError(f"{str(mw)[:20]} is not a limit within {lo}-{hi} mW")
                self._set_mw(h, mw)
                out.wrote.append(f"GPU {i} power limit {mw} mW")
            except ControlError as e:
                out.failed.append(f"GPU {i}: {e}")
        out.left = original if out.failed else None  # writing a GPU's limit again is harmless
        return out


def ladder_w(lo: float, hi: float) -> list[float]:
    """From `lo` to `hi` in about ten steps of a round number of watts."""
    span = hi - lo
    if span <= 0:
        return [hi]
    step = max(5.0, round(span / 10 / 5) * 5)
    out = [lo]
    w = (lo // step + 1) * step
    while w < hi:
        out.append(float(w))
        w += step
    out.append(hi)
    return out


def discover_power_limit(module_name: str | None = None) -> Control | None:
    """The power-limit control of this machine's GPUs, or None where there is no NVML."""
    try:
        m = load_nvml_module(module_name)
        m.nvmlInit()
    except (NvmlUnavailable, Exception):
        return None
    try:
        n = int(m.nvmlDeviceGetCount())
        handles = [m.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        if not handles:
            return None
        lo_mw, hi_mw = m.nvmlDeviceGetPowerManagementLimitConstraints(handles[0])
        ctl = PowerLimit(m, handles, lo_mw / 1000.0, hi_mw / 1000.0)
        current = ctl.original()
    except Exception as e:
        why = f"not supported here ({str(e)[:40]})"
        return Control(knob="power_limit_w", target="gpu", unit="W", reason=why)
    try:  # NVML has no dry run: writing the current limit tells whether we may write at all
        for h, mw in zip(handles, current, strict=True):
            m.nvmlDeviceSetPowerManagementLimit(h, mw)
    except Exception as e:
        no_perm = getattr(m, "NVML_ERROR_NO_PERMISSION", 4)
        ctl.reason = "needs root" if getattr(e, "value", None) == no_perm else str(e)[:40]
    return ctl


# -- CPU maximum frequency -------------------------------------------------------------------

_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def write_attr(path: Path, text: str) -> None:
    """Write a sysfs attribute (never through a symlink, never blocking on a FIFO)."""
    try:
        fd = os.open(path, _WRITE)
    except OSError as e:
        raise ControlError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise ControlError(f"{path} refused {text.strip()}: {e.strerror}") from None
    finally:
        os.close(fd)


class CpuMaxFreq(Control):
    """cpufreq ``scaling_max_freq`` of every policy; the knob's value in MHz."""

    def __init__(self, policies: list[Path], steps_khz: list[int]) -> None:
        super().__init__(knob="cpu_max_mhz", target="cpu", unit="MHz")
        self.policies = policies
        self.steps = [k // 1000 for k in steps_khz]

    def value(self) -> int | None:
        """Policy 0's ``scaling_max_freq`` (sysfs, kHz) in MHz; None when unreadable."""
        k = read_int(self.policies[0] / "scaling_max_freq")
        return None if k is None else k // 1000

    def original(self) -> dict[str, int]:
        """Each policy's ``scaling_max_freq`` in kHz, by policy name (``policy0``, or ``cpu0``).

        ControlError when a file cannot be read.
        """
        out = {}
        for p in self.policies:
            k = read_int(p / "scaling_max_freq")
            if k is None:
                raise ControlError(f"cannot read {p / 'scaling_max_freq'}")
            out[p.name if p.name != "cpufreq" else p.parent.name] = k
        return out

    def _by_name(self) -> dict[str, Path]:
        return {(p.name if p.name != "cpufreq" else p.parent.name): p for p in self.policies}

    def set(self, value: Any) -> None:
        """Write `value` MHz (as kHz) to every policy's ``scaling_max_freq``.

        ControlError when `value` is not one of `steps` or a write is refused
        (permission, a value the driver rejects).
        """
        mhz = int(value)
        if mhz not in self.steps:
            raise ControlError(f"CPU max frequency must be one of {self.steps} MHz")
        for p in self.policies:
            write_attr(p / "scaling_max_freq", f"{mhz * 1000}\n")

    def restore(self, original: Any) -> Restored:
        """Each named policy's ``scaling_max_freq`` back: policies this machine has, ints of
        kHz within that policy's ``cpuinfo_min_freq``..``cpuinfo_max_freq``."""
        if not isinstance(original, dict):
            raise ControlError("the journal's CPU frequencies are not a map")
        by_name = self._by_name()
        out = Restored()
        left: dict[str, Any] = {}
        for name, khz in original.items():
            p = by_name.get(name)
            try:
                if p is None:
                    raise ControlError("no such cpufreq policy on this machine")
                lo = read_int(p / "cpuinfo_min_freq") or 1
                hi = read_int(p / "cpuinfo_max_freq")
                if not _whole(khz) or not lo <= khz <= (hi or khz):
                    raise ControlError(f"{str(khz)[:20]!s} is not a frequency within {lo}-{hi} kHz")
                write_attr(p / "scaling_max_freq", f"{khz}\n")
            except (ControlError, OSError) as e:
                out.failed.append(f"{str(name)[:40]}: {e}")
                left[name] = khz
                continue
            out.wrote.append(f"{name} scaling_max_freq {khz} kHz")
        out.left = left or None
        return out


def discover_cpu_max(root: SysfsRoot | None = None) -> Control:
    """The ``cpu_max_mhz`` control over every cpufreq policy
    (``/sys/devices/system/cpu/cpu*/cpufreq``).

    Steps are ``scaling_available_frequencies`` where the driver lists them,
    else tenths of ``cpuinfo_min_freq``..``cpuinfo_max_freq`` rounded to 100 MHz.
    Greyed ("no cpufreq", "no frequency range", "needs root") where it cannot change.
    """
    root = root or SysfsRoot()
    dirs = root.glob("/sys/devices/system/cpu", "cpu[0-9]*/cpufreq")
    policies = [p for p in unique_dirs(dirs) if (p / "scaling_max_freq").exists()]
    if not policies:
        return Control(knob="cpu_max_mhz", target="cpu", unit="MHz", reason="no cpufreq")
    avail = root.read(policies[0] / "scaling_available_frequencies")
    steps: list[int] = []
    if avail:
        steps = sorted({int(x) for x in avail.split() if x.isdigit()})
    if not steps:
        lo = read_int(policies[0] / "cpuinfo_min_freq")
        hi = read_int(policies[0] / "cpuinfo_max_freq")
        if not lo or not hi or hi <= lo:
            return Control(
                knob="cpu_max_mhz", target="cpu", unit="MHz", reason="no frequency range"
            )
        steps = sorted({lo + (hi - lo) * i // 10 // 100_000 * 100_000 for i in range(10)} | {hi})
    ctl = CpuMaxFreq(policies, steps)
    files = [p / "scaling_max_freq" for p in policies]
    if not all(os.access(f, os.W_OK) for f in files):
        ctl.reason = "needs root"
    return ctl


# -- Jetson nvpmodel --------------------------------------------------------------------------

_MODE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", re.IGNORECASE)


class NvpModel(Control):
    """The Jetson power mode (an ID from /etc/nvpmodel.conf), set with ``nvpmodel -m``."""

    def __init__(self, binary: str, modes: dict[int, str]) -> None:
        super().__init__(knob="nvpmodel", target="jetson", unit="")
        self.binary = binary
        self.modes = modes
        self.steps = sorted(modes)

    def _run(self, *args: str) -> str:
        try:
            r = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ControlError(f"nvpmodel: {e}") from None
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit {r.returncode}"]
            raise ControlError(f"nvpmodel {' '.join(args)}: {last[0][:100]}")
        return r.stdout

    def value(self) -> int | None:
        """The current mode ID from ``nvpmodel -q`` (its last numeric line, else the mode name);
        None if neither.

        ControlError when the tool fails or times out (30 s).
        """
        out = self._run("-q")
        for line in reversed(out.strip().splitlines()):
            if line.strip().isdigit():
                return int(line.strip())
        names = {v: k for k, v in self.modes.items()}
        m = re.search(r"Power Mode:\s*(\S+)", out)
        return names.get(m.group(1)) if m else None

    def original(self) -> int | None:
        """The current mode ID (`value`): what `restore` puts back."""
        return self.value()

    def set(self, value: Any) -> None:
        """Switch to mode `value` with ``nvpmodel -m``; ControlError for an unknown mode or
        a tool failure.
        """
        if value not in self.modes:
            raise ControlError(f"nvpmodel mode must be one of {sorted(self.modes)}")
        self._run("-m", str(int(value)))

    def restore(self, original: Any) -> Restored:
        """Set the journal's mode ID back; ControlError when it is not a mode of this board."""
        if not _whole(original) or original not in self.modes:
            raise ControlError(f"{str(original)[:20]} is not a mode of {sorted(self.modes)}")
        self.set(original)
        return Restored(wrote=[f"nvpmodel mode {original}"])

    def step(self, value: Any, direction: int) -> Any:
        """``n`` cycles through the modes."""
        if not self.steps:
            return value
        i = self.steps.index(value) if value in self.steps else -1
        return self.steps[(i + (1 if direction >= 0 else -1)) % len(self.steps)]


def discover_nvpmodel(root: SysfsRoot | None = None) -> Control:
    """The ``nvpmodel`` control: modes parsed from ``/etc/nvpmodel.conf`` (``< POWER_MODEL ID=n
    NAME=x >``).

    The tool is ``$ANUBIS_NVPMODEL`` or ``nvpmodel`` on PATH. Greyed "not
    Jetson" without tool or file, "needs root" for a user.
    """
    root = root or SysfsRoot()
    binary = os.environ.get("ANUBIS_NVPMODEL") or shutil.which("nvpmodel")
    conf = root.read("/etc/nvpmodel.conf")
    if not binary or not conf:
        return Control(knob="nvpmodel", target="jetson", unit="", reason="not Jetson")
    modes = {int(i): name for i, name in _MODE.findall(conf)}
    if not modes:
        return Control(
            knob="nvpmodel", target="jetson", unit="", reason="no modes in nvpmodel.conf"
        )
    ctl = NvpModel(binary, modes)
    if os.geteuid() != 0:
        ctl.reason = "needs root"
    return ctl


def discover_controls(root: SysfsRoot | None = None) -> list[Control]:
    """Every device control anubis knows, writable or with the reason it is not."""
    gpu = discover_power_limit()
    if gpu is None:  # no NVML: an AMD or Intel GPU's hwmon cap serves the same knob
        from anubis_tui.device.gpu_sysfs import discover_gpu_power_cap

        gpu = discover_gpu_power_cap(root)
    ctls = [
        gpu or Control(knob="power_limit_w", target="gpu", unit="W", reason="no GPU"),
        discover_cpu_max(root),
        discover_nvpmodel(root),
    ]
    return ctls


def close_controls(ctls: list[Control]) -> None:
    """Shut NVML down for the power-limit control (``nvmlShutdown``); errors are ignored."""
    for c in ctls:
        if isinstance(c, PowerLimit):
            with contextlib.suppress(Exception):
                c.m.nvmlShutdown()
