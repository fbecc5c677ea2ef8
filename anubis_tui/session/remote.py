"""A session on another machine: `anubis agent` run through the system's ssh client.

`RemoteSession` has the control-surface methods the app calls; each sends
the agent a command and waits for its ``ack`` (or for the connection to
drop), so the app cannot tell it from a local session. ssh is the user's:
their keys, config and jump hosts apply; anubis handles no secret. Records
from the agent go to the sinks (the live state) and to a local recording;
a dropped connection closes that recording with a Footer (it stays valid)
and is shown; `reconnect` starts a new connection and a new local file.
Each acknowledgement's latency (key to ack) is a local ``remote_ack``
Event, shown in the monitor panel.

The reader thread survives what the link brings: a record it cannot use
(an ack whose id is a list, a payload of the wrong type) is a local
``remote_error`` Event and the reading goes on; only bytes that are not
msgpack end the connection. ssh's stderr is read as it comes (its last lines
are the reason shown when the link drops). The agent writes at least a
``heartbeat`` each second: `stalled_s` says how long the link has been
silent once that passes `STALL_S`. The host never reaches ssh as an option:
it may not start with ``-`` and goes after ``--``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import shlex
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from anubis_tui.recording.reader import RECORD_LIMITS
from anubis_tui.recording.writer import RecordingError, RecordingWriter, open_output
from anubis_tui.records import (
    ChannelsAdded,
    Event,
    Footer,
    Header,
    Record,
    Sample,
    Tokens,
    record_from_plain,
)
from anubis_tui.session.core import Outcome
from anubis_tui.stream import StreamReader, decode

ACK_TIMEOUT_S = 120.0  # a knob may reload a model; a dead connection ends the wait sooner
DEFAULT_REMOTE_CMD = "anubis agent"
STALL_S = 2.0  # silence (no record, no heartbeat) after which the link is shown stalled
STDERR_LINES = 20  # the last lines of ssh's stderr kept for the reason of a drop


def host_problem(host: str) -> str | None:
    """Why `host` cannot be given to ssh as a host, or None.

    A leading ``-`` would make it an option (``-oProxyCommand=…`` runs a local
    command); whitespace and control characters are no part of a host name.
    """
    if not host:
        return "an empty host"
    if host.startswith("-"):
        return "a host may not start with '-'"
    if any(c.isspace() or not c.isprintable() for c in host):
        return "a host has no spaces or control characters"
    return None


class RemoteSession:
    """The agent at `host`, driven through ssh, with the methods of the control surface."""

    def __init__(
        self,
        host: str,
        remote_cmd: str = DEFAULT_REMOTE_CMD,
        ssh: str = "ssh",
        sinks: list[Callable[[Record], None]] | None = None,
        record_path: str | None = None,
    ) -> None:
        why = host_problem(host)
        if why:
            raise ValueError(f"remote host {host!r}: {why}")
        self.host = host
        self.remote_cmd = remote_cmd
        self.ssh = shlex.split(ssh)
        self.sinks = list(sinks or [])
        self.record_base = record_path
        self.record_path: str | None = None
        self.header: Header | None = None
        self._ids = itertools.count(1)
        self._acks: dict[int, Event | None] = {}
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: RecordingWriter | None = None
        self._connection = 0
        self.connected = False
        self.lost: str | None = None
        self.rate_hz = 10.0
        self.spec = None  # the model lives on the other machine: no local picker
        self.models_dirs: list[Path] = []
        self._last_t = 0
        self._stopping = False
        self._heard = time.monotonic()  # when the link last brought anything
        # The live view spans reconnects: each new agent starts its clock and its energy
        # counters at 0, so its records reach the sinks shifted to continue the last ones
        # (the local files keep each agent's own stamps: each is a recording by itself).
        self._view_off = 0  # ns added to this connection's stamps for the sinks
        self._view_last = 0  # the latest stamp the sinks have seen
        self._view_header: Header | None = None
        self._energy: list[int] = []  # indices of energy counters in the view's Samples
        self._e_off: dict[int, float] = {}
        self._e_last: dict[int, float] = {}
        self._e_fresh: set[int] = set()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.bad_records = 0
        self._record_error: str | None = None

    # -- connection --------------------------------------------------------------------

    def start(self) -> None:
        """Connect: ssh HOST REMOTE_CMD, records in on its stdout, commands out on its stdin."""
        self._connection += 1
        # "--" ends ssh's options: the host is a host whatever it looks like.
        cmd = [*self.ssh, "--", self.host, self.remote_cmd]
        self._stderr = deque(maxlen=STDERR_LINES)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.connected = True
        self.lost = None
        self._heard = time.monotonic()
        self._last_t = 0  # this connection's clock (its agent's), for its local file
        errs = threading.Thread(target=self._read_stderr, args=(self._proc, self._stderr))
        errs.daemon = True
        errs.start()
        threading.Thread(target=self._read, args=(self._proc, errs), daemon=True).start()

    @property
    def stalled_s(self) -> float | None:
        """Seconds the link has been silent, once over `STALL_S`; None while it talks."""
        if not self.connected:
            return None
        quiet = time.monotonic() - self._heard
        return quiet if quiet >= STALL_S else None

    @staticmethod
    def _read_stderr(proc: subprocess.Popen[bytes], lines: deque[str]) -> None:
        """ssh's stderr as it comes (a full pipe would block ssh); the last lines kept."""
        if proc.stderr is None:
            return
        for raw in iter(proc.stderr.readline, b""):
            text = raw.decode(errors="replace").strip()
            if text:
                lines.append(text[:300])

    def reconnect(self) -> Outcome:
        """A new ssh connection and a new local file (``-2``, ``-3`` … before the suffix);
        refused while still connected.
        """
        if self.connected:
            return Outcome(False, f"still connected to {self.host}")
        self.start()
        return Outcome(True, f"reconnecting to {self.host}")

    def _local_path(self) -> str | None:
        if not self.record_base:
            return None
        if self._connection == 1:
            return self.record_base
        stem, ext = os.path.splitext(self.record_base)
        return f"{stem}-{self._connection}{ext or '.msgpack'}"

    def _read(self, proc: subprocess.Popen[bytes], errs: threading.Thread) -> None:
        try:
            self._read_link(proc, errs)
        except Exception as e:  # never a silent end: the link is shown lost, the file closed
            self._lost(f"the link's reader failed: {type(e).__name__}: {e}")
            if proc.poll() is None:
                proc.terminate()

    def _read_link(self, proc: subprocess.Popen[bytes], errs: threading.Thread) -> None:
        assert proc.stdout is not None
        link = functools.partial(os.read, proc.stdout.fileno())
        header_seen = False
        broken: str | None = None
        # Bytes that are not msgpack: no way to find the next record, the reader stops.
        for batch in decode(link, StreamReader(RECORD_LIMITS, on_error="stop")):
            self._heard = time.monotonic()
            bad: list[str] = []
            for obj in batch.objects:
                try:
                    rec = record_from_plain(obj)
                    if not header_seen and not isinstance(rec, Header):
                        raise ValueError("the stream does not start with a Header")
                    header_seen = header_seen or isinstance(rec, Header)
                    self._deliver(rec)
                except Exception as e:  # one bad record: an Event, and the next one
                    self.bad_records += 1
                    bad.append(f"{type(e).__name__}: {str(e)[:160]}")
            if batch.error is not None:
                broken = f"the agent's stream is corrupt ({batch.why(120)})"
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                self._emit_local("remote_error", reason=f"record skipped: {bad[0]}{more}")
        if broken is not None and proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errs.join(2)
        last = self._stderr[-1][:200] if self._stderr else ""
        rc = proc.returncode
        if broken is not None:
            self._lost(broken, last)
        elif not header_seen:  # it never came up: ssh's or the shell's last word says why
            self._lost(last or f"ssh exited ({rc})", last)
        elif rc:  # it ran, then dropped: the last stderr line is the agent's, not the reason
            self._lost(f"ssh exited ({rc})", last)
        else:
            self._lost("the agent ended", last)

    def _deliver(self, rec: Record) -> None:
        if isinstance(rec, Header):
            self.header = rec
            self._join_view(rec)
            path = self._local_path()
            if path is not None:
                try:
                    self._writer = RecordingWriter(
                        open_output(path),
                        rec,
                        on_error=lambda msg: self._record_failed(msg, path),
                    )
                    self.record_path = path
                except (RecordingError, OSError) as e:
                    self._record_failed(str(e), path)
        elif isinstance(rec, Event) and rec.kind == "heartbeat":
            return  # the link is alive; nothing to show or keep
        elif isinstance(rec, Event) and rec.kind == "ack":
            cid = rec.payload.get("id")
            if isinstance(cid, int) and not isinstance(cid, bool):  # ours are ints
                with self._cond:
                    if cid in self._acks:
                        self._acks[cid] = rec
                        self._cond.notify_all()
        elif isinstance(rec, Event) and rec.kind == "rate":
            hz = rec.payload.get("sampler_hz")
            if isinstance(hz, int | float):
                self.rate_hz = float(hz)
        t = getattr(rec, "t", None)
        if isinstance(t, int):
            self._last_t = max(self._last_t, t)
        self._to_sinks(rec)

    def _join_view(self, header: Header) -> None:
        """A new agent's Header: the first starts the view; a later one with the same
        channels continues it (no second Header reaches the sinks, so no row twice)."""
        prev = self._view_header
        if prev is not None and [c.id for c in prev.channels] == [c.id for c in header.channels]:
            self._view_off = self._view_last + 1_000_000_000  # 1 s after the last one seen
            self._e_fresh = set(self._energy)
            return
        self._view_header = header
        self._view_off = 0
        self._energy = [j for j, c in enumerate(header.channels) if c.kind == "energy"]
        self._e_off, self._e_last, self._e_fresh = {}, {}, set()

    def _view(self, rec: Record) -> Record | None:
        """`rec` as the sinks see it: shifted in time and energy across reconnects."""
        if isinstance(rec, Header):
            return rec if rec is self._view_header else None
        off = self._view_off
        if isinstance(rec, Sample):
            values = list(rec.values)
            for j in self._energy:
                v = values[j] if j < len(values) else None
                if not isinstance(v, int | float) or isinstance(v, bool):
                    continue
                if j in self._e_fresh:  # the new agent's counter continues the old one
                    self._e_fresh.discard(j)
                    self._e_off[j] = self._e_last.get(j, 0.0) - v
                values[j] = v + self._e_off.get(j, 0.0)
                self._e_last[j] = float(values[j])  # type: ignore[arg-type]
            out: Sample | Tokens | Event | Footer | ChannelsAdded = Sample(rec.t + off, values)
        elif isinstance(rec, Tokens):
            out = dataclasses.replace(rec, t=rec.t + off, t_first=rec.t_first + off)
        elif isinstance(rec, Event | Footer | ChannelsAdded):
            out = dataclasses.replace(rec, t=rec.t + off)
        else:
            return rec
        self._view_last = max(self._view_last, out.t)
        return out

    def _to_sinks(self, rec: Record) -> None:
        w = self._writer
        if w is not None and not isinstance(rec, Header | Footer):
            w.submit(rec)
        shown = self._view(rec)
        if shown is None:
            return
        rec = shown
        for s in self.sinks:
            try:
                s(rec)
            except Exception as e:  # the live view's trouble is not the link's
                if not (isinstance(rec, Event) and rec.kind == "remote_error"):
                    self._emit_local("remote_error", reason=f"sink: {type(e).__name__}: {e}")

    def _record_failed(self, why: str, path: str) -> None:
        """The local recording cannot be written: kept (`recording_error`) and an Event."""
        self._record_error = f"{path}: {why}"
        self._emit_local("recording_error", reason=why, path=path)

    def _emit_local(self, kind: str, **payload: Any) -> None:
        self._to_sinks(Event(self._last_t, kind, payload))

    def _lost(self, why: str, stderr: str = "") -> None:
        if not self.connected or self._stopping:
            return
        self.connected = False
        self.lost = why
        self._emit_local("connection_lost", host=self.host, reason=why, stderr=stderr)
        w, self._writer = self._writer, None
        if w is not None:
            w.close(Footer(self._last_t, {"clean": False, "stopped_by": f"connection lost: {why}"}))
        with self._cond:
            self._cond.notify_all()

    def stop(self, reason: str | None = None) -> None:
        """Ask the agent to stop (its Footer ends the stream), then close the connection."""
        self._stopping = True  # the agent's end is ours, not a lost connection
        p = self._proc
        if p is not None and p.poll() is None:
            self._send({"id": 0, "cmd": "stop"})
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.terminate()
        w, self._writer = self._writer, None
        if w is not None:
            w.close(Footer(self._last_t, {"clean": True, "stopped_by": reason or "quit"}))
        self.connected = False

    # -- commands ------------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> bool:
        p = self._proc
        if p is None or p.stdin is None or p.poll() is not None:
            return False
        try:
            p.stdin.write(msgpack.packb(msg))
            p.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def command(self, cmd: str, **args: Any) -> Outcome:
        """Send one command and wait for its acknowledgement (or the connection's end)."""
        if not self.connected:
            return Outcome(False, f"disconnected from {self.host}: r reconnects")
        cid = next(self._ids)
        with self._cond:
            self._acks[cid] = None
        t0 = time.monotonic()
        if not self._send({"id": cid, "cmd": cmd, **args}):
            return Outcome(False, f"cannot reach {self.host}")
        end = t0 + ACK_TIMEOUT_S
        with self._cond:
            while self._acks.get(cid) is None and self.connected and time.monotonic() < end:
                self._cond.wait(0.2)
            ack = self._acks.pop(cid, None)
        if ack is None:
            return Outcome(False, f"{cmd}: no answer from {self.host} ({self.lost or 'timeout'})")
        latency_ms = 1000 * (time.monotonic() - t0)
        self._emit_local("remote_ack", cmd=cmd, latency_ms=latency_ms)
        return Outcome(bool(ack.payload.get("ok")), str(ack.payload.get("message", "")))

    @property
    def recording(self) -> str | None:
        """The local file while it is being written; None once it failed (no false "rec")."""
        w = self._writer
        return self.record_path if w is not None and w.error is None else None

    @property
    def recording_error(self) -> str | None:
        """Why a local recording of this session could not be written (a full disk), if one
        could not; kept after the link drops and after `stop`."""
        return self._record_error

    def pause(self) -> Outcome:
        """The agent's ``pause`` command (`command`), acknowledged from the far side."""
        return self.command("pause")

    def resume(self) -> Outcome:
        """The agent's ``resume`` command."""
        return self.command("resume")

    def toggle_pause(self) -> Outcome:
        """The agent's ``toggle_pause`` command (the far session knows whether it is paused)."""
        return self.command("toggle_pause")

    def set_rate(self, rate_hz: float) -> Outcome:
        """The agent's ``rate`` command with ``hz``; the far session's sources set the cap."""
        return self.command("rate", hz=rate_hz)

    def profiler_plain(self) -> Outcome:
        """The agent's ``profiler_plain`` command."""
        return self.command("profiler_plain")

    def step_rate(self, direction: int) -> Outcome:
        """The agent's ``rate_step`` command with ``direction``."""
        return self.command("rate_step", direction=direction)

    def marker(self, label: str = "") -> Outcome:
        """The agent's ``marker`` command: the marker is stamped by the far session's clock."""
        return self.command("marker", label=label)

    def profiler_toggle(self, name: str) -> Outcome:
        """The agent's ``profiler`` command with ``name``; artifacts stay on the far machine."""
        return self.command("profiler", name=name)

    def profiler_step_rate(self, step: int) -> Outcome:
        """The agent's ``profiler_rate`` command with ``step``."""
        return self.command("profiler_rate", step=step)

    def knob_step(self, name: str, direction: int) -> Outcome:
        """The agent's ``knob_step`` command with ``name`` and ``direction``."""
        return self.command("knob_step", name=name, direction=direction)

    def set_knob(self, name: str, value: Any) -> Outcome:
        """The agent's ``knob`` command with ``name`` and ``value`` (checked on the far side)."""
        return self.command("knob", name=name, value=value)

    def start_recording(self, path: str | None = None) -> Outcome:
        """Sends nothing: a remote session is recorded locally from the start (--record PATH) or
        not at all; says which.
        """
        return (
            Outcome(True, f"recorded locally to {self.record_path}")
            if self.recording
            else (Outcome(False, "no local recording in this session (--record PATH)"))
        )

    def stop_recording(self) -> Outcome:
        """Refused: the local recording ends with the session (or with the link)."""
        return Outcome(False, "a remote session is recorded locally until it ends")
