"""psutil: system CPU and memory, and per-process CPU and memory by role.

Roles are fixed (``self`` = anubis, ``worker`` = the inference process,
``profiler`` = py-spy or scalene) so the channel table does not change when
a process comes and goes: a role with no process reads None. Process CPU is
a ratio of one core (1.0 = one core busy; above 1 with several threads).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import ClassVar

import psutil

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, ReadGroup, Source

PROCESS_PERIOD_S = 0.5  # CPU times tick at 100-250 Hz; shorter windows are noise
ROLES = ("self", "worker", "profiler")


@dataclass
class _Tracked:
    proc: psutil.Process
    last_cpu_s: float | None = None
    last_t: int = 0


@dataclass
class ProcessSource(Source):
    """psutil: system CPU utilisation (ratio of all cores) and memory used (bytes), and per
    role (`ROLES`) a process's CPU (ratio of one core) and resident memory (bytes).
    A role with no process reads None; `attach` sets one.
    """

    order: ClassVar[int] = 80
    tracked: dict[str, _Tracked] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_sys: tuple[float, float] | None = None

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """Always one available source (psutil is a dependency); anubis itself is ``self``."""
        src = cls(name="process", available=True, reason=f"psutil {psutil.__version__}")
        chans = [
            Channel(
                id="sys.cpu",
                label="CPU utilisation (all cores)",
                source=src.name,
                kind="utilization",
                unit="ratio",
                scope="system",
                method="average:0.5s",
                update_period_s=PROCESS_PERIOD_S,
                meta={"cpus": psutil.cpu_count()},
            ),
            Channel(
                id="sys.mem",
                label="memory used",
                source=src.name,
                kind="memory",
                unit="bytes",
                scope="system",
                method="instant",
                update_period_s=PROCESS_PERIOD_S,
                meta={"total": psutil.virtual_memory().total},
            ),
        ]
        for role in ROLES:
            chans.append(
                Channel(
                    id=f"proc.{role}.cpu",
                    label=f"{role} CPU (cores)",
                    source=src.name,
                    kind="utilization",
                    unit="ratio",
                    scope="process",
                    method="average:0.5s",
                    update_period_s=PROCESS_PERIOD_S,
                    meta={"role": role, "note": "1.0 = one core"},
                )
            )
            chans.append(
                Channel(
                    id=f"proc.{role}.rss",
                    label=f"{role} memory (RSS)",
                    source=src.name,
                    kind="memory",
                    unit="bytes",
                    scope="process",
                    method="instant",
                    update_period_s=PROCESS_PERIOD_S,
                    meta={"role": role},
                )
            )
        src.attach("self", os.getpid())
        src.groups = [ReadGroup(chans, src._read, PROCESS_PERIOD_S, cost_s=2e-4)]
        return [src]

    def attach(self, role: str, pid: int | None) -> None:
        """Follow `pid` in `role` (None detaches)."""
        if role not in ROLES:
            raise ValueError(f"unknown process role {role!r}")
        with self._lock:
            if pid is None:
                self.tracked.pop(role, None)
                return
            try:
                self.tracked[role] = _Tracked(psutil.Process(pid))
            except psutil.Error:
                self.tracked.pop(role, None)

    def _read(self, t_ns: int) -> list[Value]:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        total = sum(times)
        util: float | None = None
        if self._last_sys is not None:
            db, dt = busy - self._last_sys[0], total - self._last_sys[1]
            util = max(0.0, min(1.0, db / dt)) if dt > 0 else None
        self._last_sys = (busy, total)
        out: list[Value] = [util, float(psutil.virtual_memory().used)]
        with self._lock:
            tracked = dict(self.tracked)
        for role in ROLES:
            tr = tracked.get(role)
            if tr is None:
                out += [None, None]
                continue
            try:
                with tr.proc.oneshot():
                    ct = tr.proc.cpu_times()
                    rss = float(tr.proc.memory_info().rss)
            except psutil.Error:
                out += [None, None]
                continue
            cpu_s = ct.user + ct.system + ct.children_user + ct.children_system
            ratio = None
            if tr.last_cpu_s is not None and t_ns > tr.last_t:
                ratio = max(0.0, (cpu_s - tr.last_cpu_s) / ((t_ns - tr.last_t) / 1e9))
            tr.last_cpu_s, tr.last_t = cpu_s, t_ns
            out += [ratio, rss]
        return out
