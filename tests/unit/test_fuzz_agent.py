"""Hostile agent command streams: structure-aware, as test_fuzz_recordings does for recordings.

Streams are built from command maps a client could send (every command,
right and wrong arguments, unknown keys, hostile ids, deep values, values
the recording cannot hold) mixed with non-map values and raw bytes, cut
into reads at random places. Through the agent's own `Intake` and
`run_command` (on a session whose methods may raise anything), nothing ever
raises; each read gives at most one complaint; every acknowledgement packs
with the recording's packer; a command only reaches the session with exactly
its arguments, checked; and the input limits hold to the end of the stream.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_tui.recording.format import packer
from anubis_tui.session.agent import COMMANDS, MAX_MAP_LEN, Intake, parse, run_command
from anubis_tui.session.core import Outcome

EXAMPLES = 300

hostile_int = st.sampled_from([0, 1, -1, 2, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)]) | st.integers(
    -(2**63), 2**64 - 1
)
hostile_scalar = (
    st.none()
    | st.booleans()
    | hostile_int
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
hostile_value = st.recursive(
    hostile_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = [*COMMANDS, "stop", "bogus", "", "record_stop", "knob"]
ARG_KEYS = sorted({k for c in COMMANDS.values() for k in c.args} | {"colour", "id", "cmd"})


@st.composite
def deep(draw: st.DrawFn) -> Any:
    v: Any = draw(hostile_scalar)
    for _ in range(draw(st.integers(5, 1000))):
        v = [v] if draw(st.booleans()) else {"k": v}
    return v


@st.composite
def command(draw: st.DrawFn) -> dict[Any, Any]:
    name = draw(st.sampled_from(NAMES))
    msg: dict[Any, Any] = {"cmd": name}
    if draw(st.booleans()):
        msg["id"] = draw(hostile_value)
    keys = draw(st.lists(st.sampled_from(ARG_KEYS), max_size=3, unique=True))
    for k in [*COMMANDS.get(name, COMMANDS["pause"]).args, *keys]:
        if draw(st.integers(0, 4)) == 0:
            continue
        msg[k] = draw(hostile_value | deep() | st.sampled_from([1, -1, 10.0, "py-spy", "threads"]))
    if draw(st.integers(0, 9)) == 0:
        msg["cmd"] = draw(hostile_value)
    return msg


def packable(v: Any) -> bytes | None:
    try:
        return msgpack.packb(v, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None


@st.composite
def stream(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            data = packable(draw(command()))
            parts.append(data if data is not None else b"\xc1")
        elif kind == 6:
            parts.append(b"\0" * draw(st.integers(1, 5000)))  # zeros are msgpack integers
        elif kind == 7:
            parts.append(draw(st.binary(max_size=64)))
        elif kind == 8:  # a map over the limit, then more input
            big = {f"k{i}": i for i in range(MAX_MAP_LEN + draw(st.integers(1, 50)))}
            parts.append(msgpack.packb({"cmd": "marker", **big}))
        else:
            parts.append(packable(draw(hostile_value)) or b"")
    return b"".join(parts)


class Stub:
    """The control surface, with methods that may raise what a real one once did."""

    def __init__(self, raises: BaseException | None) -> None:
        self.raises = raises
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any) -> Outcome:
            self.calls.append((name, args))
            if self.raises is not None:
                raise self.raises
            return Outcome(True, name)

        return method


RAISES = st.sampled_from(
    [None, OverflowError("cannot convert float infinity to integer"), RecursionError(),
     ValueError("bad"), TypeError("bad"), KeyError("x"), ZeroDivisionError(), OSError(5, "EIO")]
)  # fmt: skip


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=stream(), cuts=st.lists(st.integers(1, 4096), max_size=6), raises=RAISES)
def test_hostile_command_streams_are_failed_acks_and_the_loop_goes_on(data, cuts, raises):
    intake, session = Intake(), Stub(raises)
    pk = packer()
    pos, reads = 0, []
    for c in cuts:
        reads.append(data[pos : pos + c])
        pos += c
    reads.append(data[pos:])
    for chunk in reads:
        maps, said = intake.feed(chunk)
        assert len(said) <= 1  # one complaint a read, however many bad values were in it
        for msg in maps:
            assert isinstance(msg, dict)
            cid, cmd, out = run_command(session, msg)  # never raises
            assert isinstance(out, Outcome) and isinstance(out.message, str)
            assert cid is None or (isinstance(cid, int | str) and not isinstance(cid, bool))
            ack = {"id": cid, "cmd": cmd, "ok": out.ok, "message": out.message}
            pk.pack(ack)  # the writer can always write the acknowledgement
            if out.ok:
                _, _, c, args = parse(msg)
                assert c is not None and isinstance(args, dict)
                assert set(msg) - {"id", "cmd"} <= set(c.args)  # no unknown key got through
                pk.pack(args)  # what reaches the session, and its command Event, packs
        assert all(len(m) <= MAX_MAP_LEN for m in maps)  # the limits held throughout
    # and still hold at the end, whatever came before (a half value may swallow some input)
    over = msgpack.packb({"id": 1, "cmd": "marker", **{f"k{i}": i for i in range(MAX_MAP_LEN + 1)}})
    for _ in range(3):
        maps, said = intake.feed(over)
        assert all(len(m) <= MAX_MAP_LEN for m in maps)


def test_the_limits_hold_after_a_refusal():
    over = msgpack.packb({"cmd": "marker", **{f"k{i}": i for i in range(MAX_MAP_LEN + 1)}})
    intake = Intake()
    for junk in (over, b"\xc1", b"\0" * 1000, over):
        intake.feed(junk)
    maps, said = intake.feed(over)
    assert maps == [] and "max_map_len" in said[0]
    maps, said = intake.feed(msgpack.packb({"id": 2, "cmd": "marker"}))
    assert maps == [{"id": 2, "cmd": "marker"}] and said == []


def test_a_command_that_raises_deep_in_the_session_is_a_failed_ack():
    for exc in (OverflowError("int too large"), RecursionError("deep"), RuntimeError("x")):
        cid, cmd, out = run_command(
            Stub(exc), {"id": 7, "cmd": "knob", "name": "threads", "value": 10**300 // 10**290}
        )
        assert (cid, cmd, out.ok) == (7, "knob", False)
        assert type(exc).__name__ in out.message


def test_every_command_refuses_a_key_it_does_not_take():
    for name, c in COMMANDS.items():
        msg: dict[str, Any] = {"id": 1, "cmd": name, "surplus": 1}
        for k, a in c.args.items():
            msg[k] = {"number": 10.0, "int": 1, "step": 1, "text": "x", "scalar": 1}[a.kind]
        out = run_command(Stub(None), msg)[2]
        assert not out.ok and "unknown key surplus" in out.message, (name, out)
        del msg["surplus"]
        assert run_command(Stub(None), msg)[2].ok, name
