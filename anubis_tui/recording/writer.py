"""The recording writer: a thread with a bounded queue, never blocking its callers.

`submit` never waits: when the queue is full the record is dropped and
counted (`dropped`, in the Footer; it should stay 0). The thread flushes at
least every `flush_s` (so a process killed with SIGKILL loses at most that
much) and fsyncs every `fsync_s`. A write error (disk full, the directory
gone) ends the recording, not the session: `on_error` gets one line.
Files are created new, never through a symlink, and never overwrite an
existing file unless `force`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from anubis_tui.recording.format import packer
from anubis_tui.records import Footer, Header, Record, Sample

QUEUE_MAX = 50_000
FLUSH_S = 0.5


class RecordingError(Exception):
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


class RecordingWriter:
    """Writes records to `out` from its own thread."""

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
        self.written = 0  # records handed to the file
        self.samples_written = 0
        self.samples_flushed = 0  # samples in the file for sure: written and flushed without error
        self.records_flushed = 0
        self.bytes = 0
        self.error: str | None = None
        self._packer = packer()
        self._thread = threading.Thread(target=self._run, name="anubis-writer", daemon=True)
        self._write(header)
        self._flush(sync=True)
        self._thread.start()

    def submit(self, rec: Record) -> None:
        if self.error is not None:
            return
        try:
            self.queue.put_nowait(rec)
        except queue.Full:
            self.dropped += 1

    def close(self, footer: Footer | None = None, timeout: float = 10.0) -> None:
        """Write `footer` after everything queued, then flush, fsync and close."""
        if footer is not None and self.error is None:
            totals = {**footer.totals, "writer_dropped": self.dropped}
            # Waits for room: the footer is the one record that must not be dropped.
            self.queue.put(Footer(footer.t, totals), timeout=timeout)
        self.queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        if self.error is None:
            self._flush(sync=True)
        if not self._stdout:
            with contextlib.suppress(OSError):
                self.out.close()

    def _write(self, rec: Record) -> None:
        data = self._packer.pack(rec.to_plain())
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
        last_flush = last_sync = time.monotonic()
        while True:
            try:
                rec: Record | None = self.queue.get(timeout=self.flush_s / 2)
            except queue.Empty:
                rec = None
                idle = True
            else:
                idle = False
                if rec is None:
                    return
            if self.error is not None:
                continue
            try:
                if not idle and rec is not None:
                    self._write(rec)
                now = time.monotonic()
                if now - last_flush >= self.flush_s:
                    sync = now - last_sync >= self.fsync_s
                    self._flush(sync)
                    last_flush = now
                    if sync:
                        last_sync = now
            except Exception as e:  # disk full, a gone directory, or a record that will not pack
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
