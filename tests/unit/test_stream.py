"""The one stream reader (`anubis_tui.stream`): limits, resync and stop, offsets, reads."""

from __future__ import annotations

import io
import os

import msgpack
import pytest

from anubis_tui.stream import Limits, StreamReader, chunks, decode

SMALL = Limits(buffer=64, str_len=32, bin_len=32, array_len=4, map_len=4)


def pack(*objs) -> bytes:
    return b"".join(msgpack.packb(o) for o in objs)


def test_objects_split_at_every_byte_come_out_whole_with_their_end_offsets():
    data = pack({"cmd": "pause"}, [1, 2], "x")
    r = StreamReader(SMALL)
    got, ends = [], []
    for i in range(len(data)):
        d = r.feed(data[i : i + 1])
        assert d.error is None
        got += d.objects
        ends += d.ends
    assert got == [{"cmd": "pause"}, [1, 2], "x"]
    sizes = [len(pack(o)) for o in got]
    assert ends == [sum(sizes[: i + 1]) for i in range(3)]
    assert r.pending == 0 and r.offset == len(data)


@pytest.mark.parametrize(
    "bad",
    [
        pack([1, 2, 3, 4, 5]),  # over array_len
        pack("y" * 40),  # over str_len
        b"\xc1",  # never used in msgpack
        msgpack.packb(msgpack.ExtType(1, b"ab")),  # an ext, refused by ext_len below
    ],
    ids=["array", "str", "c1", "ext"],
)
def test_resync_reports_the_fault_and_decodes_what_follows_with_the_same_limits(bad):
    limits = Limits(buffer=64, str_len=32, bin_len=32, array_len=4, map_len=4, ext_len=0)
    r = StreamReader(limits, on_error="resync")
    d = r.feed(pack("before") + bad)
    assert d.objects == ["before"] and d.error is not None and not d.too_big
    assert d.why().startswith(type(d.error).__name__ + ": ")
    after = r.feed(pack({"cmd": "stop"}))
    assert after.objects == [{"cmd": "stop"}] and after.error is None
    assert after.ends == [r.fed]  # offsets count every byte fed, across the resync
    big = r.feed(pack("z" * 30) * 3)  # 96 bytes at once: over the 64-byte buffer
    assert big.too_big and big.objects == []
    assert r.feed(pack(1)).objects == [1]


def test_stop_reads_nothing_after_a_fault():
    r = StreamReader(SMALL, on_error="stop")
    d = r.feed(pack(1) + b"\xc1" + pack(2))
    assert d.objects == [1] and d.error is not None and r.stopped
    assert r.feed(pack(3)).objects == []
    assert r.offset == 1 and r.pending == len(pack(2)) + 1


def test_an_ext_hook_that_refuses_is_a_fault_not_an_exception():
    def refuse(code, data):
        raise ValueError(f"ext {code} refused")

    r = StreamReader(Limits(64, 32, 32, 4, 4, ext_len=16, ext_hook=refuse), on_error="stop")
    d = r.feed(msgpack.packb(msgpack.ExtType(7, b"x")))
    assert d.objects == [] and "ext 7 refused" in d.why()


def test_chunks_end_at_eof_and_at_a_read_error_unless_asked_to_raise():
    assert list(chunks(io.BytesIO(b"abcdefg").read, 3)) == [b"abc", b"def", b"g"]

    def broken(n):
        raise OSError(5, "Input/output error")

    assert list(chunks(broken)) == []
    with pytest.raises(OSError):
        list(chunks(broken, errors_end=False))
    rfd, wfd = os.pipe()
    os.write(wfd, pack("a", "b"))
    os.close(wfd)
    try:
        batches = list(decode(lambda n: os.read(rfd, n), StreamReader(SMALL), 1))
    finally:
        os.close(rfd)
    assert [o for b in batches for o in b.objects] == ["a", "b"]


def test_decode_ends_once_a_stopping_reader_stops():
    data = io.BytesIO(pack(1) + b"\xc1" + pack(2) * 100)
    batches = list(decode(data.read, StreamReader(SMALL, on_error="stop"), 4))
    assert batches[-1].error is not None
    assert data.tell() < len(data.getvalue())  # nothing more was read
