"""What one read of each sampler group costs on this machine: wall time and this thread's CPU.

    python bench/gpu/read_cost.py [--reads 40]

For every group `discover()` finds (NVML's fast, state and energy groups on a
GPU server; process and estimate everywhere), `--reads` reads back to back:
median wall ms and median CPU ms (``time.thread_time_ns``) per read, the
group's period, and the share of one core the sampler spends on the group at
that period (CPU per read / period). A read that waits on the driver shows as
wall time without CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from anubis_tui.sources.registry import discover


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=40)
    a = ap.parse_args()
    total = 0.0
    print(f"{'source':12} {'group (first channel)':28} {'period s':>8} {'wall ms':>8} "
          f"{'cpu ms':>7} {'% core':>7}")  # fmt: skip
    for src in discover():
        for g in src.groups:
            walls, cpus = [], []
            for _ in range(a.reads):
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                g.read(time.monotonic_ns())
                cpus.append((time.thread_time_ns() - c0) / 1e6)
                walls.append((time.perf_counter_ns() - w0) / 1e6)
                time.sleep(0.01)
            cpu = statistics.median(cpus)
            share = cpu / 1e3 / g.period_s * 100
            total += share
            print(f"{src.name:12} {g.channels[0].id:28} {g.period_s:8.2f} "
                  f"{statistics.median(walls):8.3f} {cpu:7.3f} {share:7.3f}")  # fmt: skip
    print(f"all groups at their periods: {total:.3f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
