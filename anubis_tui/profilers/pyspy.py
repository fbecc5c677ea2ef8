"""py-spy: ``py-spy record --pid <worker> --rate R --format speedscope``.

Non-blocking by default (the target is not stopped to sample it; py-spy
still burns CPU, which the sampler reports as the ``profiler`` process).
``--native`` unwinds C frames too, but needs the target stopped and so
cannot be combined with ``--nonblocking``. py-spy writes its output only
when it ends, and only on SIGINT (SIGTERM leaves nothing): each rate change
is a stop and a restart, one artifact per segment. It runs in its own
session so terminal signals never reach it, with its chatter in a log file.
"""

from __future__ import annotations

import json
import os
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
        try:
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            return f"py-spy could not start: {e.strerror}"
        end = time.monotonic() + START_GRACE_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return explain_failure(self._log_text(), target_pid)
            time.sleep(0.05)
        self.rate_hz = rate_hz
        self.samples = None
        self.started_ns = time.monotonic_ns()
        self.target = target_pid
        self.top, self.snapshots = [], 0
        self._dump_stop.clear()
        threading.Thread(target=self._dump_loop, name="pyspy-dump", daemon=True).start()
        return None

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
        m = SAMPLES_RE.search(self._log_text())
        self.samples = int(m.group(1)) if m else None
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
