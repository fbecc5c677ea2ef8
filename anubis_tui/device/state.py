"""The journal of device changes: what anubis changed on the machine, written before it changes it.

A device knob (GPU power limit, CPU maximum frequency, nvpmodel) changes the
machine for everyone, so its original value must come back whatever happens
to anubis. Before the first change of a setting its original value is
written here (atomically: a temporary file, fsync, rename); on a clean exit
the session restores it and forgets it. After a crash or a ``kill -9`` the
file stays, and the next start (or ``anubis restore``) puts the values
back. The file names the process that owns it: a live anubis's changes are
never undone by another.

The file is ``$XDG_STATE_HOME/anubis/device-state.json`` (default
``~/.local/state``), or ``$ANUBIS_STATE_DIR/device-state.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

VERSION = 1


def state_dir() -> Path:
    explicit = os.environ.get("ANUBIS_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "anubis"


def state_path() -> Path:
    return state_dir() / "device-state.json"


class JournalError(Exception):
    """The journal cannot be written: no device change may be made."""


class Journal:
    """Original values of the device settings this process changed (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_path()
        self.lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The file's content; an empty journal if there is none or it is not one."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read(1 << 20) or b"{}")
        except (OSError, ValueError):
            return {"version": VERSION, "pid": None, "changes": {}}
        if not isinstance(data, dict) or not isinstance(data.get("changes"), dict):
            return {"version": VERSION, "pid": None, "changes": {}}
        return data

    def owner(self) -> int | None:
        """The pid of a *live* anubis that owns the journal (None if nobody or a dead one)."""
        data = self.load()
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
            return None
        try:
            p = psutil.Process(pid)
            alive = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            started = data.get("started")
            if alive and isinstance(started, int | float) and p.create_time() > started + 1:
                return None  # the pid was reused by a later process
            return pid if alive else None
        except psutil.Error:
            return None

    def changes(self) -> dict[str, dict[str, Any]]:
        return {
            k: v
            for k, v in self.load()["changes"].items()
            if isinstance(k, str) and isinstance(v, dict)
        }

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".device-state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remember(self, key: str, knob: str, original: Any) -> None:
        """Note `key`'s original value before it is first changed; JournalError if it cannot."""
        with self.lock:
            owner = self.owner()
            if owner is not None:
                raise JournalError(f"another anubis (pid {owner}) holds device changes")
            data = self.load()
            changes = data["changes"]
            if key in changes:  # the first original is the one to restore
                return
            changes[key] = {"knob": knob, "original": original, "since": time.time()}
            data.update(version=VERSION, pid=os.getpid(), started=_started())
            try:
                self._write(data)
            except OSError as e:
                raise JournalError(f"cannot write {self.path}: {e.strerror or e}") from None

    def forget(self, key: str) -> None:
        with self.lock:
            data = self.load()
            data["changes"].pop(key, None)
            try:
                if data["changes"]:
                    self._write(data)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
            except OSError:
                pass  # restored anyway; the next start finds nothing to do


def _started() -> float:
    with contextlib.suppress(psutil.Error):
        return psutil.Process().create_time()
    return time.time()
