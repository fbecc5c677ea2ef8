"""The recording writer's bounds: a record it cannot pack, a stalled reader, a flush on demand."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from anubis_tui.recording.format import make_header
from anubis_tui.recording.reader import read_all, read_bytes
from anubis_tui.recording.writer import PipeOut, RecordingWriter
from anubis_tui.records import Event, Footer


def header():
    return make_header([], time.monotonic_ns())


def test_a_record_the_packer_refuses_is_left_out_and_the_rest_is_written(tmp_path: Path):
    path = tmp_path / "w.msgpack"
    w = RecordingWriter(open(path, "wb"), header())  # noqa: SIM115 - the writer closes it
    w.submit(Event(1, "marker", {"label": "before"}))
    w.submit(Event(2, "sweep", {"seed": 2**70}))  # over msgpack's integers
    w.submit(Event(3, "marker", {"label": object()}))  # no msgpack type at all
    w.submit(Event(4, "marker", {"label": "after"}))
    w.close(Footer(5, {"clean": True}))
    assert w.error is None
    records, rec = read_all(path)
    assert not rec.truncated
    labels = [r.payload.get("label") for r in records if isinstance(r, Event)]
    assert labels == ["before", "after"]
    assert isinstance(records[-1], Footer) and records[-1].totals["writer_unpackable"] == 2


def test_a_reader_that_stops_reading_cannot_hold_close():
    r, wfd = os.pipe()
    w = RecordingWriter(PipeOut(wfd), header(), flush_s=0.05)  # type: ignore[arg-type]
    for i in range(3000):  # ~12 MB: far over the pipe and PipeOut's buffer
        w.submit(Event(i, "marker", {"label": "x" * 4000}))
    time.sleep(0.5)
    t = time.monotonic()
    w.close(Footer(10**9, {"clean": True}), timeout=1.0)
    took = time.monotonic() - t
    os.close(r)
    assert took < 5, took
    assert w.error is not None and "stopped taking data" in w.error


def test_flush_soon_writes_now_not_on_the_flush_interval():
    r, wfd = os.pipe()
    w = RecordingWriter(PipeOut(wfd), header(), flush_s=30.0)  # type: ignore[arg-type]
    got = bytearray()
    while select.select([r], [], [], 0.2)[0]:
        got += os.read(r, 65536)  # the Header
    w.submit(Event(1, "ack", {"id": 1, "ok": True}))
    w.flush_soon()
    t = time.monotonic()
    while time.monotonic() - t < 5:
        if select.select([r], [], [], 0.05)[0]:
            got += os.read(r, 65536)
            records, _ = read_bytes(bytes(got))
            if any(isinstance(x, Event) and x.kind == "ack" for x in records):
                break
    assert time.monotonic() - t < 2.0  # the interval is 30 s
    w.close(Footer(2, {"clean": True}), timeout=2.0)
    os.close(r)
