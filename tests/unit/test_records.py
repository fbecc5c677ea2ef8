from __future__ import annotations

import msgpack
import pytest

from anubis_tui.records import (
    Channel,
    ChannelsAdded,
    Event,
    Footer,
    Header,
    RecordError,
    Sample,
    Tokens,
    decode_flags,
    record_from_plain,
)
from anubis_tui.sources.nvml import NVML_FLAGS
from anubis_tui.sources.rpi import RPI_FLAGS, RPI_STICKY

CH = Channel(
    id="gpu0.throttle",
    label="GPU0 reasons",
    source="nvml:0",
    kind="throttle",
    unit="flags",
    scope="gpu",
    method="instant",
    update_period_s=0.25,
    meta={"flags": dict(NVML_FLAGS)},
)


def roundtrip(rec):
    return record_from_plain(msgpack.unpackb(msgpack.packb(rec.to_plain()), strict_map_key=True))


@pytest.mark.parametrize(
    "rec",
    [
        Sample(123, [1.5, None, 7]),
        Tokens(10_000, 12, "decode", 3, 9_000),
        Event(5, "profiler_on", {"profiler": "py-spy", "rate_hz": 100}),
        Footer(99, {"tokens": 10, "clean": True}),
        ChannelsAdded(7, [CH]),
        Header(
            "anubis-recording",
            (1, 0),
            "2026-11-26T22:00:00Z",
            123456789,
            {"hostname": "h"},
            "0.1.0",
            [CH],
            {"path": "m.gguf"},
            {"rate_hz": 10.0},
        ),
    ],
)
def test_every_record_type_survives_msgpack(rec):
    assert roundtrip(rec) == rec


def test_channel_flag_maps_keep_int_bits_through_msgpack():
    back = roundtrip(ChannelsAdded(0, [CH])).channels[0]
    assert back.meta["flags"][0x4] == "power_cap"


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "x",
        [99, 1],
        [1, "t", []],
        [1, 1, ["a"]],
        [2, 1, 1, "middle", 0, 0],
        [3, 1, 5, {}],
        [1, 1, [True]],
        [0, {"schema": [1]}],
    ],
)
def test_malformed_plain_values_raise_record_error(bad):
    with pytest.raises(RecordError):
        record_from_plain(bad)


def test_channel_rejects_unknown_kind_and_method():
    with pytest.raises(ValueError):
        Channel(
            id="x",
            label="x",
            source="s",
            kind="loudness",
            unit="dB",
            scope="gpu",
            method="instant",
            update_period_s=1.0,
        )
    with pytest.raises(ValueError):
        Channel(
            id="x",
            label="x",
            source="s",
            kind="power",
            unit="W",
            scope="gpu",
            method="guess",
            update_period_s=1.0,
        )
    Channel(
        id="x",
        label="x",
        source="s",
        kind="power",
        unit="W",
        scope="gpu",
        method="average:1s",
        update_period_s=1.0,
    )


def test_nvml_reasons_decode_to_canonical_names():
    assert decode_flags(CH, 0x4) == (["power_cap"], [])
    assert decode_flags(CH, 0x1) == (["idle"], [])
    assert decode_flags(CH, 0x60) == (["thermal"], [])  # sw and hw thermal are one name
    assert decode_flags(CH, 0x0) == ([], [])
    assert decode_flags(CH, None) == ([], [])


def test_unknown_bits_still_say_throttled():
    assert decode_flags(CH, 0x1000) == (["throttled"], [])


def test_rpi_sticky_bits_split_into_now_and_since_boot():
    ch = Channel(
        id="rpi.throttled",
        label="fw",
        source="rpi",
        kind="throttle",
        unit="flags",
        scope="soc",
        method="instant",
        update_period_s=2.0,
        meta={"flags": dict(RPI_FLAGS), "sticky": dict(RPI_STICKY)},
    )
    assert decode_flags(ch, 0x50005) == (
        ["under_voltage", "throttled"],
        ["under_voltage", "throttled"],
    )
    assert decode_flags(ch, 0x50000) == ([], ["under_voltage", "throttled"])
    assert decode_flags(ch, 0x80008) == (["soft_temp_limit"], ["soft_temp_limit"])
    assert decode_flags(ch, 0xA0002) == (["freq_capped"], ["freq_capped", "soft_temp_limit"])
