"""The worker client's record stream, without a worker (moved from the slow test_worker.py)."""

from __future__ import annotations

import msgpack

from anubis_tui.inference.client import LIMITS, reader
from anubis_tui.records import Event, Tokens, record_from_plain


def test_pipe_protocol_survives_partial_reads():
    recs = [
        Tokens(10, 5, "decode", 1, 3),
        Event(11, "request_end", {"request": 1, "generated": 5}),
        Tokens(12, 7, "prompt", 2, 11),
    ]
    data = b"".join(msgpack.packb(r.to_plain()) for r in recs)
    r = reader()
    got = []
    for i in range(len(data)):
        batch = r.feed(data[i : i + 1])
        assert batch.error is None
        got.extend(record_from_plain(o) for o in batch.objects)
    assert got == recs


def test_bad_bytes_are_reported_and_the_records_after_them_still_arrive():
    good = msgpack.packb(Tokens(10, 5, "decode", 1, 3).to_plain())
    over = msgpack.packb("x" * (LIMITS.str_len + 1))
    r = reader()
    first = r.feed(good + over)
    assert len(first.objects) == 1 and first.error is not None
    again = r.feed(good)
    assert [record_from_plain(o) for o in again.objects] == [Tokens(10, 5, "decode", 1, 3)]
