"""`anubis report` at scale: many channels, many segments. Time and peak memory.

Writes a synthetic recording (test input, not a measurement) through the
real writer: `--channels` channels (power, temperatures, throttle flags),
`--segments` profiler segments of `--segment-s` seconds, samples at
`--rate` Hz where each group is due at its own period (most values nil, as
in a real session), decode tokens in 50 ms batches. Then builds the report
as `anubis report` does (`report_file`: one pass, a chunk at a time) in a
fresh process, and prints wall and CPU seconds and peak RSS. ``--file PATH``
reports an existing recording instead of writing one (build the 24 h case
once, keep it).

    python bench/report_scale.py [--channels 2000] [--segments 1000] [--check]

``--hours H`` is the long-session case instead: an H-hour, 10 Hz, 30-channel
recording made by `bench/reader_load.py`'s generator (channels at 10, 2 and
1 Hz, a decode batch every 50 ms); the goal for 24 h is a report in at most
200 MB of peak RSS and 30 s (``--check`` fails above them).

    python bench/report_scale.py --hours 24 [--check] [--keep /tmp/24h.msgpack]
    python bench/report_scale.py --file /tmp/24h.msgpack --hours 24 --check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anubis_tui.recording.format import make_header  # noqa: E402
from anubis_tui.recording.writer import open_output  # noqa: E402
from anubis_tui.records import Channel, Event, Footer, Sample, Tokens  # noqa: E402
from anubis_tui.sources.nvml import NVML_FLAGS  # noqa: E402

S = 1_000_000_000


def write(path: Path, channels: int, segments: int, segment_s: float, rate: float) -> int:
    chans = [
        Channel(id="system.power", label="p", source="anubis", kind="power", unit="W",
                scope="components", method="derived", update_period_s=0.0),
        Channel(id="system.energy", label="e", source="anubis", kind="energy", unit="J",
                scope="components", method="counter", update_period_s=0.0),
    ]  # fmt: skip
    for i in range(channels - 2):
        kind = ("power", "temperature", "throttle")[0 if i % 20 else (1 if i % 40 else 2)]
        chans.append(
            Channel(
                id=f"c{i}.{kind}",
                label=f"c{i}",
                source="bench",
                kind=kind,
                unit={"power": "W", "temperature": "°C", "throttle": "flags"}[kind],
                scope="gpu",
                method="instant",
                update_period_s=1.0 if i % 10 else 0.1,
                meta={"flags": dict(NVML_FLAGS)} if kind == "throttle" else {},
            )
        )
    out = open_output(str(path), force=True)
    packer = msgpack.Packer(use_bin_type=True)

    class Direct:  # every record, in order, none dropped (the writer's queue would drop)
        def submit(self, rec: object) -> None:
            out.write(packer.pack(rec.to_plain()))  # type: ignore[attr-defined]

        def close(self, footer: Footer) -> None:
            self.submit(footer)
            out.close()

    w = Direct()
    w.submit(make_header(chans, 0))
    dt = int(S / rate)
    end = int(segments * segment_s * S)
    fast = [j for j, c in enumerate(chans) if c.update_period_s < 1.0]
    t, energy, req, k = 0, 0.0, 0, 0
    next_seg = 0
    seg = 0
    while t < end:
        if t >= next_seg:
            kind = "profiler_on" if seg % 2 else "profiler_off"
            w.submit(Event(t, kind, {"profiler": "py-spy", "rate_hz": 100.0}))
            seg += 1
            next_seg = int(seg * segment_s * S)
        vals: list = [None] * len(chans)
        full = (t // dt) % int(rate) == 0
        for j in range(len(chans)) if full else fast:
            c = chans[j]
            hot = c.kind == "throttle" and seg % 7 == 0
            vals[j] = 4 if hot else (60.0 if c.kind == "temperature" else 100.0)
        vals[0], vals[1] = 200.0, energy
        w.submit(Sample(t, vals))
        if (t // dt) % int(rate) == 0:
            req += 1
            w.submit(Event(t, "request_start", {"request": req}))
        for b in range(int(dt / (S // 20))):
            bt = t + (b + 1) * (S // 20)
            w.submit(Tokens(bt, 2, "decode", req, bt - S // 20 + 1))
        energy += 200.0 * dt / S
        t += dt
        k += 1
    w.close(Footer(t, {"clean": True}))
    return k


CHILD = """
import sys, time, resource, json
t = time.perf_counter()
c = time.process_time()
from anubis_tui.analysis.report import report_file, render
fold = report_file(sys.argv[1])  # what `anubis report` does: one pass, a chunk at a time
t_load = time.perf_counter() - t
r = fold.result(fold.recovery)
render(r)
print(json.dumps({"load_s": t_load, "total_s": time.perf_counter() - t,
                  "cpu_s": time.process_time() - c,
                  "segments": len(r["segments"]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=2000)
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--segment-s", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--max-s", type=float, default=15.0, help="bound for --check (goal: 5 s)")
    ap.add_argument("--hours", type=float, help="the long-session case: hours at 10 Hz")
    ap.add_argument("--max-mb", type=float, default=200.0, help="peak RSS bound (--hours)")
    ap.add_argument("--file", type=Path, help="report this recording instead of writing one")
    ap.add_argument("--keep", type=Path, help="write the --hours recording here and keep it")
    a = ap.parse_args()
    if a.hours is not None:
        a.max_s = 30.0 if a.max_s == 15.0 else a.max_s
    with tempfile.TemporaryDirectory() as d:
        path = a.file or a.keep or Path(d) / "scale.msgpack"
        t = time.perf_counter()
        if a.file is not None:
            what = str(a.file)
        elif a.hours is not None:
            sys.path.insert(0, str(ROOT / "bench"))
            from reader_load import make

            make(str(path), seconds=int(a.hours * 3600))
            what = f"{a.hours:g} h at 10 Hz × 30 channels"
        else:
            samples = write(path, a.channels, a.segments, a.segment_s, a.rate)
            what = f"{samples} samples × {a.channels} channels, {a.segments} segments"
        size = path.stat().st_size
        print(f"{what}: {size / 2**20:.1f} MiB ({time.perf_counter() - t:.1f} s)")
        p = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=False
        )
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return 1
        r = json.loads(p.stdout)
    print(
        f"report: fold {r['load_s']:.2f} s, total {r['total_s']:.2f} s wall, "
        f"{r['cpu_s']:.2f} s CPU, {r['segments']} segments, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] * 2**20 / size:.1f}× the file)"
    )
    if a.check and r["total_s"] > a.max_s:
        print(f"FAIL: report took {r['total_s']:.1f} s > {a.max_s} s", file=sys.stderr)
        return 1
    if a.check and a.hours is not None and r["peak_rss_mb"] > a.max_mb:
        print(f"FAIL: report peaked at {r['peak_rss_mb']:.0f} MB > {a.max_mb} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
