"""py-spy: ``py-spy record --pid <worker> --rate R --format speedscope``.

Non-blocking by default (the target is not stopped to sample it; py-spy
still burns CPU, which the sampler reports as the ``profiler`` process).
``--native`` unwinds C frames too, but needs the target stopped and so
cannot be combined with ``--nonblocking``. py-spy writes its output only
when it ends, and only on SIGINT (SIGTERM leaves nothing): each rate change
is a stop and a restart, one artifact per segment. It runs in its own
session so terminal signals never reach it, with its chatter in a log file.

The live sample count comes from py-spy itself: `py-spy record` draws its
"Collected N samples" progress line only when its stderr is a terminal and
it was not told to hide it, and it hides it whenever it did not spawn the
target unless ``--capture`` is given (py-spy src/config.rs: ``if
!config.capture_output { config.hide_progress = true }``; src/main.rs draws
the line with indicatif, at most 20 times a second). So it runs with
``--capture`` on a pseudo-terminal; a thread reads the terminal twice a
second, keeps the last count in `samples`, and writes everything else to
the log. (A py-spy without ``--capture`` is run as before, without a count.)
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.profilers.base import PTRACE_FIX, Profiler, ProfilerStatus

SAMPLES_RE = re.compile(r"Samples:\s*(\d+)\s+Errors:\s*(\d+)")
PROGRESS_RE = re.compile(rb"Collected (\d+) samples")
ANSI_RE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
PTY_READ_S = 0.5  # py-spy writes ~1.7 kB/s of progress; the terminal holds 4 kB or more
PERMISSION_MARKERS = ("Permission Denied", "os error 13", "Operation not permitted", "os error 1)")
START_GRACE_S = 0.6


def script_path(name: str) -> str | None:
    """An executable installed beside this interpreter (a venv or pipx), else on PATH.

    A venv's scripts directory is not on PATH unless the venv is activated, and
    pipx never puts a dependency's scripts there: look beside the interpreter first.
    """
    beside = os.path.dirname(sys.executable) if sys.executable else ""  # venv/bin, unresolved
    for scheme_dir in (sysconfig.get_path("scripts"), beside):
        if scheme_dir:
            cand = os.path.join(scheme_dir, name)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return shutil.which(name)


def pyspy_binary() -> str | None:
    """Path of the ``py-spy`` executable (beside this Python first, then $PATH); None if absent."""
    return script_path("py-spy")


def explain_failure(text: str, pid: int) -> str:
    """py-spy's own error text → one line a user can act on."""
    if any(m in text for m in PERMISSION_MARKERS):
        return f"py-spy cannot attach to pid {pid}: {PTRACE_FIX}"
    if "No such file or directory (os error 2)" in text or "No such process" in text:
        return f"py-spy: target pid {pid} is not running"
    if "--nonblocking" in text and "native" in text:
        return "py-spy: --native cannot be combined with --nonblocking"
    last = [ln for ln in text.strip().splitlines() if ln.strip()]
    return f"py-spy failed: {last[-1] if last else 'no output'}"


class PySpy(Profiler):
    """py-spy attached to the worker: ``py-spy record`` writes a speedscope profile.

    Runs ``--nonblocking`` (the target is not stopped to sample it; low cost)
    unless `native`, which needs the target paused per sample. `rate_hz` is
    py-spy's ``--rate`` (samples per second). Needs ptrace permission on the
    target (`PTRACE_FIX`). While running, ``py-spy dump`` snapshots feed `top`.
    """

    name: ClassVar[str] = "py-spy"

    def __init__(self, native: bool = False, binary: str | None = None) -> None:
        self.native = native
        self.binary = binary or pyspy_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.artifact: Path | None = None
        self.log: Path | None = None
        self.rate_hz: float | None = None
        self.samples: int | None = None
        self.started_ns: int | None = None
        self.target: int | None = None
        self._n = 0
        self.top: list[tuple[str, int]] = []
        self.snapshots = 0  # `py-spy dump` snapshots behind `top`
        self._dump_stop = threading.Event()
        self._reader: threading.Thread | None = None  # reads py-spy's terminal (live count)
        self._reader_stop = threading.Event()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when a py-spy binary is found, else (False, an install hint)."""
        if pyspy_binary() is None:
            return False, "py-spy is not installed (pip install py-spy)"
        return True, ""

    def hot_frames(self) -> list[dict[str, Any]]:
        """The hottest frames seen by the dump snapshots so far, with their share."""
        n = self.snapshots
        if not n:
            return []
        out = []
        for key, count in self.top:
            func, _, where = key.rpartition(" (")
            out.append({"function": func, "where": where.rstrip(")"), "share": count / n})
        return out

    def start(self, target_pid: int, rate_hz: float, out_dir: Path) -> str | None:
        """Start recording `target_pid` at `rate_hz` into `out_dir`; None on success, else one line
        why not.

        The artifact is ``pyspy-NNN-<rate>hz-<mode>.speedscope.json`` with its log
        beside it. Waits `START_GRACE_S` so an immediate failure (no ptrace
        permission, target gone, no --native support) is reported here. Never raises.
        """
        if self.binary is None:
            return "py-spy is not installed (pip install py-spy)"
        try:
            os.kill(target_pid, 0)
        except ProcessLookupError:
            return f"py-spy: target pid {target_pid} is not running"
        except PermissionError:
            return f"py-spy cannot attach to pid {target_pid}: {PTRACE_FIX}"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return f"py-spy: cannot create {out_dir}: {e.strerror}"
        self._n += 1
        mode = "native" if self.native else "nonblocking"
        stem = f"pyspy-{self._n:03d}-{rate_hz:g}hz-{mode}"
        self.artifact = out_dir / f"{stem}.speedscope.json"
        self.log = out_dir / f"{stem}.log"
        cmd = [
            self.binary,
            "record",
            "--pid",
            str(target_pid),
            "--rate",
            str(int(rate_hz)),
            "--format",
            "speedscope",
            "--output",
            str(self.artifact),
        ]
        cmd.append("--native" if self.native else "--nonblocking")
        self.samples = None
        err = self._launch([*cmd, "--capture"], pty_out=True)
        if err is not None and "--capture" in self._log_text():  # an older py-spy
            err = self._launch(cmd, pty_out=False)
        if err is not None:
            return explain_failure(self._log_text(), target_pid) if err == "exited" else err
        self.rate_hz = rate_hz
        self.started_ns = time.monotonic_ns()
        self.target = target_pid
        self.top, self.snapshots = [], 0
        self._dump_stop.clear()
        threading.Thread(target=self._dump_loop, name="pyspy-dump", daemon=True).start()
        return None

    def _launch(self, cmd: list[str], pty_out: bool) -> str | None:
        """Start `cmd` with its output to the log (through a pty read by a thread when
        `pty_out`); None when it still runs after START_GRACE_S, "exited" when it ended,
        else why it could not start."""
        assert self.log is not None
        self._end_reader()
        master = slave = -1
        try:
            with open(self.log, "wb") as log:
                if pty_out:
                    master, slave = pty.openpty()
                out = slave if pty_out else log.fileno()
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
        except OSError as e:
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
            return f"py-spy could not start: {e.strerror}"
        if pty_out:
            os.close(slave)
            self._reader_stop = threading.Event()
            self._reader = threading.Thread(
                target=self._read_pty,
                args=(master, self.log, self._reader_stop),
                name="pyspy-progress",
                daemon=True,
            )
            self._reader.start()
        end = time.monotonic() + START_GRACE_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self._end_reader()
                return "exited"
            time.sleep(0.05)
        return None

    def _read_pty(self, fd: int, log_path: Path, stop: threading.Event) -> None:
        """py-spy's terminal → the live count in `samples`, the rest of its text to the log.

        Reads every PTY_READ_S (not at each of py-spy's 20 redraws a second), and
        once more when `stop` is set, after py-spy has ended.
        """
        os.set_blocking(fd, False)
        tail = b""
        try:
            with open(log_path, "ab") as log:
                while True:
                    last = stop.wait(PTY_READ_S)
                    data = tail + _read_available(fd)
                    cut = max(data.rfind(b"\r"), data.rfind(b"\n")) + 1
                    done, tail = (data, b"") if last else (data[:cut], data[cut:])
                    log.write(self._take_progress(done))
                    log.flush()
                    if last:
                        return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _take_progress(self, data: bytes) -> bytes:
        """`data` without its progress lines; the last count they show goes to `samples`."""
        kept = []
        for piece in re.split(rb"[\r\n]+", ANSI_RE.sub(b"", data)):
            m = PROGRESS_RE.search(piece)
            if m:
                self.samples = int(m.group(1))
            elif piece.strip():
                kept.append(piece.rstrip() + b"\n")
        return b"".join(kept)

    def _end_reader(self) -> None:
        """Let the pty reader take what py-spy wrote last, and wait for it."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            self._reader_stop.set()
            reader.join(5)
            self._reader = None

    def stop(self) -> Path | None:
        """Stop with SIGINT (SIGTERM would lose the profile), waiting up to 15 s, then SIGKILL.

        Returns the speedscope artifact's path, or None when py-spy wrote none.
        Sets `samples` from py-spy's closing ``Samples: N Errors: M`` line.
        """
        self._dump_stop.set()
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # SIGTERM would lose the profile
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.proc = None
        self._end_reader()
        m = SAMPLES_RE.search(self._log_text())
        self.samples = int(m.group(1)) if m else self.samples
        if self.artifact is not None and self.artifact.exists():
            return self.artifact
        return None

    def status(self) -> ProfilerStatus:
        """Running or not, py-spy's pid, rate (Hz), sample count, artifact and start time
        (monotonic ns).
        """
        running = self.proc is not None and self.proc.poll() is None
        return ProfilerStatus(
            running,
            self.proc.pid if self.proc else None,
            self.rate_hz,
            self.samples,
            self.artifact,
            self.started_ns,
        )

    def exited_early(self) -> str | None:
        """If py-spy ended on its own (target gone, crash), why; else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self._end_reader()  # its last words are in the log
        text = self._log_text()
        if "process exited" in text:
            return "py-spy stopped: the worker exited"
        return explain_failure(text, self.target or -1)

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace") if self.log else ""
        except OSError:
            return ""

    def _dump_loop(self) -> None:
        """Hottest functions, from `py-spy dump --json` every 2 s while recording."""
        counts: Counter[str] = Counter()
        while not self._dump_stop.wait(2.0):
            if self.binary is None or self.target is None:
                return
            try:
                out = subprocess.run(
                    [self.binary, "dump", "--pid", str(self.target), "--json", "--nonblocking"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                )
                threads = json.loads(out.stdout) if out.returncode == 0 else []
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
            if not isinstance(threads, list):
                continue
            self.snapshots += 1
            for th in threads:
                if not isinstance(th, dict):
                    continue
                frames = th.get("frames") or []
                # Inside llama_decode the GIL is released and py-spy may call the main thread
                # idle: it is the inference thread all the same.
                if frames and (th.get("active") or th.get("thread_name") == "MainThread"):
                    f = frames[0]
                    counts[
                        f"{f.get('name')} ({Path(f.get('filename', '?')).name}:{f.get('line')})"
                    ] += 1
            self.top = counts.most_common(5)


def _read_available(fd: int) -> bytes:
    """Everything a non-blocking `fd` holds now (b"" at its end or when empty)."""
    got = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # EIO: py-spy, the terminal's only writer, has ended
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


def speedscope_hot_frames(path: Path, top: int = 5) -> list[dict[str, Any]]:
    """The frames a speedscope profile spent most samples in (self time), with their share."""
    d = json.loads(path.read_text())
    frames = d.get("shared", {}).get("frames", [])
    weight: Counter[int] = Counter()
    total = 0.0
    for prof in d.get("profiles", []):
        samples = prof.get("samples") or []
        weights = prof.get("weights") or [1] * len(samples)
        for stack, w in zip(samples, weights, strict=False):
            if stack:
                weight[stack[-1]] += w
                total += w
    out = []
    for i, w in weight.most_common(top):
        f = frames[i] if 0 <= i < len(frames) else {}
        where = f"{Path(str(f.get('file', '?'))).name}:{f.get('line', '?')}"
        out.append({"function": f.get("name", "?"), "where": where, "share": w / total})
    return out


def speedscope_frames(path: Path) -> list[str]:
    """Function names in a speedscope artifact (for tests and reports)."""
    d = json.loads(path.read_text())
    return [f.get("name", "") for f in d.get("shared", {}).get("frames", [])]
