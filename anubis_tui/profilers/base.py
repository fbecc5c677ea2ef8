"""The Profiler ABC: a dynamic profiler the controller can start, stop and re-rate.

Errors are values: `start` returns None or a one-line message a user can act
on; nothing here raises into the UI. Built-ins register through the
``anubis.profilers`` entry points, as a third party would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from anubis_tui.plugins import load_plugins
from anubis_tui.profilerspec import RATES_HZ  # noqa: F401 (re-exported: profilers.controller, cli.sweep)

PTRACE_FIX = (
    "no ptrace permission: run anubis as root, or give it CAP_SYS_PTRACE "
    "(docker: --cap-add SYS_PTRACE; kubernetes: securityContext.capabilities.add SYS_PTRACE), "
    "or allow attaching with `sudo sysctl kernel.yama.ptrace_scope=0` "
    "(1 also works: the worker declares anubis as its tracer; 2 needs CAP_SYS_PTRACE, 3 forbids it)"
)


@dataclass
class ProfilerStatus:
    """A profiler's state: `running`, its own process `pid`, `rate_hz` (samples a second),
    `samples` so far where known, its `artifact` file and `started_ns`
    (``time.monotonic_ns()`` at start).
    """

    running: bool
    pid: int | None = None  # the profiler's own process, when it has one
    rate_hz: float | None = None
    samples: int | None = None
    artifact: Path | None = None
    started_ns: int | None = None


class Profiler(ABC):
    """One dynamic profiler. Subclasses document what `rate_hz` means for them."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(usable here, reason if not)."""

    @abstractmethod
    def start(self, target_pid: int, rate_hz: float, out_dir: Path) -> str | None:
        """Begin sampling `target_pid`; None on success, else the reason it failed."""

    @abstractmethod
    def stop(self) -> Path | None:
        """Stop and write the artifact; return its path (None if nothing was written)."""

    @abstractmethod
    def status(self) -> ProfilerStatus:
        """Running or not, its own pid, samples so far when known."""


BUILTINS = {
    "py-spy": "anubis_tui.profilers.pyspy:PySpy",
    "scalene": "anubis_tui.profilers.scalene:Scalene",
}


def profiler_classes(warn: Callable[[str], None] | None = None) -> dict[str, type[Profiler]]:
    """Built-in and plugin profilers (``anubis.profilers`` entry points); broken ones skipped."""
    return load_plugins("anubis.profilers", BUILTINS, Profiler, warn)
