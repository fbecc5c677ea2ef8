"""The tolerant recording reader.

Streams records with hard limits on every msgpack object (no unbounded
allocation from a hostile file), refuses an unknown major schema version,
rejects extension types and anything that is not a record, and recovers
every complete record before a truncated or corrupted tail, saying where
it stopped. `load` turns a recording into columnar numpy arrays.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from anubis_tui.config import NotRegularFile, open_regular
from anubis_tui.errors import AnubisError
from anubis_tui.recording.format import (
    FORMAT_NAME,
    MAX_ARRAY,
    MAX_BUFFER,
    MAX_CHANNELS,
    MAX_MAP,
    MAX_STR,
    SCHEMA,
)
from anubis_tui.records import (
    Channel,
    ChannelsAdded,
    Event,
    Footer,
    Header,
    Record,
    RecordError,
    Sample,
    Tokens,
    record_from_plain,
)
from anubis_tui.stream import Limits, StreamReader, chunks

CHUNK = 1 << 16


class ReaderError(AnubisError):
    """The file is not a readable recording; one line for the user."""


def _no_ext(code: int, data: bytes) -> Any:
    raise RecordError(f"msgpack extension type {code} is not allowed in a recording")


RECORD_LIMITS = Limits(
    buffer=MAX_BUFFER,
    str_len=MAX_STR,
    bin_len=MAX_STR,
    array_len=MAX_ARRAY,
    map_len=MAX_MAP,
    ext_len=1 << 10,  # small ones reach ext_hook, which refuses them by name
    strict_map_key=True,
    ext_hook=_no_ext,
)
"""Bounds on every msgpack object of a recording (recording/format.py), shared by the
agent's stream as `session.remote` reads it."""


@dataclass
class Recovery:
    """How reading ended: `truncated` is True when the file did not end cleanly with a Footer."""

    records: int = 0
    bytes_read: int = 0
    truncated: bool = False
    stopped_at: int | None = None
    reason: str = ""


class RecordStream:
    """Incremental reader: feed bytes as they arrive (a growing file, a pipe), take records."""

    def __init__(self) -> None:
        self.reader = StreamReader(RECORD_LIMITS, on_error="stop")
        self.header: Header | None = None
        self.recovery = Recovery()
        self.failed = False
        self._channels = 0
        self._offset = 0
        self._fed = 0

    def feed(self, data: bytes) -> list[Record]:
        """The whole records in `data` (with what was buffered); an incomplete one waits for
        more.

        The first record must be a Header of this format; ReaderError for a schema major this
        anubis cannot read. A record that breaks the limits or is not a record stops the
        stream: `failed` is set, `recovery` says where and why, and later feeds return [].
        """
        if self.failed:
            return []
        out: list[Record] = []
        self._fed += len(data)
        batch = self.reader.feed(data)
        for obj, end in zip(batch.objects, batch.ends, strict=True):
            try:
                rec = record_from_plain(obj)
                if self.header is None or type(rec) in (Header, ChannelsAdded):
                    self._check(rec)
            except RecordError as e:
                self._fail(str(e))
                break
            self._offset = end
            out.append(rec)
        else:
            if batch.too_big:
                self._fail("an object larger than the reader's limit")
            elif batch.error is not None:
                self._fail(f"corrupt data ({type(batch.error).__name__}: {batch.error})")
        self.recovery.records += len(out)
        if out:
            self.recovery.bytes_read = self._offset
        return out

    def _check(self, rec: Record) -> None:
        if self.header is None:
            if not isinstance(rec, Header):
                raise RecordError("the first record is not a Header: not an anubis recording")
            if rec.format != FORMAT_NAME:
                raise RecordError(f"format {rec.format!r} is not {FORMAT_NAME!r}")
            if rec.schema[0] != SCHEMA[0]:
                raise ReaderError(
                    f"recording schema {rec.schema[0]}.{rec.schema[1]} is not readable by this "
                    f"anubis (reads {SCHEMA[0]}.x); use a matching version of anubis"
                )
            self.header = rec
            self._channels = len(rec.channels)
        elif isinstance(rec, Header):
            raise RecordError("a second Header inside the recording")
        if isinstance(rec, ChannelsAdded):
            self._channels += len(rec.channels)
        if self._channels > MAX_CHANNELS:
            raise RecordError(f"more than {MAX_CHANNELS} channels")

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.recovery.truncated = True
        self.recovery.stopped_at = self._offset
        self.recovery.reason = reason

    def finish(self) -> Recovery:
        """Call at end of input: bytes past the last whole record mean a cut file."""
        if not self.failed and self._fed > self._offset:
            self._fail("the file ends inside a record (cut, or still being written)")
        return self.recovery


def read_all(src: str | Path | IO[bytes]) -> tuple[list[Record], Recovery]:
    """All complete records and how reading ended. ReaderError only if there is no header."""
    it = RecordFile(src)
    records = list(it)
    return records, it.recovery


class RecordFile:
    """A recording's records in file order, read a chunk (`CHUNK` bytes) at a time.

    Iterate once; memory is one chunk plus one record, whatever the file's size.
    `recovery` says how reading ended once the iteration is over (as `read_all`);
    `offset` is the byte offset just past the last record handed out. Raises
    ReaderError if the file cannot be opened or read, or holds no Header.
    """

    def __init__(
        self, src: str | Path | IO[bytes], start: int = 0, header: Header | None = None
    ) -> None:
        """`start` > 0 resumes a file at a record boundary (an `offset` seen before), its
        `header` given (the Header is not read again)."""
        self.src = src
        self.recovery = Recovery()
        self.header: Header | None = header
        self.start = start
        self.offset = start

    def __iter__(self) -> Iterator[Record]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Record]]:
        """The records a chunk at a time (a list per chunk read; empty lists are skipped)."""
        f, close = _open(self.src)
        stream = RecordStream()
        if self.start:
            f.seek(self.start)
            stream.header = self.header
            stream._channels = len(self.header.channels) if self.header else 0
        last: Record | None = None
        try:
            for chunk in chunks(f.read, CHUNK, errors_end=False):
                batch = stream.feed(chunk)
                if batch:
                    last = batch[-1]
                    self.header = stream.header
                    self.offset = self.start + stream.recovery.bytes_read
                    yield batch
                if stream.failed:
                    break
        except OSError as e:
            raise ReaderError(f"cannot read recording: {e.strerror or e}") from None
        finally:
            if close:
                f.close()
        rec = self.recovery = stream.finish()
        if stream.header is None:
            raise ReaderError(f"not an anubis recording ({rec.reason or 'empty file'})")
        if not isinstance(last, Footer) and not rec.truncated:
            rec.truncated = True
            rec.stopped_at = rec.bytes_read
            rec.reason = rec.reason or "no footer: the recording was not closed cleanly"


HOLD_NS = 60_000_000_000
"""How far back in time a record may come after a later-stamped one and still be put in
order by `in_time_order` (the bus holds 300 ms; an ack may overtake a token batch)."""


class OutOfOrder(ReaderError):
    """A record stamped more than `HOLD_NS` before one already passed on."""


def in_time_order(
    batches: Iterable[list[Record]], hold_ns: int = HOLD_NS
) -> Iterator[list[Record]]:
    """Batches of records (`RecordFile.batches`) in the order of `time_ordered` (by stamp,
    stable): a record is passed on once a record stamped `hold_ns` later has been read,
    so memory is that window of stamps, not the file (`TimeOrder`).

    Raises OutOfOrder when a record is stamped before one already passed on (more
    than `hold_ns` out of order; the caller sorts in memory instead).
    """
    order = TimeOrder(hold_ns)
    for batch in batches:
        out = order.push(batch)
        if out:
            yield out
    out = order.flush()
    if out:
        yield out


class TimeOrder:
    """The state of `in_time_order`: the records held (by stamp, stable) and the stamp of
    the last one passed on. `copy` is a snapshot a reader can resume from."""

    def __init__(self, hold_ns: int = HOLD_NS) -> None:
        self.hold_ns = hold_ns
        self.buf_t: list[int] = []
        self.buf_r: list[Record] = []
        self.released = 0

    def copy(self) -> TimeOrder:
        """An independent copy of the window (held records and the count released), for a `Mark`."""
        c = TimeOrder(self.hold_ns)
        c.buf_t, c.buf_r, c.released = list(self.buf_t), list(self.buf_r), self.released
        return c

    def push(self, batch: list[Record]) -> list[Record]:
        """Take a batch in file order; returns the records now known to be in order."""
        try:
            ts = [r.t for r in batch]  # type: ignore[union-attr]
        except AttributeError:  # the Header
            ts = [getattr(r, "t", 0) for r in batch]
        if not ts:
            return []
        low = min(ts)
        if low < self.released:
            raise OutOfOrder(
                f"a record stamped {(self.released - low) / 1e9:.1f} s before one already read"
            )
        unsorted = (self.buf_t and low < self.buf_t[-1]) or ts != sorted(ts)
        self.buf_t += ts
        self.buf_r += batch
        if unsorted:
            order = sorted(range(len(self.buf_t)), key=self.buf_t.__getitem__)  # stable
            self.buf_t = [self.buf_t[i] for i in order]
            self.buf_r = [self.buf_r[i] for i in order]
        cut = bisect.bisect_left(self.buf_t, self.buf_t[-1] - self.hold_ns)
        if not cut:
            return []
        self.released = self.buf_t[cut - 1]
        out, self.buf_r = self.buf_r[:cut], self.buf_r[cut:]
        self.buf_t = self.buf_t[cut:]
        return out

    def flush(self) -> list[Record]:
        """Every record still held (at the end of the input)."""
        out, self.buf_r, self.buf_t = self.buf_r, [], []
        return out


def _open(src: str | Path | IO[bytes]) -> tuple[IO[bytes], bool]:
    """A recording file, opened without blocking and checked to be a regular file.

    A FIFO, a device or a directory is refused at once (a stream goes through
    stdin, ``-``, which the caller passes as an open file).
    """
    if not isinstance(src, str | Path):
        return src, False
    p = Path(src)
    try:
        fd = open_regular(p)
    except NotRegularFile as e:
        what = "a directory" if e.is_dir else "not a regular file"
        raise ReaderError(
            f"{p} is {what}, not a recording (pipe a stream to `-` instead)"
        ) from None
    except FileNotFoundError:
        raise ReaderError(f"no such recording: {p}") from None
    except PermissionError:
        raise ReaderError(f"cannot read {p}: permission denied") from None
    except OSError as e:
        raise ReaderError(f"cannot open {p}: {e.strerror or e}") from None
    return os.fdopen(fd, "rb"), True


@dataclass
class Recording:
    """A recording loaded into columns for analysis and seeking.

    `values[i, j]` is channel j at sample i (NaN: no reading); `t` in ns
    since the session start. Tokens are parallel arrays.
    """

    header: Header
    channels: list[Channel]
    t: np.ndarray
    values: np.ndarray
    tok_t: np.ndarray
    tok_count: np.ndarray
    tok_decode: np.ndarray  # bool: decode (True) or prompt
    events: list[Event]
    footer: Footer | None
    recovery: Recovery
    index: dict[str, int] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)  # every record, in time order

    def column(self, channel_id: str) -> np.ndarray | None:
        """Channel `channel_id`'s readings, one per sample (float64, NaN: no reading), a view of
        `values`; None for a channel the recording does not have.
        """
        j = self.index.get(channel_id)
        return None if j is None else self.values[:, j]

    @property
    def start_s(self) -> float:
        """Seconds from the session's start to this file's first record: about 0 for a
        recording opened with the session, later for one started with `r` mid-session."""
        firsts = [int(self.t[0])] if len(self.t) else []
        firsts += [int(self.tok_t[0])] if len(self.tok_t) else []
        firsts += [e.t for e in self.events[:1]]
        return min(firsts) / 1e9 if firsts else 0.0

    @property
    def duration_s(self) -> float:
        """Seconds from the session start to the last stamp (sample, token, event or Footer)."""
        ends = [self.t[-1] if len(self.t) else 0, self.tok_t[-1] if len(self.tok_t) else 0]
        ends += [e.t for e in self.events[-1:]]
        if self.footer is not None:
            ends.append(self.footer.t)
        return float(max(ends)) / 1e9


def load(src: str | Path | IO[bytes]) -> Recording:
    """A recording file (a path, or an open binary stream) loaded into columns (`from_records`).

    ReaderError when there is no Header; a truncated file loads up to its last whole record.
    """
    records, recovery = read_all(src)
    return from_records(records, recovery)


def from_records(records: list[Record], recovery: Recovery | None = None) -> Recording:
    """A `Recording` from records whose first is the Header: samples as an (n samples, n
    channels) float64 array sorted by stamp (nil, NaN and ±inf are NaN; a short row is
    padded), tokens and events sorted by stamp, `records` in time order (`time_ordered`).
    """
    header = records[0]
    assert isinstance(header, Header)
    channels = list(header.channels)
    widths: list[int] = []
    rows: list[list[Any]] = []
    ts: list[int] = []
    toks: list[Tokens] = []
    events: list[Event] = []
    footer: Footer | None = None
    for r in records[1:]:
        if isinstance(r, Sample):
            ts.append(r.t)
            rows.append(r.values)
            widths.append(len(r.values))
        elif isinstance(r, Tokens):
            toks.append(r)
        elif isinstance(r, Event):
            events.append(r)
        elif isinstance(r, ChannelsAdded):
            channels.extend(r.channels)
        elif isinstance(r, Footer):
            footer = r
    n = len(channels)
    if rows and min(widths) == max(widths) == n:
        arr = np.array(rows, dtype=object)
    else:
        arr = np.empty((len(rows), n), dtype=object)
        arr.fill(None)
        for i, row in enumerate(rows):
            k = min(len(row), n)
            arr[i, :k] = row[:k]
    if arr.size:
        arr[arr == None] = np.nan  # noqa: E711 - elementwise comparison on an object array
    values = arr.astype(np.float64) if arr.size else np.zeros((len(rows), n))
    values[~np.isfinite(values)] = np.nan  # ±inf is no reading, as NaN is
    order = np.argsort(np.array(ts, dtype=np.int64), kind="stable")
    toks.sort(key=lambda x: x.t)
    events.sort(key=lambda x: x.t)
    rec = Recording(
        header=header,
        channels=channels,
        t=np.array(ts, dtype=np.int64)[order],
        values=values[order] if len(ts) else values,
        tok_t=np.array([x.t for x in toks], dtype=np.int64),
        tok_count=np.array([x.count for x in toks], dtype=np.int64),
        tok_decode=np.array([x.phase == "decode" for x in toks], dtype=bool),
        events=events,
        footer=footer,
        recovery=recovery or Recovery(records=len(records)),
    )
    rec.index = {c.id: j for j, c in enumerate(channels)}
    rec.records = time_ordered(records)
    return rec


def time_ordered(records: list[Record]) -> list[Record]:
    """Records sorted by stamp (stable: equal stamps keep their order; the Header stays first).

    Replay and report fold the same order, so they compute the same figures.
    """
    return sorted(records, key=lambda r: getattr(r, "t", 0))


def read_bytes(data: bytes) -> tuple[list[Record], Recovery]:
    """`read_all` of a recording held in memory: (records, how reading ended)."""
    return read_all(io.BytesIO(data))
