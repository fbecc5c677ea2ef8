"""Load time of a one-hour, 10 Hz, 30-channel recording, and bytes per sample value.

Writes the file through the real writer: 36,000 samples whose channels
update at 10 Hz (10 channels), 2 Hz (10) and 1 Hz (10) as real sources do
(None where a channel has no new reading), plus a decode Tokens batch every
50 ms and request events, then times `recording.reader.load` on it, and the one pass in time order
that `anubis report` and `replay` use (`RecordFile` + `in_time_order`).

    python bench/reader_load.py [--check]   # --check: fail above 3 s (target 1 s)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anubis_tui.recording.format import make_header, pack  # noqa: E402
from anubis_tui.recording.reader import RecordFile, in_time_order, load  # noqa: E402
from anubis_tui.recording.writer import RecordingWriter, open_output  # noqa: E402
from anubis_tui.records import Channel, Event, Footer, Sample, Tokens  # noqa: E402

CHECK_BOUND_S = 3.0


def make(path: str, seconds: int = 3600, rate: int = 10) -> tuple[int, int]:
    chans = [
        Channel(
            id=f"c{i}",
            label=f"c{i}",
            source="bench",
            kind="power",
            unit="W",
            scope="gpu",
            method="instant",
            update_period_s=0.1,
        )
        for i in range(30)
    ]
    w = RecordingWriter(open_output(path, force=True), make_header(chans, 0))
    sample_bytes = values = 0
    dt = 1_000_000_000 // rate
    for k in range(seconds * rate):
        t = k * dt
        vals: list[float | None] = []
        for i in range(30):
            every = 1 if i < 10 else (5 if i < 20 else 10)
            vals.append(100 + 50 * math.sin(k / 50 + i) if k % every == 0 else None)
        s = Sample(t, vals)
        sample_bytes += len(pack(s))
        values += len(vals)
        w.submit(s)
        w.submit(Tokens(t + dt // 2, 3, "decode", k // 20 + 1, t + 1))
        w.submit(Tokens(t + dt, 3, "decode", k // 20 + 1, t + dt // 2 + 1))
        if k % 20 == 0:
            w.submit(Event(t, "request_start", {"request": k // 20 + 1}))
        # the writer's queue holds 50,000: let it drain as a real session would
        while w.queue.qsize() > 20_000:
            time.sleep(0.001)
    w.close(Footer(seconds * 1_000_000_000, {"clean": True}))
    return sample_bytes, values


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    path = os.path.join(tempfile.gettempdir(), "anubis-bench-1h.msgpack")
    sb, nv = make(path)
    size = os.path.getsize(path)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        rec = load(path)
        best = min(best, time.perf_counter() - t)
    print(
        f"file {size / 2**20:.1f} MiB, {rec.values.shape[0]} samples × {rec.values.shape[1]} "
        f"channels, {len(rec.tok_t)} token records"
    )
    print(f"sample records: {sb / nv:.2f} bytes per channel-value (None counted as a value)")
    print(f"load: {best:.3f} s (best of 3)")
    one = float("inf")
    for _ in range(3):  # what `anubis report` and `replay` do instead: a chunk at a time
        t = time.perf_counter()
        n = sum(len(b) for b in in_time_order(RecordFile(path).batches()))
        one = min(one, time.perf_counter() - t)
    print(f"one pass in time order (RecordFile, in_time_order): {one:.3f} s, {n} records")
    os.unlink(path)
    if a.check and best > CHECK_BOUND_S:
        print(f"FAIL: load above {CHECK_BOUND_S} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
