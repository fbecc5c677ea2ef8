"""Replay of files and of streams that are still growing; channels added mid-session."""

from __future__ import annotations

import math
import os
import time

from anubis_tui.analysis.replay import Replay
from anubis_tui.recording.format import make_header, pack
from anubis_tui.recording.reader import from_records
from anubis_tui.records import Channel, ChannelsAdded, Sample, Tokens

A = Channel(
    id="a",
    label="a",
    source="s",
    kind="power",
    unit="W",
    scope="gpu",
    method="instant",
    update_period_s=0.1,
)
B = Channel(
    id="b",
    label="b",
    source="s",
    kind="temperature",
    unit="°C",
    scope="gpu",
    method="instant",
    update_period_s=0.1,
)


def test_channels_added_mid_session_widen_the_table():
    recs = [make_header([A], 0), Sample(1, [1.0]), ChannelsAdded(2, [B]), Sample(3, [2.0, 40.0])]
    rec = from_records(recs)
    assert [c.id for c in rec.channels] == ["a", "b"]
    assert rec.values.shape == (2, 2)
    assert math.isnan(rec.values[0, 1]) and rec.values[1, 1] == 40.0


def test_replay_follows_a_growing_stream():
    r, w = os.pipe()
    rp = Replay.from_stream(os.fdopen(r, "rb", buffering=0))
    os.write(w, pack(make_header([A], 0)) + pack(Sample(0, [5.0])))
    end = time.monotonic() + 5
    while len(rp.records) < 2 and time.monotonic() < end:
        time.sleep(0.02)
    assert rp.growing and rp.header is not None
    rp.advance(0.0)
    assert rp.state.latest[0] == 5.0
    data = b"".join(
        pack(Tokens(k * 50_000_000, 2, "decode", 1, k * 50_000_000 - 1)) for k in range(1, 21)
    ) + pack(Sample(1_000_000_000, [6.0]))
    os.write(w, data[:7])  # a partial record waits for the rest
    time.sleep(0.1)
    os.write(w, data[7:])
    os.close(w)
    end = time.monotonic() + 5
    while rp.growing and time.monotonic() < end:
        time.sleep(0.02)
    assert not rp.growing and rp.end_ns == 1_000_000_000
    rp.seek(rp.end_ns)
    assert rp.state.tokens == 40 and rp.state.latest[0] == 6.0
    assert rp.stream_error is None  # every record arrived whole, the split one included


def test_replay_keeps_records_in_time_order_and_indexes_markers():
    from anubis_tui.records import Event

    recs = [
        make_header([A], 0),
        Sample(2, [1.0]),
        Event(3, "marker", {}),
        Sample(1, [0.5]),
        Event(5, "profiler_on", {"profiler": "py-spy", "rate_hz": 10}),
    ]
    rp = Replay(recs)
    assert rp.times == sorted(rp.times) and rp.end_ns == 5
    assert rp.markers() == [(3, "marker"), (5, "profiler_on")]
    rp.seek(2)
    assert rp.state.latest[0] == 1.0  # t=1 then t=2 folded, in that order


def test_a_file_replays_as_it_plays_without_keeping_its_records():
    """Issue 20: a file is read a chunk at a time as playback goes, not kept; what the
    panels show at any position (after seeks either way) is what the kept records show."""
    from pathlib import Path

    from anubis_tui.recording.reader import read_all

    path = Path(__file__).resolve().parents[2] / "recordings/h200-cuda-gemma270m-knobs.msgpack"
    kept = Replay(read_all(path)[0])
    rp = Replay.from_file(str(path))
    assert rp.records == [] and rp.source is not None
    assert rp.end_ns == kept.end_ns and rp.markers() == kept.markers()
    assert rp.header == kept.header and rp.recovery is not None and not rp.recovery.truncated

    def shown(r: Replay) -> tuple:
        s = r.state.snapshot()
        return (s.tokens, s.requests, s.energy_j, s.system_power, s.decode_tps, r.state.latest)

    for to in (rp.end_ns // 3, rp.end_ns // 5, rp.end_ns, rp.end_ns // 2, 0):
        rp.seek(to)
        kept.seek(to)
        assert shown(rp) == shown(kept), to
    rp.seek(rp.end_ns // 4)
    rp.playing = True
    for _ in range(3):
        rp.advance(2.0)
    kept.seek(rp.pos_ns)
    assert shown(rp) == shown(kept)


def test_seeking_back_resumes_from_a_checkpoint_and_shows_the_same():
    from pathlib import Path

    from anubis_tui.recording.reader import read_all

    path = Path(__file__).resolve().parents[2] / "recordings/h200-cuda-gemma270m-knobs.msgpack"
    kept = Replay(read_all(path)[0])
    rp = Replay.from_file(str(path))
    rp.checkpoint_ns = 5_000_000_000  # every 5 s of recording (5 min in a real file)
    rp.seek(rp.end_ns)
    assert len(rp._checkpoints) >= 2  # taken between chunks (this file is four)

    def shown(r: Replay) -> tuple:
        s = r.state.snapshot()
        segs = [(f.name, f.decode_tps, f.j_per_token) for f in r.state.segs.figures()]
        return (s.tokens, s.requests, s.energy_j, s.decode_tps, list(r.state.latest), segs)

    for to in (rp.end_ns // 2, rp.end_ns // 3, rp.end_ns - 1, 7_000_000_000, 0):
        rp.seek(to)
        kept.seek(to)
        assert shown(rp) == shown(kept), to
    # a checkpoint's state is copied, never folded on: seeking back twice gives the same
    rp.seek(rp.end_ns // 2)
    a = shown(rp)
    rp.seek(rp.end_ns)
    rp.seek(rp.end_ns // 2)
    assert shown(rp) == a
