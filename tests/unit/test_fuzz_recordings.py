"""Hostile recordings: valid record shapes with hostile values, and random bytes.

Every one ends in a clean `ReaderError` or in figures; the reader, the report
(text and JSON), the CSV export and the replay fold never raise anything else.
The structure-aware strategy builds records a writer could frame, then puts
in them what a writer never would: 2^64 − 1, negatives, NaN, ±inf, strings
where numbers belong, lists where strings belong, bytes, deep maps.
"""

from __future__ import annotations

import io
import json
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_tui.analysis.export import write_csv
from anubis_tui.analysis.replay import Replay
from anubis_tui.analysis.report import render, report
from anubis_tui.cli.common import jsonable
from anubis_tui.recording.format import FORMAT_NAME, SCHEMA
from anubis_tui.recording.reader import ReaderError, from_records, read_bytes
from anubis_tui.records import RecordType
from anubis_tui.sources.nvml import NVML_FLAGS

EXAMPLES = 2000

hostile_int = (
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    | st.integers(-(2**63), 2**64 - 1)  # what msgpack can frame
)
hostile_float = st.floats(allow_nan=True, allow_infinity=True)
hostile_scalar = (
    st.none()
    | st.booleans()
    | hostile_int
    | hostile_float
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
hostile_value = st.recursive(
    hostile_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
number_or_hostile = st.one_of(hostile_int, hostile_float, hostile_value)

KINDS = ("power", "energy", "temperature", "throttle", "frequency", "utilization")
IDS = ("system.power", "system.energy", "gpu0.temp", "gpu0.throttle", "proc.profiler.cpu", "x")
EVENT_KINDS = (
    "request_start",
    "request_end",
    "profiler_on",
    "profiler_off",
    "profiler_rate",
    "profiler_ready",
    "profiler_frames",
    "paused",
    "resumed",
    "worker_died",
    "marker",
    "rate",
    "knob",
    "worker_restart",
)
PAYLOAD_KEYS = (
    "request",
    "generated",
    "prompt_tokens",
    "ttft_ns",
    "decode_ns",
    "profiler",
    "rate_hz",
    "mode",
    "ready",
    "samples",
    "previous_samples",
    "frames",
    "name",
    "value",
    "sampler_hz",
    "signal",
    "returncode",
)


@st.composite
def channel(draw):
    cid = draw(st.sampled_from(IDS) | hostile_value)
    kind = draw(st.sampled_from(KINDS))
    meta = draw(
        st.sampled_from([{}, {"flags": {str(k): v for k, v in NVML_FLAGS.items()}}])
        | st.dictionaries(st.sampled_from(["flags", "sticky", "is_limit", "reason"]), hostile_value)
    )
    return {
        "id": cid,
        "label": draw(st.text(max_size=5) | hostile_value),
        "source": "s",
        "kind": kind,
        "unit": "W",
        "scope": "gpu",
        "method": draw(st.sampled_from(["instant", "counter", "derived", "estimated"])),
        "update_period_s": draw(st.sampled_from([0.1, 0.0]) | hostile_float),
        "meta": meta,
    }


@st.composite
def recording(draw):
    chans = draw(st.lists(channel(), min_size=0, max_size=5))
    header = [
        RecordType.HEADER,
        {
            "format": FORMAT_NAME,
            "schema": list(SCHEMA),
            "created_utc": draw(st.text(max_size=5) | hostile_value),
            "t0_monotonic_ns": 0,
            "host": draw(st.dictionaries(st.sampled_from(["hostname"]), hostile_value)),
            "app_version": "x",
            "channels": chans,
            "model": draw(st.dictionaries(st.sampled_from(["name", "layers"]), hostile_value)),
            "config": {},
        },
    ]
    recs = [header]
    n = len(chans)
    t = st.integers(0, 60_000_000_000) | hostile_int
    for _ in range(draw(st.integers(0, 40))):
        which = draw(st.sampled_from(["sample", "tokens", "event", "event", "footer", "junk"]))
        if which == "sample":
            vals = draw(
                st.lists(hostile_int | hostile_float | st.none(), min_size=n, max_size=n + 1)
            )
            recs.append([RecordType.SAMPLE, draw(t), vals])
        elif which == "tokens":
            recs.append(
                [
                    RecordType.TOKENS,
                    draw(t),
                    draw(st.integers(0, 64) | hostile_int),
                    draw(st.sampled_from(["decode", "prompt"])),
                    draw(st.integers(0, 5) | hostile_int),
                    draw(t),
                ]
            )
        elif which == "event":
            payload = draw(
                st.dictionaries(st.sampled_from(PAYLOAD_KEYS), number_or_hostile, max_size=5)
            )
            if draw(st.booleans()):
                payload["frames"] = draw(
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "function": hostile_value,
                                "where": hostile_value,
                                "share": number_or_hostile,
                            }
                        ),
                        max_size=3,
                    )
                )
            recs.append([RecordType.EVENT, draw(t), draw(st.sampled_from(EVENT_KINDS)), payload])
        elif which == "footer":
            recs.append(
                [
                    RecordType.FOOTER,
                    draw(t),
                    draw(st.dictionaries(st.text(max_size=4), hostile_value)),
                ]
            )
        else:
            recs.append(draw(hostile_value))
    return b"".join(msgpack.packb(r, use_bin_type=True) for r in recs)


def exercise(data: bytes) -> None:
    try:
        records, recovery = read_bytes(data)
    except ReaderError as e:
        assert str(e) and "\n" not in str(e)
        return
    rec = from_records(records, recovery)
    r = report(rec)
    text = render(r)
    assert "segment" in text
    out = json.dumps(jsonable(r), allow_nan=False)  # strict JSON: no NaN, no bytes
    assert json.loads(out)["duration_s"] is not None
    buf = io.StringIO()
    write_csv(rec, buf)
    rp = Replay(records)
    rp.playing = False
    rp.seek(rp.end_ns)
    snap = rp.state.snapshot()
    for f in snap.segments:
        for v in (f.decode_tps, f.power_w, f.j_per_token):
            assert v is None or math.isfinite(v)


@pytest.mark.timeout(1200)  # about 75 s of CPU; a loaded 2-core runner gives it a quarter
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(recording())
def test_hostile_values_in_valid_records_never_escape_as_exceptions(data):
    exercise(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_a_clean_error(data):
    exercise(data)
