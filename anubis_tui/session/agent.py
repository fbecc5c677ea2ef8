"""The agent protocol: control-surface commands in as msgpack maps, acknowledged as Events.

Records go out in exactly the recording format (a Header, then records, a
Footer at the end). Commands come in as msgpack maps ``{"id": N, "cmd":
NAME, ...arguments}``; each is answered by an ``ack`` Event ``{id, cmd, ok,
message}`` in the same stream, after the Events the command itself caused.
The commands are the session's methods and nothing else:

=================  =============================================
``pause``          ``resume``, ``toggle_pause``
``rate``           ``hz``: the sampling rate
``rate_step``      ``direction``: ±1 on the ladder of rates
``marker``         ``label``
``profiler``       ``name``: py-spy or scalene on/off
``profiler_rate``  ``step``: ±1
``profiler_plain`` profilers off, the worker plain
``knob``           ``name``, ``value``
``knob_step``      ``name``, ``direction``
``record``         ``path``: start recording a local copy
``record_stop``
``stop``           end the session (a Footer closes the stream)
=================  =============================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anubis_tui.session.core import Outcome, Session

MAX_COMMAND_BYTES = 1 << 16


def _num(msg: dict[str, Any], key: str) -> float:
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key} must be a number")
    return float(v)


def _int(msg: dict[str, Any], key: str) -> int:
    v = msg.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} must be an integer")
    return v


def _str(msg: dict[str, Any], key: str, default: str | None = None) -> str:
    v = msg.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string")
    return v


COMMANDS: dict[str, Callable[[Session, dict[str, Any]], Outcome]] = {
    "pause": lambda s, m: s.pause(),
    "resume": lambda s, m: s.resume(),
    "toggle_pause": lambda s, m: s.toggle_pause(),
    "rate": lambda s, m: s.set_rate(_num(m, "hz")),
    "rate_step": lambda s, m: s.step_rate(_int(m, "direction")),
    "marker": lambda s, m: s.marker(_str(m, "label", "")),
    "profiler": lambda s, m: s.profiler_toggle(_str(m, "name")),
    "profiler_rate": lambda s, m: s.profiler_step_rate(_int(m, "step")),
    "profiler_plain": lambda s, m: s.profiler_plain(),
    "knob": lambda s, m: s.set_knob(_str(m, "name"), m.get("value")),
    "knob_step": lambda s, m: s.knob_step(_str(m, "name"), _int(m, "direction")),
    "record": lambda s, m: s.start_recording(_str(m, "path")),
    "record_stop": lambda s, m: s.stop_recording(),
}


def run_command(session: Session, msg: Any) -> tuple[Any, str, Outcome]:
    """Run one command map on `session`: (its id, its name, the outcome); never raises."""
    if not isinstance(msg, dict):
        return None, "?", Outcome(False, "a command is a map with id and cmd")
    cid = msg.get("id")
    if not (cid is None or (isinstance(cid, int | str) and not isinstance(cid, bool))):
        cid = None
    cmd = msg.get("cmd")
    if not isinstance(cmd, str):
        return cid, "?", Outcome(False, "cmd must be a string")
    call = COMMANDS.get(cmd)
    if call is None:
        names = ", ".join(sorted([*COMMANDS, "stop"]))
        return cid, cmd[:40], Outcome(False, f"unknown command {cmd[:40]!r}; commands: {names}")
    try:
        return cid, cmd, call(session, msg)
    except (ValueError, TypeError) as e:
        return cid, cmd, Outcome(False, f"{cmd}: {e}")
