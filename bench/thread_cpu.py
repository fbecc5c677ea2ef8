"""CPU and wake-ups of each thread of a running process, from /proc (Linux).

    python bench/thread_cpu.py PID [--seconds 20]

For every thread of PID: its CPU over `--seconds` as % of one core (the first
field of ``/proc/PID/task/TID/schedstat``: ns on a CPU, finer than the 10 ms
ticks of ``stat``), its context switches a second (voluntary plus
involuntary, from ``status``: about one per wake-up of an idle thread) and
the CPU each costs (µs). Threads are listed by TID, in the order they
started; anubis's are main, bus, writer, sampler, sampler watchdog, worker
reader (the names are Python's, which /proc does not see).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def snapshot(pid: int) -> dict[int, tuple[int, int]]:
    """TID → (CPU ns, context switches) of every thread of `pid` that can be read now."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"{base}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue  # the thread ended between listing and reading
        switches = int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
        out[int(tid)] = (ns, switches)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    try:
        before = snapshot(a.pid)
    except OSError as e:
        print(f"thread_cpu: no process {a.pid}: {e.strerror}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    time.sleep(a.seconds)
    after = snapshot(a.pid) if os.path.isdir(f"/proc/{a.pid}") else {}
    wall = time.monotonic() - t0
    total = 0.0
    for tid, (ns, sw) in sorted(after.items()):
        ns0, sw0 = before.get(tid, (ns, sw))
        pct = 100 * (ns - ns0) / 1e9 / wall
        wakes = (sw - sw0) / wall
        total += pct
        per = f"{pct * 1e4 / wakes:7.1f}" if wakes else "      —"
        print(f"{tid:>8} {pct:6.3f} %  wakes/s {wakes:6.1f}  µs/wake {per}")
    print(f"total {total:.3f} % of one core over {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
