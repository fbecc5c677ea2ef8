"""Drive `anubis agent` on this machine from a consumer process: send commands, check the acks.

    python3 bench/gpu/agent_check.py [agent flags, e.g. --gpu-layers -1]

Prints each command with its acknowledgement and the time from sending it to its ack,
the decode tok/s and GPU power seen in the stream, and whether the stream ended with a
Footer. Exit status 1 if any check fails.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import msgpack

from anubis_tui.recording.reader import RecordStream
from anubis_tui.records import Event, Footer, Sample, Tokens

COMMANDS = [
    ({"cmd": "marker", "label": "agent check"}, True),
    ({"cmd": "knob_step", "name": "threads", "direction": -1}, True),
    ({"cmd": "profiler", "name": "py-spy"}, True),
    ({"cmd": "rate_step", "direction": 1}, None),  # refused where the sources are slower
    ({"cmd": "profiler", "name": "py-spy"}, True),
    ({"cmd": "bogus"}, False),
]


def main() -> int:
    p = subprocess.Popen(
        [sys.executable, "-m", "anubis_tui", "agent", *sys.argv[1:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    stream = RecordStream()
    recs: list = []
    lock = threading.Lock()

    def read() -> None:
        assert p.stdout is not None
        while data := p.stdout.read1(65536):
            with lock:
                recs.extend(stream.feed(data))

    threading.Thread(target=read, daemon=True).start()

    def wait(pred, timeout=120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with lock:
                if pred(recs):
                    return True
            time.sleep(0.02)
        return False

    ok = wait(lambda rs: sum(r.count for r in rs if isinstance(r, Tokens)) > 500)
    print(f"tokens flowing: {ok}")
    failed = 0 if ok else 1
    for i, (cmd, want_ok) in enumerate(COMMANDS, 1):
        assert p.stdin is not None
        t = time.monotonic()
        p.stdin.write(msgpack.packb({"id": i, **cmd}))
        p.stdin.flush()

        def acked(rs: list, i: int = i) -> bool:
            return any(
                isinstance(r, Event) and r.kind == "ack" and r.payload["id"] == i for r in rs
            )

        got = wait(acked, 60)
        ms = 1000 * (time.monotonic() - t)
        with lock:
            ack = next(
                (
                    r
                    for r in recs
                    if isinstance(r, Event) and r.kind == "ack" and r.payload["id"] == i
                ),
                None,
            )
        good = got and ack is not None and (want_ok is None or bool(ack.payload["ok"]) == want_ok)
        failed += not good
        msg = ack.payload["message"] if ack else "no ack"
        print(f"{'ok  ' if good else 'FAIL'} {cmd['cmd']:<12} ack in {ms:6.1f} ms: {msg}")
        time.sleep(2.0)
    p.stdin.write(msgpack.packb({"id": 99, "cmd": "stop"}))
    p.stdin.flush()
    p.wait(60)
    with lock:
        rs = list(recs)
    dec = [r for r in rs if isinstance(r, Tokens) and r.phase == "decode"]
    span = (dec[-1].t - dec[0].t) / 1e9 if len(dec) > 1 else 0
    tps = sum(r.count for r in dec) / span if span else 0
    idx = (
        next((i for i, c in enumerate(stream.header.channels) if c.id == "gpu0.power"), None)
        if stream.header
        else None
    )
    watts = [
        r.values[idx]
        for r in rs
        if isinstance(r, Sample)
        and idx is not None
        and idx < len(r.values)
        and r.values[idx] is not None
    ]
    mean_w = sum(watts) / len(watts) if watts else float("nan")
    footer = bool(rs) and isinstance(rs[-1], Footer)
    print(
        f"records {len(rs)}, decode {tps:.0f} tok/s over {span:.0f} s, "
        f"gpu0.power mean {mean_w:.1f} W, footer: {footer}, agent rc {p.returncode}"
    )
    failed += not (rs and isinstance(rs[-1], Footer) and p.returncode == 0)
    print("PASS" if not failed else f"FAIL ({failed})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
