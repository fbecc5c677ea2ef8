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
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from anubis_tui.errors import AnubisError

VERSION = 1


def state_dir() -> Path:
    """``$ANUBIS_STATE_DIR``, else ``$XDG_STATE_HOME/anubis`` (default ``~/.local/state``);
    not created here.
    """
    explicit = os.environ.get("ANUBIS_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "anubis"


def state_path() -> Path:
    """The journal file: ``state_dir()/device-state.json``."""
    return state_dir() / "device-state.json"


class JournalError(AnubisError):
    """The journal cannot be written: no device change may be made."""


MAX_BYTES = 1 << 16  # a journal holds a few entries: 64 KiB is hundreds of policies
MAX_DEPTH = 8  # top, changes, entry, original, and a little room; deeper is not a journal


def _empty() -> dict[str, Any]:
    return {"version": VERSION, "pid": None, "changes": {}}


def _depth(text: bytes) -> int:
    """The deepest nesting of JSON arrays and objects in `text`, strings skipped (no recursion)."""
    depth = deepest = 0
    in_str = escaped = False
    for c in text:
        if in_str:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
        elif c in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def is_anubis(p: psutil.Process) -> bool:
    """Whether process `p` runs anubis: its command line names ``anubis`` or ``anubis_tui``.

    The console script (``.../bin/anubis``), ``python -m anubis_tui`` and a
    program importing ``anubis_tui`` all do; pid 1, a shell or any other
    program that reused a dead anubis's pid does not.
    """
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return any(os.path.basename(a) == "anubis" or "anubis_tui" in a for a in cmd[:16])


class Journal:
    """Original values of the device settings this process changed (thread-safe).

    The file is trusted only as ssh's StrictModes trusts a key file: a regular
    file (not a symlink) owned by this user and writable by nobody else, at
    most `MAX_BYTES` long and `MAX_DEPTH` deep. `refusal` says why one is not
    trusted; a refused journal is neither restored nor written over.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_path()
        self.lock = threading.Lock()
        self.refusal: str | None = None  # why the file on disk is not trusted (None: it is)
        self.damage: str | None = None  # why the file on disk is no journal (None: it is one)

    # -- reading ----------------------------------------------------------------------

    def _read(self) -> bytes | None:
        """The file's bytes if it is there and trusted; sets `refusal` when it is not."""
        self.refusal = None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.refusal = f"cannot open it safely ({e.strerror})"
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.refusal = "it is not a regular file"
            elif st.st_uid != os.geteuid():
                self.refusal = f"it is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
            elif st.st_mode & 0o022:
                self.refusal = f"others may write it (mode {stat.S_IMODE(st.st_mode):o})"
            if self.refusal:
                return None
            return os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)

    def load(self) -> dict[str, Any]:
        """The file's content; an empty journal if there is none, it is refused or damaged.

        `refusal` and `damage` say why a file that is there was not used.
        """
        self.damage = None
        raw = self._read()
        if not raw:
            return _empty()
        if len(raw) > MAX_BYTES:
            self.damage = f"more than a journal's {MAX_BYTES} bytes"
            return _empty()
        if _depth(raw) > MAX_DEPTH:
            self.damage = f"nested more than {MAX_DEPTH} deep"
            return _empty()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            self.damage = "not JSON"
            return _empty()
        if not isinstance(data, dict) or not isinstance(data.get("changes"), dict):
            self.damage = "not a journal (no map of changes)"
            return _empty()
        return data

    def owner(self) -> int | None:
        """The pid of a *live* anubis that owns the journal (None if nobody or a dead one).

        Live means: the pid runs, is not a zombie, is an anubis (`is_anubis`),
        is not pid 1, and started when the journal says its owner started
        (psutil ``create_time``, within 1 s), so a reused pid is no owner.
        """
        data = self.load()
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
            return None
        try:
            p = psutil.Process(pid)
            alive = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            started = data.get("started")
            reused = (
                alive
                and isinstance(started, int | float)
                and not isinstance(started, bool)
                and abs(p.create_time() - started) > 1
            )
            if reused:
                return None  # the pid was reused by another process
            return pid if alive and is_anubis(p) else None
        except psutil.Error:
            return None

    def changes(self) -> dict[str, dict[str, Any]]:
        """The entries that have the shape of one: a key, and a map with an ``original``."""
        return {
            k: v
            for k, v in self.load()["changes"].items()
            if isinstance(k, str) and isinstance(v, dict) and "original" in v
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
        """Note `key`'s original value before it is first changed; JournalError if it cannot.

        The journal becomes this process's even when `key` is already there (a
        crashed session's entry that could not be restored keeps its original):
        a later start must see a live owner and leave this session's change alone.
        """
        with self.lock:
            owner = self.owner()
            if owner is not None:
                raise JournalError(f"another anubis (pid {owner}) holds device changes")
            data = self.load()
            if self.refusal:
                raise JournalError(f"{self.path} is not trusted: {self.refusal}")
            changes = data["changes"]
            entry = changes.get(key)
            if not isinstance(entry, dict) or "original" not in entry:
                changes[key] = {"knob": knob, "original": original, "since": time.time()}
            elif isinstance(entry["original"], dict) and isinstance(original, dict):
                # The first original is the one to restore; parts a partial restore put back
                # (and so left the entry) come back in from now.
                merged = {**original, **entry["original"]}
                if merged == entry["original"] and data.get("pid") == os.getpid():
                    return
                entry["original"] = merged
            elif data.get("pid") == os.getpid():
                return
            data.update(version=VERSION, pid=os.getpid(), started=_started())
            try:
                self._write(data)
            except OSError as e:
                raise JournalError(f"cannot write {self.path}: {e.strerror or e}") from None

    def keep(self, key: str, left: Any) -> None:
        """After a partial restore: `key` now waits only for `left` (what was not put back)."""
        with self.lock:
            data = self.load()
            if self.refusal or key not in data["changes"]:
                return
            entry = data["changes"][key]
            if isinstance(entry, dict):
                entry["original"] = left
            with contextlib.suppress(OSError):
                self._write(data)

    def forget(self, key: str) -> None:
        """Drop `key` after it was restored; the file goes when no change is left.

        Does nothing with an untrusted file; a failed write is ignored (the value is
        back already; the next start finds a stale entry and restores it again).
        """
        with self.lock:
            data = self.load()
            if self.refusal:
                return
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
