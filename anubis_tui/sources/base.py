"""The Source ABC and the sysfs root every source reads through.

A source is discovered once (`discover`), then read by the sampler group by
group: a `ReadGroup` is a set of channels that change together and share one
native update period, so the sampler never polls a sensor faster than it
updates and reads expensive values (the NVML energy counter) at their own
lower cadence.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_tui.config import open_regular
from anubis_tui.records import PLAUSIBLE, Channel, Value


class SysfsRoot:
    """Resolves absolute sysfs/procfs paths under ``ANUBIS_SYSFS_ROOT`` (default ``/``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get("ANUBIS_SYSFS_ROOT", "/")
        self.root = Path(root)
        if os.path.realpath(self.root) != "/":
            self.root = linked_view(self.root)

    def path(self, absolute: str) -> Path:
        """`absolute` (``/sys/class/hwmon``) under this root."""
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str | Path) -> str | None:
        """The stripped text of a one-value attribute file; None if absent or empty.

        PermissionError propagates: callers turn it into a reason.
        """
        p = absolute if isinstance(absolute, Path) else self.path(absolute)
        try:
            text = p.read_text(errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            if isinstance(e, PermissionError):
                raise
            # -ENODATA from a disabled hwmon sensor, EIO from firmware.
            return None
        return text or None

    def glob(self, absolute_dir: str, pattern: str) -> list[Path]:
        """Sorted matches of `pattern` in `absolute_dir` under this root; [] if unlistable."""
        d = self.path(absolute_dir)
        try:
            return sorted(d.glob(pattern))
        except OSError:
            return []

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self.root)!r})"


MAX_VIEW_ENTRIES = 200_000
_VIEWS: dict[str, Path] = {}
_VIEWS_LOCK = threading.Lock()


def link_text(p: Path) -> str | None:
    """The target of a symlink stored as a plain file, or None.

    A fake tree checked out without symlink support (git's ``core.symlinks``
    false, or a copy that flattens links) holds each link as a small file whose
    only line is the link's target (``../../devices/…/hwmon3``). Real sysfs and
    procfs attributes never read so: this is only for fake roots.
    """
    try:
        if p.is_symlink() or not p.is_file() or p.stat().st_size > 1024:
            return None
        text = p.read_text(errors="replace").strip()
    except OSError:
        return None
    if "\n" in text or not text.startswith(("../", "./")):
        return None
    return text if os.path.lexists(p.parent / text) else None


def linked_view(root: Path) -> Path:
    """`root`, or a view of it with its flattened links made real again (see `link_text`).

    The view is a private temporary tree of real directories; each file is a
    symlink to the original (reads and writes reach it, counters advanced in
    place are seen) and each flattened link is a real relative symlink. Built
    once per root and process, removed at exit; `root` itself is never changed.
    """
    key = os.path.realpath(root)
    with _VIEWS_LOCK:
        if key in _VIEWS:
            return _VIEWS[key]
        links: list[tuple[str, str]] = []
        entries = 0
        for dirpath, _dirs, files in os.walk(key):
            for name in files:
                entries += 1
                if entries > MAX_VIEW_ENTRIES:
                    _VIEWS[key] = root
                    return root
                p = Path(dirpath, name)
                target = link_text(p) if not p.is_symlink() else None
                if target is not None:
                    links.append((os.path.relpath(p, key), target))
        if not links:
            _VIEWS[key] = root
            return root
        view = Path(tempfile.mkdtemp(prefix="anubis-sysfs-"))
        atexit.register(shutil.rmtree, view, True)
        flat = {rel for rel, _ in links}
        for dirpath, dirs, files in os.walk(key):
            rel_dir = os.path.relpath(dirpath, key)
            out_dir = view / rel_dir
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                src = os.path.join(dirpath, name)
                dst = out_dir / name
                if rel in flat:
                    continue
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                else:
                    os.symlink(src, dst)
        for rel, target in links:
            os.symlink(target, view / rel)
        _VIEWS[key] = view
        return view


def read_label(p: Path) -> str | None:
    """A ``*_label`` (or other text) attribute; None if absent, empty or not readable."""
    try:
        return read_text(p)
    except PermissionError:
        return None


def readable(p: Path) -> bool:
    """The attribute exists and reads, or answers EPERM: amdgpu's answer while the GPU is
    runtime-suspended (``amdgpu_pm_get_access_if_active``); it reads once the GPU wakes."""
    try:
        return read_int(p) is not None
    except PermissionError as e:
        return e.errno == errno.EPERM


def limit_c(p: Path) -> float | None:
    """A temperature limit in °C from a m°C attribute (``temp*_crit``, ``temp*_max``, a trip
    point); None if absent, not readable, or a placeholder (`temperature_limit_c`)."""
    try:
        return temperature_limit_c(read_int(p))
    except PermissionError:
        return None


def attr_index(name: str) -> int:
    """The number in an attribute or device name (``temp3_input`` → 3, ``card1`` → 1); 0 if none."""
    m = re.search(r"(\d+)", name)
    return int(m.group(1)) if m else 0


def slug(label: str, default: str) -> str:
    """A channel-id part from a label: lower case, each run of other characters one ``_``
    ("Package id 0" → ``package_id_0``); `default` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or default


TEMP_CRIT = (("critical_c", "crit"),)
"""`hwmon_inputs` limits: ``tempN_crit`` (m°C) as meta ``critical_c`` (°C)."""


@dataclass(frozen=True)
class HwmonInput:
    """One readable ``<typ>N_input`` attribute of a hwmon chip (see `hwmon_inputs`)."""

    path: Path
    typ: str  # temp | in | curr | power | energy
    index: int  # N
    label: str | None  # ``<typ>N_label``; None if absent or not readable
    meta: dict[str, Any]  # {"file": "hwmon <typ>N_input", and each limit found, in °C}

    @property
    def name(self) -> str:
        """The label, else ``<typ>N`` ("edge", "temp3")."""
        return self.label or f"{self.typ}{self.index}"


def hwmon_inputs(hw: Path, typ: str, limits: tuple[tuple[str, str], ...] = ()) -> list[HwmonInput]:
    """Every ``<typ>N_input`` of hwmon directory `hw` that reads (or answers EPERM, see
    `readable`), in N order, with its ``<typ>N_label``.

    `limits` is (meta key, attribute suffix) pairs read beside a temperature
    (``("critical_c", "crit")`` reads ``tempN_crit``; m°C → °C through
    `limit_c`; placeholders and absent files add nothing). Units of the
    input itself are the hwmon ABI's (Documentation/hwmon/sysfs-interface.rst:
    m°C, mV, mA, µW, µJ); the caller scales them.
    """
    out: list[HwmonInput] = []
    for f in sorted(hw.glob(f"{typ}*_input"), key=lambda p: attr_index(p.name)):
        n = attr_index(f.name)
        if not readable(f):
            continue
        meta: dict[str, Any] = {"file": f"hwmon {typ}{n}_input"}
        for key, suffix in limits:
            c = limit_c(hw / f"{typ}{n}_{suffix}")
            if c is not None:
                meta[key] = c
        out.append(HwmonInput(f, typ, n, read_label(hw / f"{typ}{n}_label"), meta))
    return out


def read_int(p: Path | str) -> int | None:
    """An integer attribute; None if absent, empty or not a number. PermissionError propagates.

    This runs on every tick, so an attribute's file stays open and is read
    with one ``pread`` at offset 0 (sysfs and procfs make the value again for
    every read from the start): one system call a reading instead of three.
    A read that fails drops the descriptor and opens the file afresh, so a
    device that went away reads as None and one that came back is found.
    O_NONBLOCK: a FIFO planted where an attribute should be reads as nothing
    (``pread`` on it fails) instead of blocking the sampler.
    """
    key = os.fspath(p)
    fd = _OPEN.get(key)
    if fd is not None:
        try:
            return _as_int(os.pread(fd, 64, 0))
        except OSError:
            _forget(key)
    try:
        fd = os.open(key, _READ_FLAGS)
    except PermissionError:
        raise
    except OSError:
        return None
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        os.close(fd)
        return None  # -ENODATA from a disabled hwmon sensor, EIO, a FIFO
    _keep(key, fd)
    return _as_int(raw)


def _as_int(raw: bytes) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


_OPEN: dict[str, int] = {}  # attribute path → open descriptor (read_int's, bounded)
_OPEN_LOCK = threading.Lock()
MAX_OPEN_ATTRS = 512


def _keep(key: str, fd: int) -> None:
    with _OPEN_LOCK:
        if key in _OPEN or len(_OPEN) >= MAX_OPEN_ATTRS:
            os.close(fd)  # another thread kept one, or the cache is full: read uncached
            return
        _OPEN[key] = fd


def _forget(key: str) -> None:
    with _OPEN_LOCK:
        fd = _OPEN.pop(key, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def close_attrs(prefix: str = "") -> None:
    """Close the descriptors read_int keeps (those under `prefix`; all by default)."""
    with _OPEN_LOCK:
        keys = [k for k in _OPEN if k.startswith(prefix)]
    for k in keys:
        _forget(k)


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
MAX_ATTR_BYTES = 1 << 16


def read_text(p: Path | str) -> str | None:
    """A text attribute (stripped); None if absent, empty, or not a regular file.

    Opened without blocking and checked to be a regular file (sysfs and procfs
    attributes are): a FIFO or device planted in the tree is skipped.
    """
    try:
        fd = open_regular(p)
    except PermissionError:
        raise
    except OSError:  # missing, or not a regular file
        return None
    try:
        raw = os.read(fd, MAX_ATTR_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    text = raw.decode(errors="replace").strip()
    return text or None


def unique_dirs(paths: list[Path]) -> Iterator[Path]:
    """Yield each real directory once, however many symlinks lead to it."""
    seen: set[str] = set()
    for p in paths:
        try:
            real = os.path.realpath(p)
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        yield p


@dataclass
class ReadGroup:
    """Channels read together by one call.

    `read(t_ns)` returns values aligned to `channels` (None for no reading)
    and may raise OSError, which the sampler counts and turns into Nones.
    `period_s` is the native update period: the sampler reads the group at
    most that often. `cost_s` is a measured or documented cost of one call.
    """

    channels: list[Channel]
    read: Callable[[int], list[Value]]
    period_s: float
    cost_s: float = 0.0
    # (kind, payload) a read wants recorded (a counter reset); the sampler emits and clears them.
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


MAX_PLAUSIBLE_W = 5000.0
"""No single energy counter here draws more (a whole 8-GPU board is about 6 kW)."""

PLACEHOLDER_MILLIDEG = frozenset({-273150, 65261850})
"""Values drivers write for "unset" in m°C: absolute zero (cros_ec on a Framework 16,
psutil#2959) and 65261.85 °C (NVMe ``temp*_max``, lm-sensors#574)."""


def temperature_limit_c(millideg: int | None) -> float | None:
    """A temperature limit in °C from a m°C attribute, or None for an unset placeholder.

    Limits (``temp*_crit``, ``temp*_max``, trip points, NVML thresholds) are
    real only above 0 °C and within the plausible range: -273150 and
    65261850 are what drivers write when no limit is set.
    """
    if millideg is None or millideg in PLACEHOLDER_MILLIDEG:
        return None
    c = millideg / 1000
    return c if 0 < c <= PLAUSIBLE["temperature"][1] else None


@dataclass
class EnergyCounter:
    """Turns a hardware energy counter's raw readings into cumulative joules and watts.

    A counter that goes down either wrapped (it passed `range_j`) or was reset
    (a driver reload, a firmware glitch). A wrap is taken only when it is
    plausible: the energy it implies, range − last + now, could have been
    drawn in the time since the last reading at `max_w`. Otherwise the drop is
    a reset: that interval gets no energy and no power (nothing is invented),
    the running total carries on from where it was, and a note records it.
    """

    channel: str
    range_j: float | None
    max_w: float = MAX_PLAUSIBLE_W
    last: float | None = None
    last_t: int = 0
    offset: float = 0.0
    wraps: int = 0
    resets: int = 0

    def update(
        self, raw_j: float, t_ns: int, notes: list[tuple[str, dict[str, Any]]] | None = None
    ) -> tuple[float, float | None]:
        """(cumulative J, power in W over the interval or None)."""
        power: float | None = None
        if self.last is not None:
            dt = (t_ns - self.last_t) / 1e9
            delta: float | None = raw_j - self.last
            if delta is not None and delta < 0:
                wrapped = (self.range_j - self.last + raw_j) if self.range_j else None
                if wrapped is not None and 0 <= wrapped <= self.max_w * max(dt, 0.0):
                    self.offset += self.range_j or 0.0
                    self.wraps += 1
                    delta = wrapped
                else:
                    self.offset += self.last - raw_j  # the total does not move
                    self.resets += 1
                    delta = None
                    if notes is not None:
                        notes.append(
                            (
                                "counter_reset",
                                {
                                    "channel": self.channel,
                                    "from_j": self.last,
                                    "to_j": raw_j,
                                    "seconds": dt,
                                    "range_j": self.range_j,
                                },
                            )
                        )
            if delta is not None and dt > 0:
                power = delta / dt
        self.last, self.last_t = raw_j, t_ns
        return raw_j + self.offset, power


def derived_power(energy: Channel, cid: str, label: str) -> Channel:
    """The power channel (W, method ``derived``: ΔE/Δt between two readings) read beside the
    energy counter channel `energy`; same source, scope, period and meta, plus
    ``energy_channel`` naming the counter."""
    return Channel(
        id=cid,
        label=label,
        source=energy.source,
        kind="power",
        unit="W",
        scope=energy.scope,
        method="derived",
        update_period_s=energy.update_period_s,
        meta={**energy.meta, "energy_channel": energy.id},
    )


@dataclass
class Source(ABC):
    """A family of sensors, discovered once.

    Subclasses set `available`/`reason` and build `groups` in `discover`.
    An unavailable source still appears in `anubis sensors` with its reason,
    and a meter it found but cannot read goes into `missing` (what, why, and
    the fix where there is one), available or not.
    """

    name: str
    available: bool = False
    reason: str = ""
    groups: list[ReadGroup] = field(default_factory=list)
    # Meters this source knows exist but cannot read, each "what: why (fix)", e.g.
    # "GPU0 power not measured: NVML Not Supported": system power names them as not covered.
    missing: list[str] = field(default_factory=list)

    @classmethod
    @abstractmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """Probe the machine; return zero or more sources (unavailable ones with a reason)."""

    @property
    def channels(self) -> list[Channel]:
        """Every channel of every group, in group order (the order `ReadGroup.read` fills)."""
        return [c for g in self.groups for c in g.channels]

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing open
        """Release handles (NVML shutdown). Optional."""


@dataclass
class DiscoveryContext:
    """What discovery may use: the sysfs root, config and the sources found so far."""

    root: SysfsRoot
    config: dict[str, object] = field(default_factory=dict)
    found: list[Source] = field(default_factory=list)
