"""The one msgpack stream reader: bytes in, objects out, bad bytes handled.

Five readers share it: the worker's records (`inference.client`), the worker's
control channel (`inference.worker`), the agent's commands (`session.agent`),
the remote agent's records (`session.remote`) and the recording reader
(`recording.reader`). Each keeps its own `Limits` (msgpack's ``max_*`` sizes
of `msgpack.Unpacker`, https://msgpack-python.readthedocs.io/en/latest/api.html)
and its own answer to bad bytes: `StreamReader` either starts afresh after
them (``resync``: a command channel goes on with the next command) or stops
for good (``stop``: a recording or a link cannot find the next record).

Reading never raises for what the bytes hold: `StreamReader.feed` returns the
objects decoded before the fault and the fault itself (`Decoded.error`), so
every user answers in its own words (an Event, a failed ack, a recovery note).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

__all__ = ["CHUNK", "Decoded", "Limits", "StreamReader", "chunks", "decode"]

CHUNK = 1 << 16  # bytes asked of one read


@dataclass(frozen=True)
class Limits:
    """Bounds on one stream, in bytes (`buffer`, `str_len`, `bin_len`, `ext_len`) and items
    (`array_len`, `map_len`); `buffer` is also the largest single object.

    `ext_hook` decides what an extension type becomes (raise to refuse it);
    `strict_map_key` allows only str and bytes map keys.
    """

    buffer: int
    str_len: int
    bin_len: int
    array_len: int
    map_len: int
    ext_len: int | None = None  # None: msgpack's default (the buffer's size)
    strict_map_key: bool = True
    ext_hook: Callable[[int, bytes], Any] | None = None

    def unpacker(self) -> msgpack.Unpacker:
        """A fresh `msgpack.Unpacker` with these bounds (``raw=False``: str as str)."""
        kw: dict[str, Any] = {}
        if self.ext_len is not None:
            kw["max_ext_len"] = self.ext_len
        if self.ext_hook is not None:
            kw["ext_hook"] = self.ext_hook
        return msgpack.Unpacker(
            raw=False,
            strict_map_key=self.strict_map_key,
            max_buffer_size=self.buffer,
            max_str_len=self.str_len,
            max_bin_len=self.bin_len,
            max_array_len=self.array_len,
            max_map_len=self.map_len,
            **kw,
        )


@dataclass(frozen=True)
class Decoded:
    """What one `StreamReader.feed` gave: the whole objects, in order, with the stream
    offset (bytes since the reader began) just past each; then the fault, if the bytes
    broke a limit or were not msgpack."""

    objects: list[Any]
    ends: list[int]
    error: Exception | None = None

    @property
    def too_big(self) -> bool:
        """The fault is an object larger than `Limits.buffer` (msgpack's ``BufferFull``)."""
        return isinstance(self.error, msgpack.BufferFull)

    def why(self, width: int = 120) -> str:
        """The fault as ``Kind: message`` (the message cut at `width` characters); "" if none."""
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {str(self.error)[:width]}"


class StreamReader:
    """Incremental msgpack decoding with `Limits`; after a fault it either starts afresh
    (``on_error="resync"``: what was buffered is dropped, the limits stay) or reads no
    more (``on_error="stop"``: `stopped` is then True and `feed` returns nothing).

    Offsets (`Decoded.ends`, `offset`) count every byte fed, across resyncs.
    """

    def __init__(self, limits: Limits, on_error: Literal["resync", "stop"] = "resync") -> None:
        self.limits = limits
        self.on_error = on_error
        self.stopped = False
        self.fed = 0  # bytes fed so far
        self.offset = 0  # bytes consumed by whole objects (or dropped by a resync)
        self._base = 0  # stream offset where the current unpacker began
        self._u = limits.unpacker()

    def feed(self, chunk: bytes) -> Decoded:
        """Decode what `chunk` completes. Never raises for the bytes themselves: any
        exception msgpack (or `Limits.ext_hook`) raises ends the batch as `Decoded.error`."""
        if self.stopped:
            return Decoded([], [])
        objects: list[Any] = []
        ends: list[int] = []
        self.fed += len(chunk)
        u, base = self._u, self._base
        add, mark, tell = objects.append, ends.append, u.tell  # the recording reader's hot loop
        try:
            u.feed(chunk)
            for obj in u:
                add(obj)
                mark(base + tell())
        except Exception as e:  # hostile bytes: a limit, not msgpack, too deep, a bad ext
            self._consumed(ends)
            self._fault()
            return Decoded(objects, ends, e)
        self._consumed(ends)
        return Decoded(objects, ends)

    def _consumed(self, ends: list[int]) -> None:
        if ends:
            self.offset = ends[-1]

    def _fault(self) -> None:
        if self.on_error == "stop":
            self.stopped = True
            return
        self._u = self.limits.unpacker()
        self._base = self.offset = self.fed

    @property
    def pending(self) -> int:
        """Bytes fed but not yet part of a whole object (a record cut mid-way)."""
        return self.fed - self.offset


def chunks(
    read: Callable[[int], bytes], size: int = CHUNK, *, errors_end: bool = True
) -> Iterator[bytes]:
    """Successive non-empty reads of up to `size` bytes until end of input.

    `read` is ``os.read`` bound to a descriptor, a socket's ``recv`` or a file's
    ``read``. With `errors_end` an OSError or ValueError (a closed file) from
    `read` is the end of input too; without, it propagates.
    """
    while True:
        try:
            data = read(size)
        except (OSError, ValueError):
            if not errors_end:
                raise
            return
        if not data:
            return
        yield data


def decode(
    read: Callable[[int], bytes], reader: StreamReader, size: int = CHUNK
) -> Iterator[Decoded]:
    """`reader`'s batches from `read` until end of input, or until the reader stops."""
    for chunk in chunks(read, size):
        batch = reader.feed(chunk)
        yield batch
        if reader.stopped:
            return
