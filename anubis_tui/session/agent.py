"""The agent protocol: control-surface commands in as msgpack maps, acknowledged as Events.

Records go out in exactly the recording format (a Header, then records, a
Footer at the end). Commands come in as msgpack maps ``{"id": N, "cmd":
NAME, ...arguments}``; each is answered by an ``ack`` Event ``{id, cmd, ok,
message}`` in the same stream, after the Events the command itself caused.
`COMMANDS` is the whole protocol: each command's arguments, their types and
whether they are required; a key no command takes is refused. The full
description, with limits and examples, is docs/agent-protocol.md.

`run_command` never raises: a command that fails in any way (a wrong type,
an OverflowError deep in a knob, a RecursionError) is a failed ack and the
agent goes on with the next one.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from anubis_tui.records import Event
from anubis_tui.session.core import Outcome
from anubis_tui.session.surface import Commands
from anubis_tui.stream import Limits, StreamReader, chunks

if TYPE_CHECKING:
    from anubis_tui.recording.writer import RecordingWriter
    from anubis_tui.session.surface import ControlSurface

MAX_COMMAND_BYTES = 1 << 16  # one command, packed
MAX_DEPTH = 8  # nesting of maps and lists in one command
MAX_MAP_LEN = 64  # keys of one map (msgpack Unpacker limit)
MAX_ARRAY_LEN = 1024  # items of one list (msgpack Unpacker limit)
MAX_TEXT = 4096  # characters of a label, a path, a name
BASE_KEYS = frozenset({"id", "cmd"})
COMMAND_QUEUE = 256  # commands waiting to run; more are refused (one ack a chunk)
HEARTBEAT_S = 1.0  # the stream carries something at least this often (remote stall display)


LIMITS = Limits(
    buffer=4 * MAX_COMMAND_BYTES,
    str_len=MAX_COMMAND_BYTES,
    bin_len=MAX_COMMAND_BYTES,
    array_len=MAX_ARRAY_LEN,
    map_len=MAX_MAP_LEN,
    ext_len=0,
    strict_map_key=False,
)
"""The agent's input limits, for the whole session. Sizes are msgpack's own (``max_*`` of
`msgpack.Unpacker`); nesting deeper than msgpack's stack is a `msgpack.StackError`, and
`check_shape` bounds it further."""


class Intake:
    """Bytes from stdin in, command maps and complaints out; the limits hold throughout.

    `feed` takes one read (any size) and returns the maps decoded from it and at
    most one line about everything else in it: values that are not maps are
    counted, not answered one by one, and bytes that break the limits or are
    not msgpack drop what is buffered and start decoding afresh with the same
    limits (`unpacker`).
    """

    def __init__(self) -> None:
        self._reader = StreamReader(LIMITS, on_error="resync")

    def feed(self, chunk: bytes) -> tuple[list[dict[Any, Any]], list[str]]:
        """The command maps decoded from `chunk` (with what was buffered), and at most one line
        naming what was dropped: values that are not maps (counted), input over the size
        limit, or bytes that are not msgpack (the buffer is dropped and decoding starts
        afresh).
        """
        batch = self._reader.feed(chunk)  # a limit, malformed bytes, too deep: resynchronised
        maps = [m for m in batch.objects if isinstance(m, dict)]
        not_maps = len(batch.objects) - len(maps)
        bad: str | None = None
        if batch.too_big:
            bad = f"input over {4 * MAX_COMMAND_BYTES} bytes without a whole command; dropped"
        elif batch.error is not None:
            bad = f"bad command: {batch.why(120)}; input dropped"
        said = []
        if not_maps:
            said.append(f"{not_maps} inputs that are not command maps")
        if bad:
            said.append(bad)
        return maps, ["; ".join(said)] if said else []


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its kind (``number``, ``int``, ``step``, ``text``,
    ``scalar``) and whether it must be there."""

    kind: str
    required: bool = True
    doc: str = ""


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key} must be a number")
    f = float(v)  # an int over 2^1024 raises OverflowError: a failed ack as well
    if not math.isfinite(f):
        raise ValueError(f"{key} must be finite")
    return f


def _int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} must be an integer")
    return v


def _step(key: str, v: Any) -> int:
    if _int(key, v) not in (-1, 1):
        raise ValueError(f"{key} must be 1 or -1")
    return int(v)


def _text(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string")
    if len(v) > MAX_TEXT:
        raise ValueError(f"{key} is longer than {MAX_TEXT} characters")
    return v


def _scalar(key: str, v: Any) -> Any:
    """A knob's value: its range is the knob's own check; here only its kind and size."""
    if isinstance(v, str):
        return _text(key, v)
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{key} must be finite")
    if not (v is None or isinstance(v, bool | int | float)):
        raise ValueError(f"{key} must be a number, a string, true/false or nil")
    return v


ARG_KINDS: dict[str, Callable[[str, Any], Any]] = {
    "number": _number,
    "int": _int,
    "step": _step,
    "text": _text,
    "scalar": _scalar,
}


def _arg(msg: dict[str, Any], key: str, a: Arg) -> Any:
    """Argument `key` of `msg`, checked as `a` says; ValueError (one line) if it is not one."""
    if key not in msg:
        if a.required:
            raise ValueError(f"{key} is required")
        return None
    return ARG_KINDS[a.kind](key, msg[key])


@dataclass(frozen=True)
class Command:
    """A command: its arguments and the session method it calls with them."""

    args: dict[str, Arg]
    call: Callable[[Commands, dict[str, Any]], Outcome]
    doc: str


def _record(s: Commands, a: dict[str, Any]) -> Outcome:
    path = a["path"]
    if path in ("", "-"):
        return Outcome(False, "record: a file path on the agent's machine (stdout is the stream)")
    return s.start_recording(path)


COMMANDS: dict[str, Command] = {
    "pause": Command({}, lambda s, a: s.pause(), "pause inference"),
    "resume": Command({}, lambda s, a: s.resume(), "resume inference"),
    "toggle_pause": Command({}, lambda s, a: s.toggle_pause(), "pause or resume inference"),
    "rate": Command(
        {"hz": Arg("number", doc="sampling rate, Hz")},
        lambda s, a: s.set_rate(a["hz"]),
        "set the sampling rate",
    ),
    "rate_step": Command(
        {"direction": Arg("step", doc="1 or -1")},
        lambda s, a: s.step_rate(a["direction"]),
        "one step up or down the ladder of sampling rates",
    ),
    "marker": Command(
        {"label": Arg("text", required=False, doc="the marker's text (default empty)")},
        lambda s, a: s.marker(a["label"] or ""),
        "a marker Event",
    ),
    "profiler": Command(
        {"name": Arg("text", doc="py-spy, py-spy-native or scalene")},
        lambda s, a: s.profiler_toggle(a["name"]),
        "turn a profiler on or off",
    ),
    "profiler_rate": Command(
        {"step": Arg("step", doc="1 or -1")},
        lambda s, a: s.profiler_step_rate(a["step"]),
        "the running profiler's rate one step up or down",
    ),
    "profiler_plain": Command(
        {}, lambda s, a: s.profiler_plain(), "profilers off, the worker plain"
    ),
    "knob": Command(
        {
            "name": Arg("text", doc="a knob name"),
            "value": Arg("scalar", doc="its new value"),
        },
        lambda s, a: s.set_knob(a["name"], a["value"]),
        "set a knob",
    ),
    "knob_step": Command(
        {"name": Arg("text", doc="a knob name"), "direction": Arg("step", doc="1 or -1")},
        lambda s, a: s.knob_step(a["name"], a["direction"]),
        "a knob one step up or down",
    ),
    "record": Command(
        {"path": Arg("text", doc="a new file on the agent's machine")},
        _record,
        "also record to a file on the agent's machine (the stream is untouched)",
    ),
    "record_stop": Command(
        {}, lambda s, a: s.stop_recording(), "close the file `record` opened (not the stream)"
    ),
}
# ``stop`` ends the agent; it is handled by the agent's loop, not by the session.
STOP = Command({}, lambda s, a: Outcome(True, "stopping"), "end the session: Footer, exit")


def depth(v: Any, limit: int = MAX_DEPTH + 1) -> int:
    """How deeply `v` nests maps and lists, counted up to `limit` (iterative: no recursion)."""
    most = 0
    todo: list[tuple[Any, int]] = [(v, 0)]
    while todo:
        x, d = todo.pop()
        most = max(most, d)
        if most >= limit:
            return most
        if isinstance(x, dict):
            todo += [(k, d + 1) for k in x] + [(y, d + 1) for y in x.values()]
        elif isinstance(x, list | tuple):
            todo += [(y, d + 1) for y in x]
    return most


def check_shape(msg: Any) -> str | None:
    """Why `msg` cannot be a command (too deep, or not something the recording can hold)."""
    if depth(msg) > MAX_DEPTH:
        return f"a command nests at most {MAX_DEPTH} deep"
    try:
        # The writer's packer: what it cannot frame must never reach the recording.
        n = len(msgpack.packb(msg, use_bin_type=True))
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        return f"a command the recording cannot hold ({type(e).__name__})"
    if n > MAX_COMMAND_BYTES:
        return f"a command is at most {MAX_COMMAND_BYTES} bytes"
    return None


def command_id(msg: Any) -> int | str | None:
    """The id to acknowledge: an int or a short string; anything else is acknowledged as nil."""
    cid = msg.get("id") if isinstance(msg, dict) else None
    if isinstance(cid, bool) or not isinstance(cid, int | str):
        return None
    if isinstance(cid, str) and len(cid) > 200:
        return None
    if isinstance(cid, int) and not -(2**63) <= cid < 2**64:
        return None
    return cid


class Request(NamedTuple):
    """One input map, checked once: its id, its name, and the command with its arguments,
    or (`command` None) why it is refused, as `args`."""

    id: Any
    name: str
    command: Command | None
    args: dict[str, Any] | str

    @property
    def is_stop(self) -> bool:
        """A well-formed ``stop`` (the loop runs it out of band, before queued commands)."""
        return self.command is STOP


def _refused(cid: Any, name: str, why: str) -> Request:
    return Request(cid, name, None, why)


def parse(msg: Any) -> Request:
    """The one check of a command's shape: `Request` (id, name, command, arguments), or
    (id, name, None, why it is refused); never raises."""
    try:
        return _parse(msg)
    except Exception as e:  # a hostile value must not end the agent's loop
        return _refused(None, "?", f"bad command: {type(e).__name__}")


def _parse(msg: Any) -> Request:
    if not isinstance(msg, dict):
        return _refused(None, "?", "a command is a map with id and cmd")
    cid = command_id(msg)
    cmd = msg.get("cmd")
    if not isinstance(cmd, str):
        return _refused(cid, "?", "cmd must be a string")
    why = check_shape(msg)
    if why:
        return _refused(cid, cmd[:40], why)
    c = STOP if cmd == "stop" else COMMANDS.get(cmd)
    if c is None:
        names = ", ".join(sorted([*COMMANDS, "stop"]))
        return _refused(cid, cmd[:40], f"unknown command {cmd[:40]!r}; commands: {names}")
    extra = sorted(str(k)[:40] for k in msg if k not in BASE_KEYS and k not in c.args)
    if extra:
        takes = ", ".join(c.args) or "no arguments"
        return _refused(cid, cmd, f"{cmd}: unknown key {', '.join(extra)} ({cmd} takes {takes})")
    try:
        args = {k: _arg(msg, k, a) for k, a in c.args.items()}
    except (ValueError, TypeError, OverflowError) as e:
        return _refused(cid, cmd, f"{cmd}: {e}")
    return Request(cid, cmd, c, args)


def execute(surface: Commands, req: Request) -> Outcome:
    """Run a parsed command on `surface`; never raises (any failure is a failed Outcome).

    ``stop`` only answers here: the agent's loop ends the session.
    """
    c, args, cmd = req.command, req.args, req.name
    if c is None or isinstance(args, str):
        return Outcome(False, str(args))
    try:
        out = c.call(surface, args)
        if not isinstance(out, Outcome):
            return Outcome(False, f"{cmd}: no outcome")
        return out
    except (ValueError, TypeError) as e:
        return Outcome(False, f"{cmd}: {e}")
    except Exception as e:  # OverflowError, RecursionError, anything: the loop goes on
        return Outcome(False, f"{cmd} failed: {type(e).__name__}: {str(e)[:200]}")


def run_command(surface: Commands, msg: Any) -> tuple[Any, str, Outcome]:
    """Check and run one command map: (its id, its name, the outcome); never raises."""
    req = parse(msg)
    return req.id, req.name, execute(surface, req)


class AgentLoop:
    """The agent's protocol loop on a started session: commands in, acks out, heartbeats.

    One thread reads `fd_in` (stdin) through `Intake` and checks each map once
    (`parse`); a ``stop`` is run at once, out of band (a command that hangs, a
    model reload, must not hold it), the others wait in a queue of
    `COMMAND_QUEUE` and run one at a time, in order, on a second thread: acks
    keep the commands' order. Each ack is an ``ack`` Event written and flushed at
    once. `beat` (called by the headless wait every 0.2 s) sends the `stream`
    a ``heartbeat`` Event each `HEARTBEAT_S` s, straight to the stream (not to
    the bus or a local copy). `end(reason)` is how the loop ends the run:
    ``stop command``, ``stdin closed``, ``the consumer went away``.
    """

    def __init__(
        self,
        surface: ControlSurface,
        stream: RecordingWriter,
        end: Callable[[str], None],
        stop: threading.Event,
        fd_in: int = 0,
    ) -> None:
        self.s = surface
        self.stream = stream
        self.end = end
        self.stop = stop
        self.fd_in = fd_in
        self.commands: queue.Queue[Request] = queue.Queue(COMMAND_QUEUE)
        self._beat = 0.0

    def start(self) -> None:
        """The reading and the running threads (daemons: the run's end is theirs)."""
        threading.Thread(target=self._read, name="agent-in", daemon=True).start()
        threading.Thread(target=self._run, name="agent-commands", daemon=True).start()

    def ack(self, req: Request, out: Outcome) -> None:
        """The ack after the command's own Events, written and flushed now (not in 0.5 s)."""
        self.s.emit_event("ack", id=req.id, cmd=req.name, ok=out.ok, message=out.message)
        self.s.flush(0.5)
        self.stream.flush_soon()

    def _read(self) -> None:
        intake = Intake()  # one set of limits for the whole session, also after a refusal
        for chunk in chunks(functools.partial(os.read, self.fd_in), 65536):
            # Invalid input is answered once a read, not once an object: 2 MB of zero
            # bytes is 2 million msgpack integers, and must not become 2 million acks.
            maps, said = intake.feed(chunk)
            if self._take(maps, said) or self.stop.is_set():
                return
        self.end("stdin closed")

    def _take(self, maps: list[dict[Any, Any]], said: list[str]) -> bool:
        """Queue the commands of one read (a stop runs now); True once stopped."""
        refused = 0
        for msg in maps:
            req = parse(msg)
            if req.name == "stop":  # answered now, also when refused
                self.ack(req, execute(self.s, req))
                if req.is_stop:
                    self.end("stop command")
                    return True
                continue
            try:
                self.commands.put_nowait(req)
            except queue.Full:
                refused += 1
        if refused:
            said.append(f"{refused} commands refused: {COMMAND_QUEUE} are waiting")
        if said:
            self.ack(Request(None, "?", None, ""), Outcome(False, "; ".join(said)))
        return False

    def _run(self) -> None:
        """One command at a time, in order (a knob may reload the model)."""
        while not self.stop.is_set():
            try:
                req = self.commands.get(timeout=0.2)
            except queue.Empty:
                continue
            out = execute(self.s, req)
            try:
                self.ack(req, out)
            except Exception as e:  # never the end of the loop
                print(f"anubis: agent: cannot acknowledge {req.name}: {e}", file=sys.stderr)

    def beat(self) -> None:
        """The end of a consumer that went away, or a heartbeat when one is due."""
        if self.stream.error:
            self.end("the consumer went away")
            return
        now = time.monotonic()
        if now - self._beat >= HEARTBEAT_S:
            # Straight to the stream (not the bus, not the copy): a link that carries
            # nothing for 2 s is stalled, whatever the sampling rate.
            self._beat = now
            self.stream.submit(Event(self.s.now_ns(), "heartbeat", {}))
