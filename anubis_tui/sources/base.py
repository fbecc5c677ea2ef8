"""The Source ABC and the sysfs root every source reads through.

A source is discovered once (`discover`), then read by the sampler group by
group: a `ReadGroup` is a set of channels that change together and share one
native update period, so the sampler never polls a sensor faster than it
updates and reads expensive values (the NVML energy counter) at their own
lower cadence.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anubis_tui.records import Channel, Value


class SysfsRoot:
    """Resolves absolute sysfs/procfs paths under ``ANUBIS_SYSFS_ROOT`` (default ``/``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get("ANUBIS_SYSFS_ROOT", "/")
        self.root = Path(root)

    def path(self, absolute: str) -> Path:
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
        d = self.path(absolute_dir)
        try:
            return sorted(d.glob(pattern))
        except OSError:
            return []

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self.root)!r})"


def read_int(p: Path | str) -> int | None:
    """An integer attribute; None if absent, empty or not a number. PermissionError propagates.

    Plain os.open/os.read: this runs on every tick, and pathlib's read_text
    costs several times more per call.
    """
    try:
        fd = os.open(p, os.O_RDONLY)
    except PermissionError:
        raise
    except OSError:
        return None
    try:
        raw = os.read(fd, 64)
    except OSError:
        return None  # -ENODATA from a disabled hwmon sensor, EIO from firmware
    finally:
        os.close(fd)
    try:
        return int(raw)
    except ValueError:
        return None


def read_text(p: Path) -> str | None:
    try:
        text = p.read_text(errors="replace").strip()
    except PermissionError:
        raise
    except OSError:
        return None
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


@dataclass
class Source(ABC):
    """A family of sensors, discovered once.

    Subclasses set `available`/`reason` and build `groups` in `discover`.
    An unavailable source still appears in `anubis sensors` with its reason.
    """

    name: str
    available: bool = False
    reason: str = ""
    groups: list[ReadGroup] = field(default_factory=list)

    @classmethod
    @abstractmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """Probe the machine; return zero or more sources (unavailable ones with a reason)."""

    @property
    def channels(self) -> list[Channel]:
        return [c for g in self.groups for c in g.channels]

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing open
        """Release handles (NVML shutdown). Optional."""


@dataclass
class DiscoveryContext:
    """What discovery may use: the sysfs root, config and the sources found so far."""

    root: SysfsRoot
    config: dict[str, object] = field(default_factory=dict)
    found: list[Source] = field(default_factory=list)


def unavailable(cls_name: str, reason: str) -> list[Source]:
    return [_Unavailable(name=cls_name, available=False, reason=reason)]


@dataclass
class _Unavailable(Source):
    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        return []
