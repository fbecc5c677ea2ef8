"""Replay: plays recorded records into a `LiveState` on a clock that can pause, seek and speed up.

A recording on stdin (``ssh host anubis record -o - | anubis replay -``) is
read by a thread as it grows and kept; playing at the end of such a stream is
live. A recording file is not kept (issue 20): one pass at open finds its end,
markers and how it ends (`FileRecords`), then playing reads it a chunk at a
time in time order, so a day-long file replays in bounded memory. As playback
passes, the panels' state is copied every 1/24 of the file (at least 5 min of
recording) with where the reader stood; seeking back resumes from the nearest
copy before the position (from the start before the first one).
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Iterator
from typing import IO, Any

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.segments import SETTING_EVENTS
from anubis_tui.recording.reader import (
    OutOfOrder,
    ReaderError,
    RecordFile,
    RecordStream,
    Recovery,
    TimeOrder,
    in_time_order,
    read_all,
    time_ordered,
)
from anubis_tui.records import Event, Header, Record

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CHECKPOINT_MIN_NS = 300_000_000_000  # 5 min of recording between replay checkpoints


Mark = tuple[int, TimeOrder, list[Record]]
"""Where a `FileRecords` stands: the file offset read up to, the order window, the
records read ahead of the position."""


class FileRecords:
    """A recording file read in time order (`TimeOrder`) a chunk at a time, as playback
    asks for it. Memory is the reader's chunk, the order window and the records read
    ahead of the position (one chunk's worth). `mark` says where it stands and
    `rewind(mark)` resumes there (the start without one).

    `index` is the one pass that finds the header, the end (the last stamp, ns), the
    markers and the recovery; it raises OutOfOrder for a file the hold cannot order and
    ReaderError for one that is not a recording.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: Header | None = None
        self.end_ns = 0
        self.markers: list[tuple[int, str]] = []
        self.recovery = Recovery()
        self._file = RecordFile(path)
        self._raw: Iterator[list[Record]] = iter(())
        self._order = TimeOrder()
        self._ahead: list[Record] = []
        self._done = False

    def index(self) -> None:
        """Read the whole file once: the header, the end (last stamp, ns), the markers and
        setting Events (t, kind), and the recovery; then rewind to the start. OutOfOrder for a
        file the order window cannot sort, ReaderError for one that is not a recording.
        """
        f = RecordFile(self.path)
        for batch in in_time_order(f.batches()):
            for rec in batch:
                if type(rec) is Event and (rec.kind == "marker" or rec.kind in SETTING_EVENTS):
                    self.markers.append((rec.t, rec.kind))
            self.end_ns = getattr(batch[-1], "t", self.end_ns)
        self.header, self.recovery = f.header, f.recovery
        self.rewind()

    def mark(self) -> Mark:
        """Where the reading stands now (a `Mark`), for `rewind` to resume at."""
        return self._file.offset, self._order.copy(), list(self._ahead)

    def rewind(self, at: Mark | None = None) -> None:
        """Read from `at` (a `mark` taken earlier) from now on, or from the start when None."""
        if at is None:
            self._file, self._order, self._ahead = RecordFile(self.path), TimeOrder(), []
        else:
            self._file = RecordFile(self.path, start=at[0], header=self.header)
            self._order, self._ahead = at[1].copy(), list(at[2])
        self._raw = self._file.batches()
        self._done = False

    def _next(self) -> list[Record]:
        """The next records in time order ([] at the end)."""
        while not self._done:
            try:
                batch = next(self._raw, None)
            except ReaderError:  # the file changed since `index`: it ends here
                batch = None
            if batch is None:
                self._done = True
                return self._order.flush()
            out = self._order.push(batch)
            if out:
                return out
        return []

    def until(self, pos: int) -> list[Record]:
        """The next records stamped at or before `pos` (ns), in time order, at most a chunk's
        worth: call again until it is empty (so a long seek never holds the records)."""
        out: list[Record] = []
        while not out:
            if not self._ahead:
                self._ahead = self._next()
                if not self._ahead:
                    return out
            k = bisect.bisect_right(self._ahead, pos, key=lambda r: getattr(r, "t", 0))
            out += self._ahead[:k]
            self._ahead = self._ahead[k:]
            if self._ahead:
                return out
        return out


def copy_state(s: LiveState) -> LiveState:
    """A copy of `s` that folds on apart from it; the records it holds (immutable) are
    shared, not copied."""
    memo: dict[int, Any] = {id(s.lock): threading.Lock()}
    shared: list[Any] = [*s.events, *s.channels, s.header]
    memo.update({id(x): x for x in shared if x is not None})
    with s.lock:
        return copy.deepcopy(s, memo)


class Replay:
    """Records plus a playback position (ns since the session start)."""

    def __init__(
        self, records: list[Record] | None = None, source: FileRecords | None = None
    ) -> None:
        self.lock = threading.Lock()
        self.source = source  # a file read as it plays; None: the records are kept
        # A file's panels state every `checkpoint_ns` of recording as playback passes it
        # (at most about 24 of them): seeking back resumes from the nearest one.
        self._checkpoints: list[tuple[int, LiveState, Mark]] = []
        end = source.end_ns if source is not None else 0
        self.checkpoint_ns = max(CHECKPOINT_MIN_NS, end // 24)
        # Kept in time order (records and their stamps side by side), so the position is a
        # bisection and the end is the last stamp, whatever a frame asks.
        self.records: list[Record] = []
        self.times: list[int] = []
        self._markers: list[tuple[int, str]] = []
        self.fed = 0  # records already folded into state
        for rec in time_ordered(records or []):
            self._add(rec)
        self.state = LiveState()
        self.pos_ns = 0
        self.playing = True
        self.speed = 1.0
        self.growing = False
        self.stream_error: str | None = None
        self.recovery: Recovery | None = None
        self._ended = threading.Event()

    @classmethod
    def from_file(cls, path: str) -> Replay:
        """A recording file, read as it plays (`FileRecords`); one far out of time order
        (never written by anubis) is loaded whole and sorted instead."""
        src = FileRecords(path)
        try:
            src.index()
        except OutOfOrder:
            records, recovery = read_all(path)
            r = cls(records)
            r.recovery = recovery
            return r
        r = cls(source=src)
        r._markers = sorted(src.markers)
        r.recovery = src.recovery
        return r

    @classmethod
    def from_stream(cls, f: IO[bytes]) -> Replay:
        """Follow a stream that is still being written (a pipe)."""
        r = cls()
        r.growing = True
        threading.Thread(target=r._follow, args=(f,), name="replay-reader", daemon=True).start()
        return r

    def wait_header(self) -> str | None:
        """Block until the stream's Header arrives (None) or the stream ends without one (why).

        Ends when the stream does: an empty, random or wrong-version stream is an
        error the user sees before the app starts, never an empty screen.
        """
        while not self._ended.wait(0.05):
            if self.header is not None:
                return None
        if self.header is not None:
            return None
        return self.stream_error or "the stream ended before any recording came"

    def _follow(self, f: IO[bytes]) -> None:
        stream = RecordStream()
        try:
            while True:
                chunk = f.read1(65536) if hasattr(f, "read1") else f.read(65536)
                if not chunk:
                    break
                try:
                    recs = stream.feed(chunk)
                except ReaderError as e:
                    self.stream_error = str(e)
                    return
                with self.lock:
                    for rec in recs:
                        self._add(rec)
                if stream.failed:
                    break
        except OSError as e:
            self.stream_error = f"cannot read the stream: {e.strerror or e}"
        finally:
            self.recovery = stream.finish()
            if stream.recovery.truncated and not self.stream_error:
                self.stream_error = stream.recovery.reason or None
            self.growing = False
            self._ended.set()

    def _add(self, rec: Record) -> None:
        """Insert in time order (call with the lock held, or before anyone else can read)."""
        t = getattr(rec, "t", 0)
        # Records come nearly sorted; one that arrives late never goes before what is folded.
        i = max(bisect.bisect_right(self.times, t), self.fed)
        self.records.insert(i, rec)
        self.times.insert(i, t)
        kind = getattr(rec, "kind", None)
        if kind == "marker" or kind in SETTING_EVENTS:
            bisect.insort(self._markers, (t, kind or ""))

    @property
    def header(self) -> Header | None:
        """The recording's Header; None while none has been read."""
        if self.source is not None:
            return self.source.header
        with self.lock:
            h = self.records[0] if self.records else None
        return h if isinstance(h, Header) else None

    @property
    def end_ns(self) -> int:
        """The last stamp of the recording (ns since the session start); 0 when empty."""
        if self.source is not None:
            return self.source.end_ns
        with self.lock:
            return self.times[-1] if self.times else 0

    def advance(self, wall_s: float) -> None:
        """Move the clock by `wall_s` × speed (if playing) and fold the records passed."""
        if self.playing:
            self.pos_ns = min(self.end_ns, self.pos_ns + int(wall_s * self.speed * 1e9))
        self._feed_to(self.pos_ns)

    def _feed_to(self, pos: int) -> None:
        if self.source is not None:
            while recs := self.source.until(pos):
                self.state.consume_many(recs)
                t = getattr(recs[-1], "t", 0)
                cps = self._checkpoints
                if t >= (cps[-1][0] if cps else 0) + self.checkpoint_ns:
                    cps.append((t, copy_state(self.state), self.source.mark()))
            return
        with self.lock:
            upto = bisect.bisect_right(self.times, pos)
            batch = self.records[self.fed : upto]
            self.fed = max(self.fed, upto)
        if batch:
            self.state.consume_many(batch)

    def seek(self, to_ns: int) -> None:
        """Move the position to `to_ns` (clamped to [0, `end_ns`]) and fold the records up to it;
        backwards the panels start again from the nearest checkpoint (a file) or the start.
        """
        to_ns = max(0, min(self.end_ns, to_ns))
        if to_ns < self.pos_ns:
            self.state = LiveState()
            self.fed = 0
            if self.source is not None:
                self._resume(to_ns)
        self.pos_ns = to_ns
        self._feed_to(to_ns)

    def _resume(self, to_ns: int) -> None:
        """Back to the latest checkpoint at or before `to_ns` (the start without one)."""
        i = bisect.bisect_right(self._checkpoints, to_ns, key=lambda c: c[0]) - 1
        if i < 0:
            self.source.rewind()  # type: ignore[union-attr]
            return
        _, state, mark = self._checkpoints[i]
        self.state = copy_state(state)
        self.source.rewind(mark)  # type: ignore[union-attr]

    def seek_by(self, seconds: float) -> None:
        """`seek` by `seconds` of recording from the position (negative: back)."""
        self.seek(self.pos_ns + int(seconds * 1e9))

    def faster(self, up: bool) -> float:
        """The next playback speed of `SPEEDS` (0.25× to 16×) up or down, stopping at the ends;
        returns it.
        """
        i = min(range(len(SPEEDS)), key=lambda k: abs(SPEEDS[k] - self.speed))
        i = min(len(SPEEDS) - 1, i + 1) if up else max(0, i - 1)
        self.speed = SPEEDS[i]
        return self.speed

    def markers(self) -> list[tuple[int, str]]:
        """(t, kind) of markers and profiler events, for the timeline."""
        with self.lock:
            return list(self._markers)
