"""`ChannelIndex`: the one channel index the sinks share, and the sinks agreeing through it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.rolling import Rolling
from anubis_tui.recording.reader import load, read_all
from anubis_tui.records import Channel, ChannelIndex, ChannelsAdded, Sample
from anubis_tui.session.sweep import Watch

RECORDING = Path(__file__).resolve().parents[2] / "recordings" / "vm-2core-cpu-gemma270m.msgpack"


def chan(cid: str, kind: str = "power", unit: str = "W") -> Channel:
    return Channel(
        id=cid, label=cid, source="test", kind=kind, unit=unit, scope="system",
        method="instant", update_period_s=0.1,
    )  # fmt: skip


def test_positions_follow_the_header_then_each_channels_added():
    idx = ChannelIndex([chan("a"), chan("system.power")])
    assert idx.consume(Sample(1, [1.0, 2.0])) == range(0)
    added = idx.consume(ChannelsAdded(2, [chan("gpu0.temp", "temperature", "C"), chan("b")]))
    assert added == range(2, 4) and len(idx) == 4
    assert idx.position("system.power") == 1 and idx.position("gpu0.temp") == 2
    assert idx.position("nope") is None


@pytest.mark.parametrize(
    ("values", "i", "want"),
    [
        ([1, 2.5], 1, 2.5),
        ([1, 2.5], 0, 1.0),
        ([1, None], 1, None),
        ([1, math.nan], 1, None),
        ([1, math.inf], 1, None),
        ([1], 1, None),  # a Sample shorter than the table (written before a ChannelsAdded)
        ([1], None, None),  # no such channel
        ([1], -1, None),
    ],
)
def test_value_is_a_finite_reading_or_none(values, i, want):
    assert ChannelIndex.value(values, i) == want


def test_the_sinks_read_the_same_channels_from_a_real_recording():
    records, _ = read_all(RECORDING)
    rec = load(RECORDING)
    header = records[0]
    watch, rolling, live = Watch(header.channels), Rolling(), LiveState()
    for r in records:
        if r is not header:
            watch(r)
        rolling.consume(r)
        live.consume(r)
    power = rec.column("system.power")
    energy = rec.column("system.energy")
    assert power is not None and energy is not None
    finite_power = [float(v) for v in power if math.isfinite(v)]
    assert [p for _, p in watch.powers] == finite_power[-len(watch.powers) :]
    assert rolling.points and rolling.points[-1][1] == [v for v in energy if math.isfinite(v)][-1]
    i = live.channel_index.position("system.power")
    assert i == watch.power_i and live.latest[i] == finite_power[-1]
    assert live.channels == header.channels and live.index["system.power"] == i


def test_a_channel_added_mid_session_is_read_by_every_sink():
    head = [chan("system.power"), chan("system.energy", "energy", "J")]
    watch, rolling = Watch(head), Rolling()
    idx = ChannelIndex(head)
    rolling.consume(ChannelsAdded(0, head))  # (a Header's channels, as far as Rolling cares)
    gpu = ChannelsAdded(5, [chan("gpu0.temp", "temperature", "C")])
    for sink in (watch, rolling.consume, idx.consume):
        sink(gpu)
    watch(Sample(6, [100.0, 10.0, 61.0]))
    rolling.consume(Sample(6, [100.0, 10.0, 61.0]))
    assert watch.temps[-1] == (6e-9, 61.0) and watch.powers[-1] == (6e-9, 100.0)
    assert rolling.points[-1][1] == 10.0
    assert idx.value([100.0, 10.0, 61.0], idx.position("gpu0.temp")) == 61.0
