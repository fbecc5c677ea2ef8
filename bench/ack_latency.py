"""Key→ack latency of `anubis agent` over a pipe, and how it answers 2 MB of zero bytes.

    python bench/ack_latency.py [--markers 20] [--zeros]

Starts ``anubis agent --no-model`` (real sampler, bus and writer), sends
markers one at a time (0.13 s apart, off the writer's flush beat) and times
each from the write of the command to the read of its ``ack``. With
``--zeros`` it then writes 2,000,000 zero bytes and a marker, and reports how
many acks came back and how long the marker waited. Figures only: no bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import msgpack

from anubis_tui.recording.reader import RecordStream
from anubis_tui.records import Event, Record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markers", type=int, default=20)
    ap.add_argument("--zeros", action="store_true")
    args = ap.parse_args()
    p = subprocess.Popen(
        [sys.executable, "-m", "anubis_tui", "agent", "--no-model"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert p.stdin is not None and p.stdout is not None
    stream, fd = RecordStream(), p.stdout.fileno()
    acks: list[Event] = []

    def until(pred: Callable[[Record], bool]) -> None:
        while True:
            data = os.read(fd, 65536)
            if not data:
                raise SystemExit("the agent ended")
            for r in stream.feed(data):
                if isinstance(r, Event) and r.kind == "ack":
                    acks.append(r)
                if pred(r):
                    return

    def acked(cid: object) -> Callable[[Record], bool]:
        return lambda r: isinstance(r, Event) and r.kind == "ack" and r.payload.get("id") == cid

    until(lambda r: True)  # the Header
    time.sleep(1.0)
    took = []
    for i in range(args.markers):
        t = time.monotonic()
        p.stdin.write(msgpack.packb({"id": i, "cmd": "marker", "label": "x"}))
        p.stdin.flush()
        until(acked(i))
        took.append(1000 * (time.monotonic() - t))
        time.sleep(0.13)
    print(
        f"marker key→ack over a pipe: median {statistics.median(took):.1f} ms, "
        f"max {max(took):.1f} ms, n={len(took)}"
    )
    if args.zeros:
        before = len(acks)
        t = time.monotonic()
        p.stdin.write(b"\0" * 2_000_000 + msgpack.packb({"id": "z", "cmd": "marker"}))
        p.stdin.flush()
        until(acked("z"))
        print(
            f"2 MB of zero bytes, then a marker: {len(acks) - before} acks, "
            f"the marker acknowledged {time.monotonic() - t:.2f} s after the write began"
        )
    p.stdin.close()
    p.wait(30)


if __name__ == "__main__":
    main()
