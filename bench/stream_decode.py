"""CPU cost of the shared stream reader against a bare msgpack loop, per record.

Decodes the first `--mib` MiB of a recording in 64 KiB chunks, with the loop the
recording reader had before issue 22 (``Unpacker.unpack`` and ``tell`` per
record) and with `anubis_tui.stream.StreamReader` (objects and end offsets per
chunk), alternately `--rounds` times, and prints the CPU seconds of each.

    python bench/stream_decode.py FILE [--mib 40] [--rounds 3]

A recording to try: `bench/reader_load.py`'s file, or any `anubis record`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anubis_tui.recording.reader import RECORD_LIMITS  # noqa: E402
from anubis_tui.stream import CHUNK, StreamReader  # noqa: E402


def bare(data: bytes) -> int:
    u = RECORD_LIMITS.unpacker()
    unpack, tell = u.unpack, u.tell
    n = 0
    for i in range(0, len(data), CHUNK):
        u.feed(data[i : i + CHUNK])
        while True:
            try:
                unpack()
            except msgpack.OutOfData:
                break
            tell()
            n += 1
    return n


def shared(data: bytes) -> int:
    r = StreamReader(RECORD_LIMITS, on_error="stop")
    n = 0
    for i in range(0, len(data), CHUNK):
        n += len(r.feed(data[i : i + CHUNK]).objects)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--mib", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        data = f.read(a.mib << 20)
    for _ in range(a.rounds):
        for fn in (bare, shared):
            t = time.process_time()
            n = fn(data)
            s = time.process_time() - t
            print(f"{fn.__name__:7s} {n:9,d} records {s:6.2f} s CPU {1e6 * s / n:6.2f} µs/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
