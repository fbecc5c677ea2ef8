"""The recording writer: a thread with a bounded queue, never blocking its callers.

`submit` never waits: when the queue is full the record is dropped and
counted (`dropped`, in the Footer; it should stay 0). A record the packer
cannot frame (an integer over 2^64, a value nested deeper than msgpack's
limit) is left out and counted (`unpackable`): it never reaches the file,
and the records after it still do. The thread wakes every `flush_s` (so a
process killed with SIGKILL loses at most that much), at once after
`flush_soon` or when the queue fills past a quarter, and then writes
everything queued and flushes it; it fsyncs every `fsync_s`. It does not
wake per record: a wake-up costs about 90 µs of CPU on a loaded VM, and at
a GPU's token rate records come 50 a second (issue 21). A write error (disk
full, the directory gone, a pipe whose reader left) ends the recording, not
the session: `on_error` gets one line. `close` is bounded in time even when
the reader of a pipe stops reading (see `PipeOut`). Files are created new,
never through a symlink, and never overwrite an existing file unless `force`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from anubis_tui.errors import AnubisError
from anubis_tui.recording.format import packer
from anubis_tui.records import Footer, Header, Record, Sample

QUEUE_MAX = 50_000
FLUSH_S = 0.5
PIPE_BUFFER_MAX = 1 << 20  # bytes PipeOut holds before a write waits for the reader
_FLUSH = object()  # a queue item: flush now (an acknowledgement must not wait FLUSH_S)


class RecordingError(AnubisError):
    """The recording cannot be opened; the message is one line for the user."""


def open_output(path: str, force: bool = False) -> IO[bytes]:
    """A new file at `path` (``-`` is stdout); O_EXCL unless `force`, never following symlinks."""
    if path == "-":
        return sys.stdout.buffer
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_TRUNC if force else os.O_EXCL
    if os.path.islink(path):
        raise RecordingError(f"{path} is a symlink; refusing to write through it")
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise RecordingError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a symlink
            raise RecordingError(f"{path} is a symlink; refusing to write through it") from None
        raise RecordingError(f"cannot create {path}: {e.strerror}") from None
    return os.fdopen(fd, "wb", buffering=1 << 16)


class PipeOut:
    """A non-blocking pipe (or socket) for a writer thread that must stay stoppable.

    Writes go into a buffer of at most `PIPE_BUFFER_MAX` bytes drained with
    non-blocking ``write(2)``; when it is full, or on `flush`, the writer thread
    waits (``select(2)``, 0.1 s at a time) for the reader to take more.
    `abandon` (from any thread) makes the waiting write raise ``BrokenPipeError``
    at once, so a reader that stopped reading can never keep the writer, and
    hence the process, from ending. Takes ownership of `fd`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buf = bytearray()
        self._abandoned = threading.Event()

    def fileno(self) -> int:
        """The pipe's file descriptor."""
        return self.fd

    def write(self, data: bytes) -> int:
        """Buffer `data` and write what the pipe takes now; returns len(data).

        Waits for the reader only when more than `PIPE_BUFFER_MAX` bytes are
        buffered. Raises BrokenPipeError after `abandon` or when the reader closed
        the pipe, and other OSErrors as write(2) gives them.
        """
        self._buf += data
        self._drain(block=len(self._buf) > PIPE_BUFFER_MAX)
        return len(data)

    def flush(self) -> None:
        """Write everything buffered, waiting for the reader; BrokenPipeError as for `write`."""
        self._drain(block=True)

    def abandon(self) -> None:
        """Make a waiting or later `write`/`flush` raise BrokenPipeError at once (safe from any
        thread).
        """
        self._abandoned.set()

    def close(self) -> None:
        """Close the descriptor; errors from close(2) are ignored."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _drain(self, block: bool) -> None:
        while self._buf:
            if self._abandoned.is_set():
                raise BrokenPipeError(32, "the reader stopped reading")
            try:
                n = os.write(self.fd, self._buf)
            except BlockingIOError:
                if not block:
                    return
                select.select([], [self.fd], [], 0.1)
                continue
            del self._buf[:n]


class RecordingWriter:
    """Writes records to `out` (msgpack, `recording.format`) from its own thread.

    The Header is written and fsynced at once; `submit` never blocks. The
    thread flushes every `flush_s` s and fsyncs a regular file every
    `fsync_s` s. A write error stops writing: `error` holds one line and
    `on_error` gets it. Counters: `dropped` (queue full), `written`, `bytes`.
    """

    def __init__(
        self,
        out: IO[bytes],
        header: Header,
        fsync_s: float = 5.0,
        flush_s: float = FLUSH_S,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.out = out
        self._stdout = _is_stdout(out)
        self._can_sync = _is_regular(out)  # fsync a file, not a pipe or /dev/null
        self.fsync_s = fsync_s
        self.flush_s = flush_s
        self.on_error = on_error or (lambda msg: None)
        self.queue: queue.Queue[Record | None] = queue.Queue(QUEUE_MAX)
        self.dropped = 0
        self.unpackable = 0  # records the packer refused: left out, the rest still written
        self.written = 0  # records handed to the file
        self.samples_written = 0
        self.samples_flushed = 0  # samples in the file for sure: written and flushed without error
        self.records_flushed = 0
        self.bytes = 0
        self.error: str | None = None
        self._packer = packer()
        self._wake = threading.Event()  # set: write and flush what is queued now
        self._high_water = max(1, QUEUE_MAX // 4)
        self._thread = threading.Thread(target=self._run, name="anubis-writer", daemon=True)
        self._write(header)
        self._flush(sync=True)
        self._thread.start()

    def submit(self, rec: Record) -> None:
        """Queue `rec` for the writer thread; never blocks or raises.

        When the queue (`QUEUE_MAX` records) is full the record is counted in
        `dropped` instead; after a write error records are ignored (see `error`).
        """
        if self.error is not None:
            return
        try:
            self.queue.put_nowait(rec)
        except queue.Full:
            self.dropped += 1
            return
        if len(self.queue.queue) >= self._high_water:  # the deque's length: no lock taken
            self._wake.set()

    def flush_soon(self) -> None:
        """Have the thread write what is queued and flush it now, not within `flush_s`."""
        if self.error is None:
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(_FLUSH)  # type: ignore[arg-type]
            self._wake.set()

    def close(self, footer: Footer | None = None, timeout: float = 10.0) -> None:
        """Write `footer` after everything queued, then flush, fsync and close.

        Returns within about `timeout` s whatever the output does: a pipe whose
        reader stopped reading is given up (`error` says so), a file still closes.
        """
        end = time.monotonic() + timeout
        self._wake.set()  # the thread drains what is queued now, making room for the footer
        if footer is not None and self.error is None:
            try:
                # Waits for room: the footer is the one record that must not be dropped.
                # (The thread adds the writer's own counts when it writes it.)
                self.queue.put(footer, timeout=max(0.0, end - time.monotonic()))
            except queue.Full:
                self._give_up()
        try:
            self.queue.put(None, timeout=max(0.1, end - time.monotonic()))
            self._wake.set()
        except queue.Full:
            self._give_up()
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=2.0)  # a failed writer drains its queue at once
        self._thread.join(max(0.1, end - time.monotonic()))
        if self._thread.is_alive():
            self._give_up()
            self._thread.join(2.0)
        if self.error is None:
            self._flush(sync=True)
        if not self._stdout:
            with contextlib.suppress(OSError):
                self.out.close()

    def _give_up(self) -> None:
        """The output takes nothing within the close timeout: stop waiting for it."""
        self._fail(TimeoutError("the output stopped taking data"))
        abandon = getattr(self.out, "abandon", None)
        if callable(abandon):
            abandon()

    def _write(self, rec: Record) -> None:
        if isinstance(rec, Footer):  # counted up to here, by the thread that counts them
            totals = {
                **rec.totals,
                "writer_dropped": self.dropped,
                "writer_unpackable": self.unpackable,
            }
            rec = Footer(rec.t, totals)
        try:
            data = self._packer.pack(rec.to_plain())
        except (TypeError, ValueError, OverflowError, RecursionError):
            # msgpack raises these for what it cannot frame; nothing reached the file.
            self._packer.reset()
            self.unpackable += 1
            return
        self.out.write(data)
        self.written += 1
        if isinstance(rec, Sample):
            self.samples_written += 1
        self.bytes += len(data)

    def _flush(self, sync: bool) -> None:
        if self.error is not None:
            return
        try:
            self.out.flush()
            if sync and self._can_sync:
                os.fsync(self.out.fileno())
        except OSError as e:
            self._fail(e)
            return
        self.samples_flushed = self.samples_written
        self.records_flushed = self.written

    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            why = (
                e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            )
            self.error = f"recording stopped: {why} ({self.records_flushed} records kept)"
            self.on_error(self.error)

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()  # a set() from now on wakes the next round
            ending = self._drain()
            if self.error is None:
                try:
                    now = time.monotonic()
                    sync = now - last_sync >= self.fsync_s
                    self._flush(sync)
                    if sync:
                        last_sync = now
                except Exception as e:  # a file object that fails its own way
                    self._fail(e)
            if ending:
                return

    def _drain(self) -> bool:
        """Write every queued record (dropped after an error); True at the end marker."""
        while True:
            try:
                rec = self.queue.get_nowait()
            except queue.Empty:
                return False
            if rec is None:
                return True
            if rec is _FLUSH or self.error is not None:
                continue
            try:
                self._write(rec)
            except Exception as e:  # disk full, a gone directory, a stalled pipe given up
                self._fail(e)


def _is_regular(out: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _is_stdout(out: IO[bytes]) -> bool:
    try:
        return out.fileno() == 1
    except (OSError, ValueError, AttributeError):
        return False
