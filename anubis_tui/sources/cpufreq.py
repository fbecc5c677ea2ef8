"""CPU frequency (cpufreq policies) and Intel ``thermal_throttle`` counters.

cpufreq reports the mean current frequency over policies and a throttle
channel lit when a policy's ``scaling_max_freq`` is below the hardware's
``cpuinfo_max_freq`` (a cap someone or something set). Intel's package
throttle counters are package-scoped copies on every CPU: one CPU per package
is read, never summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from anubis_tui.records import Channel, Value
from anubis_tui.sources.base import DiscoveryContext, ReadGroup, Source, read_int, unique_dirs

CPUFREQ_PERIOD_S = 0.1
THROTTLE_PERIOD_S = 0.5
CPUFREQ_FLAGS = {0x1: "freq_capped"}
INTEL_FLAGS = {0x1: "thermal", 0x2: "thermal"}  # package, core


@dataclass
class CpufreqSource(Source):
    """The mean current CPU clock over cpufreq policies (``scaling_cur_freq``, kHz → Hz)
    and a ``freq_capped`` flag lit while any policy's ``scaling_max_freq`` is below its
    ``cpuinfo_max_freq``. Unavailable (VM, container) without cpufreq.
    """

    order: ClassVar[int] = 50
    policies: list[Path] = field(default_factory=list)
    _paths: list[tuple[str, str, int | None]] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source over ``/sys/devices/system/cpu/cpu*/cpufreq`` (each policy once), or one
        unavailable source with the reason. ``max_hz`` is the highest ``cpuinfo_max_freq``.
        """
        dirs = ctx.root.glob("/sys/devices/system/cpu", "cpu[0-9]*/cpufreq")
        policies = [p for p in unique_dirs(dirs) if (p / "scaling_cur_freq").exists()]
        if not policies:
            return [cls(name="cpufreq", reason="no cpufreq (VM or container)")]
        maxes = [read_int(p / "cpuinfo_max_freq") for p in policies]
        hw_max = max((m for m in maxes if m), default=None)
        meta: dict[str, object] = {"policies": len(policies)}
        if hw_max:
            meta["max_hz"] = hw_max * 1e3
        src = cls(
            name="cpufreq", available=True, reason=f"{len(policies)} policies", policies=policies
        )
        chans = [
            Channel(
                id="cpufreq.mean",
                label="CPU clock (mean of policies)",
                source=src.name,
                kind="frequency",
                unit="Hz",
                scope="cpu",
                method="instant",
                update_period_s=CPUFREQ_PERIOD_S,
                meta=meta,
            ),
            Channel(
                id="cpufreq.capped",
                label="CPU max-frequency cap",
                source=src.name,
                kind="throttle",
                unit="flags",
                scope="cpu",
                method="instant",
                update_period_s=CPUFREQ_PERIOD_S,
                meta={"flags": dict(CPUFREQ_FLAGS)},
            ),
        ]
        src.groups = [ReadGroup(chans, src._read, CPUFREQ_PERIOD_S, cost_s=1e-5)]
        return [src]

    def _read(self, t_ns: int) -> list[Value]:
        if not self._paths:
            # cpuinfo_max_freq is the hardware's: read once, not every tick.
            self._paths = [
                (
                    str(p / "scaling_cur_freq"),
                    str(p / "scaling_max_freq"),
                    read_int(p / "cpuinfo_max_freq"),
                )
                for p in self.policies
            ]
        vals: list[int] = []
        capped = 0
        for cur_p, smax_p, hmax in self._paths:
            cur = read_int(cur_p)
            if cur:
                vals.append(cur)
            smax = read_int(smax_p)
            if smax and hmax and smax < hmax:
                capped = 1
        return [sum(vals) / len(vals) * 1e3 if vals else None, capped]


@dataclass
class _Package:
    ident: str
    pkg_dir: Path
    core_dirs: list[Path]
    last_pkg_ms: int | None = None
    last_core_ms: int | None = None
    pkg_file: str = ""
    core_files: list[str] | None = None
    pkg_count_file: str = ""
    core_count_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Paths as strings, built once: pathlib joins cost more than the reads themselves.
        self.pkg_file = str(self.pkg_dir / "package_throttle_total_time_ms")
        self.core_files = [str(d / "core_throttle_total_time_ms") for d in self.core_dirs]
        self.pkg_count_file = str(self.pkg_dir / "package_throttle_count")
        self.core_count_files = [str(d / "core_throttle_count") for d in self.core_dirs]


@dataclass
class IntelThrottleSource(Source):
    """Intel ``thermal_throttle`` counters per package: a derived throttle flag (package
    0x1, core 0x2, lit while throttle time grew since the last read), the package's
    throttled time (``package_throttle_total_time_ms``, ms → s) and its package and
    summed core event counts. Read through one CPU per package, never summed across
    CPUs (the package counters are copies).
    """

    order: ClassVar[int] = 51
    packages: list[_Package] = field(default_factory=list)

    @classmethod
    def discover(cls, ctx: DiscoveryContext) -> list[Source]:
        """One source with the packages of ``cpu*/thermal_throttle`` (grouped by
        ``topology/physical_package_id``), or one unavailable source (not Intel).
        """
        dirs = ctx.root.glob("/sys/devices/system/cpu", "cpu[0-9]*/thermal_throttle")
        if not dirs:
            return [cls(name="intel-throttle", reason="no thermal_throttle counters (Intel only)")]
        by_pkg: dict[int, list[Path]] = {}
        for d in sorted(dirs, key=lambda p: int(p.parent.name[3:])):
            pkg = read_int(d.parent / "topology" / "physical_package_id") or 0
            by_pkg.setdefault(pkg, []).append(d)
        src = cls(name="intel-throttle", available=True)
        chans: list[Channel] = []
        for pkg, ds in sorted(by_pkg.items()):
            src.packages.append(_Package(f"package-{pkg}", ds[0], ds))
            chans.append(
                Channel(
                    id=f"intel_throttle.package-{pkg}",
                    label=f"package {pkg} throttling",
                    source=src.name,
                    kind="throttle",
                    unit="flags",
                    scope="cpu-package",
                    method="derived",
                    update_period_s=THROTTLE_PERIOD_S,
                    meta={
                        "flags": dict(INTEL_FLAGS),
                        "note": "lit while throttle time grew in the last interval",
                    },
                )
            )
            chans.append(
                Channel(
                    id=f"intel_throttle.package-{pkg}.time",
                    label=f"package {pkg} throttled time",
                    source=src.name,
                    kind="duration",
                    unit="s",
                    scope="cpu-package",
                    method="counter",
                    update_period_s=THROTTLE_PERIOD_S,
                    meta={},
                )
            )
            for which, label in (("package", "package"), ("core", "all cores'")):
                chans.append(
                    Channel(
                        id=f"intel_throttle.package-{pkg}.{which}_count",
                        label=f"package {pkg} {label} throttle events",
                        source=src.name,
                        kind="count",
                        unit="events",
                        scope="cpu-package",
                        method="counter",
                        update_period_s=THROTTLE_PERIOD_S,
                        meta={"file": f"{which}_throttle_count", "note": "since boot"},
                    )
                )
        src.reason = f"{len(src.packages)} package(s), read through one CPU each"
        src.groups = [ReadGroup(chans, src._read, THROTTLE_PERIOD_S, cost_s=1e-5)]
        return [src]

    def _read(self, t_ns: int) -> list[Value]:
        out: list[Value] = []
        for p in self.packages:
            pkg_ms = read_int(p.pkg_file)
            core_vals = [read_int(f) for f in p.core_files or []]
            core_ms = sum(v for v in core_vals if v is not None) if core_vals else None
            flags = 0
            if pkg_ms is not None and p.last_pkg_ms is not None and pkg_ms > p.last_pkg_ms:
                flags |= 0x1
            if core_ms is not None and p.last_core_ms is not None and core_ms > p.last_core_ms:
                flags |= 0x2
            first = p.last_pkg_ms is None and p.last_core_ms is None
            p.last_pkg_ms, p.last_core_ms = pkg_ms, core_ms
            out.append(None if first else flags)
            out.append(None if pkg_ms is None else pkg_ms / 1000)
            out.append(read_int(p.pkg_count_file))
            counts = [read_int(f) for f in p.core_count_files]
            known = [c for c in counts if c is not None]
            out.append(sum(known) if known else None)
        return out
