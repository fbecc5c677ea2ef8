"""The record types of a session: the in-memory types are the on-disk types.

Every record has a plain form (`to_plain`) made only of msgpack-native values
(lists, dicts with str keys, str, int, float, bool, None) and is rebuilt from
it with `record_from_plain`. The plain form of a record is a list whose first
item is the record's type code, so a stream of records needs no framing
beyond msgpack's own.

Times (`t`) are integer nanoseconds since the session start on the
CLOCK_MONOTONIC timeline; the Header carries the monotonic and UTC wall time
of that start so other processes' monotonic stamps can be aligned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from anubis_tui.errors import AnubisError

Value = float | int | None
"""A channel reading in SI units; None means no reading in that sample."""


class RecordType(IntEnum):
    """Type code: the first item of every record's plain form (docs/recording-format.md)."""

    HEADER = 0
    SAMPLE = 1
    TOKENS = 2
    EVENT = 3
    FOOTER = 4
    CHANNELS = 5


KINDS = (
    "power",
    "energy",
    "temperature",
    "frequency",
    "utilization",
    "throttle",
    "memory",
    "voltage",
    "current",
    "rate",
    "duration",
    "count",
)
"""Channel kinds. Units: W, J, °C, Hz, ratio (0..1), flags, bytes, V, A, Hz, s, events."""

PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature": (-55.0, 200.0),
    "power": (-1.0, 10_000.0),
    "frequency": (0.0, 50e9),
    "voltage": (-1.0, 100.0),
    "current": (-1000.0, 1000.0),
}
"""Readings outside these ranges (SI units) are no reading.

Temperature: −55..+150 °C is the range of digital sensors (LM75/TMP-class,
the kernel's hwmon docs), junctions throttle and shut down below 130 °C, so
nothing real reads past 200 °C; −273.15 °C (an emulated NVMe) and
3,892,313 °C (a nct6793 channel, netdata#23673) are not readings. Power:
no single meter here draws past 10 kW, and a rail may read a little below
zero from shunt offset. Frequency: memory clocks reported as effective data
rates stay below 50 GHz. Voltage and current: board inputs are at most 60 V
(USB PD EPR 48 V, 54 V server rails); batteries may report a negative current.
"""


def plausible(kind: str, value: float | None) -> bool:
    """Whether `value` (SI units) can be a reading of a channel of `kind`.

    Kinds without a range (energy, utilization, flags …) are always plausible
    here; NaN and infinities never are.
    """
    if value is None:
        return True
    if value != value or value in (float("inf"), float("-inf")):
        return False
    bounds = PLAUSIBLE.get(kind)
    return bounds is None or bounds[0] <= value <= bounds[1]


METHODS = ("counter", "instant", "derived", "estimated")
"""Plus ``average:<window>`` (e.g. ``average:1s``) for sensor-side averaging."""

PHASES = ("prompt", "decode")


def valid_method(method: str) -> bool:
    """Whether `method` is one of `METHODS` or ``average:<window>`` with a non-empty window."""
    return method in METHODS or (method.startswith("average:") and len(method) > 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """One measured quantity.

    `meta` holds what only some channels have: ``flags`` (bit → canonical
    throttle name, for `throttle` channels), ``sticky`` (bit → name of an
    occurred-since-boot bit), ``critical_c``/``trip_c`` for temperatures,
    ``max_hz`` for clocks, ``note`` for scope caveats.
    """

    id: str
    label: str
    source: str
    kind: str
    unit: str
    scope: str
    method: str
    update_period_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"channel {self.id}: unknown kind {self.kind!r}")
        if not valid_method(self.method):
            raise ValueError(f"channel {self.id}: unknown method {self.method!r}")

    def to_plain(self) -> dict[str, Any]:
        """The channel as a str-keyed map of msgpack-native values.

        `meta`'s ``flags``/``sticky`` bit keys become decimal strings; `from_plain`
        turns them back into ints.
        """
        return {
            "id": self.id,
            "label": self.label,
            "source": self.source,
            "kind": self.kind,
            "unit": self.unit,
            "scope": self.scope,
            "method": self.method,
            "update_period_s": self.update_period_s,
            "meta": _plain_meta(self.meta),
        }

    @classmethod
    def from_plain(cls, d: dict[str, Any]) -> Channel:
        """A channel from its plain form; RecordError on anything a writer would not make."""
        if not isinstance(d, dict):
            raise RecordError("a channel must be a map")
        text = {}
        for k in ("id", "label", "source", "kind", "unit", "scope", "method"):
            v = d.get(k)
            if not isinstance(v, str) or len(v) > MAX_NAME:
                raise RecordError(f"channel {k} must be a string of at most {MAX_NAME} characters")
            text[k] = v
        period = d.get("update_period_s")
        if isinstance(period, bool) or not isinstance(period, int | float):
            raise RecordError("channel update_period_s must be a number")
        if not (math.isfinite(period) and period >= 0):
            raise RecordError("channel update_period_s must be finite and ≥ 0")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise RecordError("channel meta must be a map")
        try:
            return cls(
                id=text["id"],
                label=text["label"],
                source=text["source"],
                kind=text["kind"],
                unit=text["unit"],
                scope=text["scope"],
                method=text["method"],
                update_period_s=float(period),
                meta=_meta_from_plain(meta),
            )
        except ValueError as e:
            raise RecordError(str(e)) from None


MAX_NAME = 4096
"""The longest channel id, label, unit, scope or method a reader takes."""


def _plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    # msgpack maps may have int keys, but str keys keep the format JSON-friendly.
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k in ("flags", "sticky"):
            out[k] = {str(bit): name for bit, name in v.items()}
        else:
            out[k] = v
    return out


def _meta_from_plain(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k in ("flags", "sticky"):
            if not isinstance(v, dict):
                raise RecordError(f"channel meta {k} must be a map of bit to name")
            flags: dict[int, str] = {}
            for bit, name in v.items():
                try:
                    b = int(bit)
                except (TypeError, ValueError):
                    raise RecordError(f"channel meta {k}: {bit!r} is not a bit") from None
                if not (0 < b < 2**64) or not isinstance(name, str):
                    raise RecordError(f"channel meta {k}: bad bit {bit!r} or name")
                flags[b] = name
            out[k] = flags
        elif k in CHANNEL_META and (v is None or not _TYPES[CHANNEL_META[k]](v)):
            continue  # a known key of the wrong type: as if the channel had none
        else:
            out[k] = v
    return out


def decode_flags(channel: Channel, mask: int | None) -> tuple[list[str], list[str]]:
    """Canonical names of the bits set in `mask`: (active now, occurred since boot)."""
    if mask is None:
        return [], []
    mask = int(mask)
    active: list[str] = []
    occurred: list[str] = []
    for bit, name in channel.meta.get("flags", {}).items():
        if mask & bit and name not in active:
            active.append(name)
    for bit, name in channel.meta.get("sticky", {}).items():
        if mask & bit and name not in occurred:
            occurred.append(name)
    known = 0
    for bit in (*channel.meta.get("flags", {}), *channel.meta.get("sticky", {})):
        known |= bit
    if mask & ~known and "throttled" not in active:
        # Bits we cannot name still mean the clocks are held back.
        active.append("throttled")
    return active, occurred


@dataclass(frozen=True, slots=True)
class Header:
    """The first record of a recording: format name, schema (major, minor), channel table, identity.

    `created_utc` is ISO 8601 UTC with milliseconds; `t0_monotonic_ns` is
    CLOCK_MONOTONIC (ns) at the session start, the zero of every record's `t`;
    `host`, `model` and `config` are free maps (see `recording.format.make_header`
    and analysis/identity.py for the keys anubis writes).
    """

    format: str
    schema: tuple[int, int]
    created_utc: str
    t0_monotonic_ns: int
    host: dict[str, Any]
    app_version: str
    channels: list[Channel]
    model: dict[str, Any]
    config: dict[str, Any]

    def to_plain(self) -> list[Any]:
        """``[RecordType.HEADER, {format, schema, created_utc, t0_monotonic_ns, host, app_version,
        channels, model, config}]``.
        """
        return [
            RecordType.HEADER,
            {
                "format": self.format,
                "schema": list(self.schema),
                "created_utc": self.created_utc,
                "t0_monotonic_ns": self.t0_monotonic_ns,
                "host": self.host,
                "app_version": self.app_version,
                "channels": [c.to_plain() for c in self.channels],
                "model": self.model,
                "config": self.config,
            },
        ]


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick of the sampler at `t` (ns since the session start).

    `values` has one entry per channel of the table so far (Header plus every
    ChannelsAdded, in order), each in its channel's `unit` (SI) or None for no
    reading.
    """

    t: int
    values: list[Value]

    def to_plain(self) -> list[Any]:
        """``[RecordType.SAMPLE, t, values]``: `t` in ns, `values` one per channel (SI units or
        None).
        """
        return [RecordType.SAMPLE, self.t, self.values]


@dataclass(frozen=True, slots=True)
class Tokens:
    """`count` tokens of `phase` that completed in the batch ending at `t`.

    `t_first` is the stamp of the first of them, so rates inside a batch are
    exact; `request` is the request id.
    """

    t: int
    count: int
    phase: str
    request: int
    t_first: int

    def to_plain(self) -> list[Any]:
        """``[RecordType.TOKENS, t, count, phase, request, t_first]`` (times in ns)."""
        return [RecordType.TOKENS, self.t, self.count, self.phase, self.request, self.t_first]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at `t` (ns since the session start).

    `kind` names it (``request_start``, ``knob``, ``paused``, … as listed in
    docs/recording-format.md); `payload` holds its msgpack-native details.
    """

    t: int
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)

    def to_plain(self) -> list[Any]:
        """``[RecordType.EVENT, t, kind, payload]``."""
        return [RecordType.EVENT, self.t, self.kind, self.payload]


@dataclass(frozen=True, slots=True)
class Footer:
    """The last record of a cleanly closed recording: `t` (ns) and the session's `totals` map.

    A recording without one was cut short; readers recover what precedes the cut.
    """

    t: int
    totals: dict[str, Any]

    def to_plain(self) -> list[Any]:
        """``[RecordType.FOOTER, t, totals]``."""
        return [RecordType.FOOTER, self.t, self.totals]


@dataclass(frozen=True, slots=True)
class ChannelsAdded:
    """Extends the channel table mid-session (a sensor appeared)."""

    t: int
    channels: list[Channel]

    def to_plain(self) -> list[Any]:
        """``[RecordType.CHANNELS, t, [channel maps]]``; the new channels' columns follow the
        existing ones.
        """
        return [RecordType.CHANNELS, self.t, [c.to_plain() for c in self.channels]]


Record = Header | Sample | Tokens | Event | Footer | ChannelsAdded


class ChannelIndex:
    """The session's channels in the order of `Sample.values`: the Header's, then each
    `ChannelsAdded` record's, appended (docs/recording-format.md). The one index a sink
    keeps, so that every sink finds a channel's value the same way.

    `positions` maps a channel id to its place in `Sample.values` (a repeated id: the
    last one). Not thread-safe: its owner locks.
    """

    def __init__(self, channels: Iterable[Channel] = ()) -> None:
        self.channels: list[Channel] = []
        self.positions: dict[str, int] = {}
        self.add(channels)

    def __len__(self) -> int:
        return len(self.channels)

    def add(self, channels: Iterable[Channel]) -> range:
        """Append `channels`; the positions they take in `Sample.values`."""
        start = len(self.channels)
        for c in channels:
            self.positions[c.id] = len(self.channels)
            self.channels.append(c)
        return range(start, len(self.channels))

    def consume(self, rec: Record) -> range:
        """The positions a Header or ChannelsAdded record adds; an empty range for others."""
        if isinstance(rec, Header | ChannelsAdded):
            return self.add(rec.channels)
        return range(0)

    def position(self, channel_id: str) -> int | None:
        """Where channel `channel_id` is in `Sample.values`, or None if no such channel."""
        return self.positions.get(channel_id)

    @staticmethod
    def value(values: list[Value], i: int | None) -> float | None:
        """The finite reading at position `i` of a Sample's values (in the channel's SI
        unit), or None: no such position, no reading, or NaN/infinity."""
        if i is None or not 0 <= i < len(values):
            return None
        v = values[i]
        if isinstance(v, int | float) and math.isfinite(v):
            return float(v)
        return None


class RecordError(AnubisError, ValueError):
    """A plain value that is not a valid record."""


def record_from_plain(obj: Any) -> Record:
    """Rebuild a record from its plain form; RecordError if it is not one."""
    if not isinstance(obj, list | tuple) or not obj:
        raise RecordError("not a record: expected a non-empty array")
    code = obj[0]
    try:
        if code == RecordType.SAMPLE:
            _, t, values = obj
            if not isinstance(values, list | tuple):
                raise RecordError("sample values must be an array")
            # One pass in C over the types; non-finite floats are 'no reading' to every reader.
            if not set(map(type, values)) <= _VALUE_TYPES:
                raise RecordError("sample value must be a number or nil")
            return Sample(_int(t), values if isinstance(values, list) else list(values))
        if code == RecordType.TOKENS:
            _, t, count, phase, request, t_first = obj
            if phase not in PHASES:
                raise RecordError(f"unknown token phase {phase!r}")
            if (  # the common case in one test (a day holds millions); `_int` names a bad one
                type(t) is type(count) is type(request) is type(t_first) is int
                and 0 <= t <= MAX_T
                and 0 <= count <= MAX_COUNT
                and 0 <= request <= MAX_T
                and 0 <= t_first <= MAX_T
            ):
                return Tokens(t, count, phase, request, t_first)
            return Tokens(_int(t), _int(count, MAX_COUNT), phase, _int(request), _int(t_first))
        if code == RecordType.EVENT:
            _, t, kind, payload = obj
            if not isinstance(kind, str) or not isinstance(payload, dict):
                raise RecordError("event needs a kind string and a payload map")
            kind, payload = check_event(kind, clean_payload(payload))
            return Event(_int(t), kind, payload)
        if code == RecordType.HEADER:
            _, d = obj
            if not isinstance(d, dict):
                raise RecordError("header body must be a map")
            schema = d["schema"]
            return Header(
                format=str(d["format"]),
                schema=(_int(schema[0]), _int(schema[1])),
                created_utc=str(d["created_utc"]),
                t0_monotonic_ns=_int(d["t0_monotonic_ns"]),
                host=dict(d["host"]),
                app_version=str(d["app_version"]),
                channels=_unique([Channel.from_plain(c) for c in d["channels"]]),
                model=dict(d["model"]),
                config=dict(d["config"]),
            )
        if code == RecordType.FOOTER:
            _, t, totals = obj
            if not isinstance(totals, dict):
                raise RecordError("footer totals must be a map")
            return Footer(_int(t), totals)
        if code == RecordType.CHANNELS:
            _, t, chans = obj
            return ChannelsAdded(_int(t), [Channel.from_plain(c) for c in chans])
    except RecordError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise RecordError(f"malformed record of type {code!r}: {e}") from None
    raise RecordError(f"unknown record type {code!r}")


MAX_T = 2**63 - 1  # ns: a stamp is a signed 64-bit count of nanoseconds
MAX_COUNT = 2**31 - 1  # tokens in one batch


def _int(v: Any, hi: int = MAX_T) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError(f"expected an integer, got {type(v).__name__}")
    if not 0 <= v <= hi:
        raise RecordError(f"integer {v} out of range [0, {hi}]")
    return v


_VALUE_TYPES = {type(None), int, float}


def _unique(chans: list[Channel]) -> list[Channel]:
    ids = [c.id for c in chans]
    if len(set(ids)) != len(ids):
        raise RecordError("the channel table repeats an id")
    return chans


def _num(v: Any, lo: float = 0.0, hi: float = 2**63 - 1) -> bool:
    return (
        not isinstance(v, bool)
        and isinstance(v, int | float)
        and math.isfinite(v)
        and lo <= v <= hi
    )


# What analysis reads from event payloads, and the type each must have. A field
# that is not so is dropped at the edge (the event stays): analysis never meets it.
_PAYLOAD_NUMBERS: dict[str, tuple[float, float]] = {  # field → (lowest, highest)
    "request": (0, 2**63 - 1),
    "generated": (0, 2**31 - 1),
    "prompt_tokens": (0, 2**31 - 1),
    "ttft_ns": (0, 2**63 - 1),
    "decode_ns": (0, 2**63 - 1),
    "samples": (0, 2**63 - 1),
    "previous_samples": (0, 2**63 - 1),
    "snapshots": (0, 2**63 - 1),
    "rate_hz": (0, 1e9),
    "sampler_hz": (0, 1e9),
    "interval_s": (0, 1e9),
    "load_s": (0, 1e9),
    "pid": (0, 2**31 - 1),
    "returncode": (-255, 255),
}
_PAYLOAD_TEXT = ("profiler", "mode", "ready", "reason", "name", "label", "signal", "stop")


# Field types of the payload schemas below, each a check of one value.
_SCALARS = (type(None), bool, int, float, str)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, _SCALARS) and not (isinstance(v, float) and not math.isfinite(v))


_TYPES: dict[str, Any] = {
    "ns": lambda v: _num(v, 0, 2**63 - 1) and isinstance(v, int),
    "count": lambda v: _num(v, 0, 2**31 - 1) and isinstance(v, int),
    "int": lambda v: _num(v, -(2**63), 2**63 - 1) and isinstance(v, int),
    "num": lambda v: _num(v, -1e18, 1e18),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "scalar": _is_scalar,
    "map": lambda v: isinstance(v, dict),
    "scalar_map": lambda v: isinstance(v, dict) and all(map(_is_scalar, v.values())),
    "str_list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list": lambda v: isinstance(v, list),
}

EVENT_SCHEMA: dict[str, dict[str, str]] = {
    # kind → field → type; a type ending in "!" is required. What the writer makes (the
    # worker, the session, the profiler controller, the sweep) and analysis reads.
    "request_start": {"request": "ns!"},
    "request_end": {
        "request": "ns!",
        "generated": "count!",
        "prompt_tokens": "count",
        "ttft_ns": "ns",
        "decode_ns": "ns",
        "stop": "str",
        "llama": "scalar_map",
    },
    "model_loaded": {
        "load_s": "num",
        "threads": "count",
        "threads_batch": "count",
        "gpu_layers": "int",
        "gpu_offload": "bool",
        "n_batch": "count",
        "kv_type": "str",
        "flash_attn": "bool",
        "model": "str",
        "system_info": "str",
        "pid": "count",
        "under_scalene": "bool",
    },
    "worker_started": {"pid": "count"},
    "worker_died": {"returncode": "int", "signal": "str", "log_tail": "str_list"},
    "error": {"stage": "str", "reason": "str"},
    "profiler_on": {
        "profiler": "str!",
        "rate_hz": "num",
        "interval_s": "num",
        "mode": "str",
        "artifact": "str",
        "pid": "count",
    },
    "profiler_off": {
        "profiler": "str",
        "samples": "ns",
        "artifact": "str",
        "ready": "str",
        "reason": "str",
    },
    "profiler_rate": {
        "profiler": "str!",
        "rate_hz": "num",
        "interval_s": "num",
        "mode": "str",
        "artifact": "str",
        "previous_samples": "ns",
        "previous_artifact": "str",
    },
    "profiler_ready": {"profiler": "str", "rate_hz": "num"},
    "profiler_frames": {
        "profiler": "str",
        "frames": "list",
        "samples": "ns",
        "final": "bool",
        "source": "str",
    },
    "profiler_error": {"reason": "str"},
    "knob": {
        "name": "str!",
        "value": "scalar",
        "previous": "scalar",
        "reload": "bool",
        "reverted": "bool",
        "reason": "str",
        "threads_batch": "count",
    },
    "knobs": {"values": "scalar_map!", "state": "scalar_map"},
    "command": {"cmd": "str!", "ok": "bool!", "message": "str"},
    "ack": {"cmd": "str", "ok": "bool", "message": "str"},
    "marker": {"label": "str"},
    "rate": {"sampler_hz": "num"},
    "sweep": {
        "treatments": "str_list",
        "repeats": "count",
        "seed": "int",
        "segment_s": "num",
        "warmup_s": "num",
        "cooldown_s": "num",
        "order": "list",
    },
    "sweep_step": {
        "index": "count",
        "repeat": "count",
        "role": "str",
        "treatment": "str",
        "chunk": "scalar",
    },
    "warmup": {
        "seconds": "num",
        "reached": "bool",
        "reason": "str",
        "temp_c": "num",
        "temp_slope_c_per_min": "num",
        "temp_sd_c": "num",
        "power_cv": "num",
    },
    "cooldown": {"waited_s": "num", "reached": "bool", "temp_c": "num", "target_c": "num"},
    "device_restored": {"lines": "str_list", "after": "str"},
    "threads": {"n": "count", "threads_batch": "count"},
    "remote_ack": {"latency_ms": "num"},
    "quality": {  # inference/quality.py: perplexity of a model and KV type (issue 26)
        "ppl": "num!",
        "ppl_se": "num",
        "nll_mean": "num",
        "nll_se": "num",
        "ci95": "list",
        "tokens": "count",
        "chunks": "count",
        "n_ctx": "count",
        "kv_type": "str!",
        "offload": "bool",
        "flash_attn": "bool",
        "model": "str!",
        "model_sha256": "str",
        "quantization": "str",
        "variant": "str",
        "text": "str",
        "text_sha256": "str",
        "tokens_sha256": "str",
        "llama_cpp": "str",
        "compute_s": "num",
        "cached": "bool",
        "nll": "list",
    },
}
"""The payload schema of every Event kind the writer makes: field → type ("!": required).

A field of the wrong type is dropped (the Event stays); an Event that lacks a
required field, or has it of the wrong type, becomes an ``invalid_event``
Event naming its kind and why, which no analysis reads. Kinds not listed
(plugins', later versions') keep the generic checks of `clean_payload`.
"""

INVALID_EVENT = "invalid_event"

CHANNEL_META: dict[str, str] = {
    # What the sources write into Channel.meta, and the type each must have
    # ("flags"/"sticky" are checked apart: maps of bit → name).
    "note": "str",
    "integration": "str",
    "within": "str",
    "domain": "str",
    "energy_channel": "str",
    "chip": "str",
    "wrap_range": "str",
    "role": "str",
    "rail": "str",
    "model": "str",
    "basis": "str",
    "critical_c": "num",
    "trip_c": "num",
    "max_c": "num",
    "max_hz": "num",
    "read_every_s": "num",
    "tdp_w": "num",
    "cpus": "num",
    "total": "num",
    "module_rail": "bool",
    "is_limit": "bool",
    "parts": "str_list",
}
"""Channel meta keys and their types: one of the wrong type is dropped from the channel."""


def check_event(kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An Event's kind and payload checked against `EVENT_SCHEMA` (see there for the rules)."""
    schema = EVENT_SCHEMA.get(kind)
    if schema is None:
        return kind, payload
    for name, typ in schema.items():
        required = typ.endswith("!")
        ok = _TYPES[typ.rstrip("!")]
        if name not in payload or payload[name] is None:
            if required:
                return INVALID_EVENT, {"kind": kind, "reason": f"no {name}"}
            continue
        if not ok(payload[name]):
            if required:
                why = f"{name} is a {type(payload[name]).__name__}, not {typ.rstrip('!')}"
                return INVALID_EVENT, {"kind": kind, "reason": why}
            payload = {k: v for k, v in payload.items() if k != name}
    return kind, payload


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with every field analysis reads checked; bad ones dropped."""
    out = dict(payload)
    for k, (lo, hi) in _PAYLOAD_NUMBERS.items():
        if k in out and out[k] is not None and not _num(out[k], lo, hi):
            del out[k]
    for k in _PAYLOAD_TEXT:
        if k in out and out[k] is not None and not isinstance(out[k], str):
            del out[k]
    if "frames" in out:
        frames = out["frames"]
        out["frames"] = (
            [
                f
                for f in frames[:50]
                if isinstance(f, dict)
                and isinstance(f.get("function"), str)
                and isinstance(f.get("where"), str)
                and _num(f.get("share"), 0.0, 1.0)
            ]
            if isinstance(frames, list)
            else []
        )
    return out
