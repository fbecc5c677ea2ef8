"""The parent side of the inference worker.

`WorkerClient` starts the worker process, reads its msgpack records in a
thread (a partial read is just fed to the unpacker and completed by the
next), hands each as a record to `emit`, and controls it: pause/resume,
threads, and stop (a clean stop command, then SIGTERM, then SIGKILL). When
the record pipe closes without a requested stop, the worker died: an Event
``worker_died`` carries the exit code or signal and the last log lines.

``$ANUBIS_WORKER_CMD`` (a bench and test hook) replaces the worker's command
(``python -P -m anubis_tui.inference.worker``) with another program that
speaks the same protocol, e.g. `bench/ui_cost.py`'s synthetic token stream:
the spec JSON is appended to it as the last argument.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack

from anubis_tui.inference.worker import Spec
from anubis_tui.records import Event, Record, RecordError, record_from_plain
from anubis_tui.stream import Limits, StreamReader, decode

MAX_FRAME = 1 << 20
WORKER_SCRIPT = Path(__file__).with_name("worker.py")  # no single record from the worker is larger


LIMITS = Limits(
    buffer=4 * MAX_FRAME,
    str_len=MAX_FRAME,
    bin_len=MAX_FRAME,
    array_len=1 << 16,
    map_len=1 << 12,
    strict_map_key=True,
)
"""The worker's record stream: bytes that break these, or are not msgpack, are an ``error``
Event and the reading starts afresh (`anubis_tui.stream`)."""


def reader() -> StreamReader:
    """A reader of the worker's record stream: `LIMITS`, starting afresh after bad bytes."""
    return StreamReader(LIMITS, on_error="resync")


def exit_reason(returncode: int) -> str:
    """``SIGSEGV`` for a process killed by a signal, else ``exit N``."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def create_log(path: Path, replace: bool = False) -> None:
    """Create the worker's log file: a new file (mode 0600), never through a symlink.

    `replace` truncates an existing regular file instead (``--force``). Later
    worker starts append to it, again refusing a symlink put in its place.
    """
    if os.path.islink(path):
        raise OSError(f"{path} is a symlink; refusing to write the worker's log through it")
    flags = _LOG_FLAGS | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise OSError(
            f"{path} exists; the worker's log is never appended to a stranger's file"
        ) from None
    os.close(fd)


def open_log(path: Path) -> int:
    """The worker's log for appending, never through a symlink; made new if it is missing.

    A log next to a recording is made by `create_log` first (O_EXCL: a planted
    file is refused); others live in private temporary directories.
    """
    if str(path) == os.devnull:
        return os.open(os.devnull, os.O_WRONLY)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, _LOG_FLAGS)
    except FileNotFoundError:
        return os.open(path, _LOG_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)


class WorkerClient:
    """Runs one worker process and turns its output into records."""

    def __init__(
        self,
        spec: Spec,
        emit: Callable[[Record], None],
        log_path: Path,
        python: str = sys.executable,
        script_prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.emit = emit
        self.log_path = log_path
        self.python = python
        # A launcher that runs the worker as a script (scalene: `... prog.py --- args`).
        self.script_prefix = script_prefix
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the process running inference (may differ under a wrapper)
        self._stopping = False
        self._reader: threading.Thread | None = None
        self.exited = threading.Event()
        self.returncode: int | None = None
        self.loaded = threading.Event()
        self.loaded_info: dict[str, Any] = {}  # the model_loaded payload, once it came
        self.load_error: str | None = None

    def start(self) -> None:
        """Spawn the worker (``python -P -m anubis_tui.inference.worker SPEC``, or under
        `script_prefix`, or ``$ANUBIS_WORKER_CMD``) in a new session with stdout and stderr to
        the log, and read its records from a Unix socket in a private temporary directory.

        OSError if the log cannot be opened or the process cannot start.
        """
        self._dir = tempfile.mkdtemp(prefix="anubis-w-")
        path = os.path.join(self._dir, "records.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(0.1)
        spec = {**asdict(self.spec), "socket": path}
        # -P: the user's current directory is never on the worker's sys.path (a
        # llama_cpp.py there would run inside it); cwd is our private directory.
        if self.script_prefix is not None:
            cmd = [*self.script_prefix, str(WORKER_SCRIPT), "---", json.dumps(spec)]
        elif hook := os.environ.get("ANUBIS_WORKER_CMD"):
            cmd = [*shlex.split(hook), json.dumps(spec)]
        else:
            cmd = [self.python, "-P", "-m", "anubis_tui.inference.worker", json.dumps(spec)]
        log = open_log(self.log_path)
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=self._dir,
                start_new_session=True,
                env={**os.environ, **(self.env or {})},
            )
        finally:
            os.close(log)
        self.pid = self.proc.pid
        self._reader = threading.Thread(
            target=self._read_safely, args=(srv,), name="worker-reader", daemon=True
        )
        self._reader.start()

    def _send(self, msg: dict[str, Any]) -> bool:
        if self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write(msgpack.packb(msg))
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # a pipe broken, or already closed by stop()
            return False

    def pause(self) -> bool:
        """Send ``{"cmd": "pause"}``: the worker ends its request at the next token and waits;
        False if the pipe is gone.
        """
        return self._send({"cmd": "pause"})

    def resume(self) -> bool:
        """Send ``{"cmd": "resume"}``; False if the pipe is gone."""
        return self._send({"cmd": "resume"})

    def set_threads(self, n: int) -> bool:
        """Send ``{"cmd": "threads", "n": n}``: the worker calls llama.cpp's
        ``llama_set_n_threads`` with `n` for both thread counts at its next token. ValueError
        for n <= 0; False if the pipe is gone.
        """
        if n <= 0:
            raise ValueError("threads must be positive")
        return self._send({"cmd": "threads", "n": n})

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop cleanly; escalate to SIGTERM, then SIGKILL. Returns the exit code."""
        self._stopping = True
        if self.proc is None:
            return None
        self._send({"cmd": "stop"})
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 10) -> list[str]:
        """The last `lines` non-blank lines of the worker's log (llama.cpp's stderr included),
        from its last 8 KiB; [] if it cannot be read.
        """
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - 8192))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if ln.strip()][-lines:]

    def _accept(self, srv: socket.socket) -> socket.socket | None:
        """The worker's connection, or None if it exited before connecting."""
        assert self.proc is not None
        try:
            while True:
                try:
                    conn, _ = srv.accept()
                    conn.settimeout(None)
                    return conn
                except TimeoutError:
                    if self.proc.poll() is not None:
                        return None
        finally:
            srv.close()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._dir, "records.sock"))

    def _read_safely(self, srv: socket.socket) -> None:
        """`_read`, and whatever happens to it, nobody waits for this worker forever."""
        try:
            self._read(srv)
        except Exception as e:
            self.emit(Event(self._now(), "error", {"reason": f"worker reader: {e!r}"[:300]}))
        finally:
            self.exited.set()
            self.loaded.set()

    def _read(self, srv: socket.socket) -> None:
        conn = self._accept(srv)
        if conn is not None:
            for batch in decode(conn.recv, reader()):
                for obj in batch.objects:
                    self._handle(obj)
                if batch.error is not None:
                    reason = f"worker stream: {batch.error}"
                    self.emit(Event(self._now(), "error", {"reason": reason}))
            conn.close()
        assert self.proc is not None
        rc = self.proc.wait()
        self.returncode = rc
        shutil.rmtree(self._dir, ignore_errors=True)  # the worker's cwd, until it is gone
        if not self._stopping:
            payload: dict[str, Any] = {"returncode": rc, "log_tail": self.log_tail()}
            if rc < 0:
                payload["signal"] = exit_reason(rc)
            if self.load_error:
                payload["reason"] = self.load_error
            self.emit(Event(self._now(), "worker_died", payload))
        self.exited.set()
        self.loaded.set()  # nobody waits forever on a worker that is gone

    def _handle(self, obj: Any) -> None:
        try:
            rec = record_from_plain(obj)
        except RecordError as e:
            self.emit(Event(self._now(), "error", {"reason": f"worker sent a bad record: {e}"}))
            return
        if isinstance(rec, Event):
            if rec.kind == "model_loaded":
                self.pid = rec.payload.get("pid", self.pid)
                self.loaded_info = dict(rec.payload)
                self.loaded.set()
            elif rec.kind == "error" and rec.payload.get("stage") == "load":
                self.load_error = str(rec.payload.get("reason"))
                self.loaded.set()
        self.emit(rec)

    def _now(self) -> int:
        return time.monotonic_ns() - self.spec.t0_ns
