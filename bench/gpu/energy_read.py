"""The GPU energy counter read two ways, side by side: cost per call and the values.

    python bench/gpu/energy_read.py [--reads 30]

``nvmlDeviceGetTotalEnergyConsumption`` against ``nvmlDeviceGetFieldValues``
with ``NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (both mJ since the driver
loaded): median wall and thread-CPU ms per call, and the difference of the
two counters read back to back (mJ).
"""

from __future__ import annotations

import argparse
import statistics
import time

import pynvml as n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=30)
    a = ap.parse_args()
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    fid = n.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION

    def call():
        return float(n.nvmlDeviceGetTotalEnergyConsumption(h))

    def field():
        fv = n.nvmlDeviceGetFieldValues(h, [fid])[0]
        return float(fv.value.ullVal) if fv.nvmlReturn == 0 else float("nan")

    for name, fn in (("GetTotalEnergyConsumption", call), ("GetFieldValues(FI 83)", field)):
        walls, cpus, vals = [], [], []
        for _ in range(a.reads):
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            vals.append(fn())
            cpus.append((time.thread_time_ns() - c0) / 1e6)
            walls.append((time.perf_counter_ns() - w0) / 1e6)
            time.sleep(0.02)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(
            f"{name:28} wall {wall:7.3f} ms  cpu {cpu:7.3f} ms"
            f"  first {vals[0]:.0f} mJ  last {vals[-1]:.0f} mJ  distinct {len(set(vals))}"
        )
    diffs = []
    for _ in range(10):
        x, y = call(), field()
        diffs.append(y - x)
        time.sleep(0.05)
    print("field - call, back to back (mJ):", [round(d) for d in diffs])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
