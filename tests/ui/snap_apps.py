"""Apps for snapshot tests: the live layout and the replay, fed from a committed recording."""

from __future__ import annotations

from pathlib import Path

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.replay import Replay
from anubis_tui.config import Config
from anubis_tui.recording.reader import read_all
from anubis_tui.ui.app import LiveOptions, make_app

RECORDING = Path(__file__).resolve().parents[2] / "recordings" / "vm-2core-cpu-gemma270m.msgpack"
AT_NS = 20_000_000_000


def live_app():
    records, _ = read_all(RECORDING)
    state = LiveState()
    state.consume_many([r for r in records if getattr(r, "t", 0) <= AT_NS])
    return make_app(Config(), live=LiveOptions(autostart=False), state=state)


def replay_app():
    records, _ = read_all(RECORDING)
    rp = Replay(records)
    rp.playing = False
    rp.seek(AT_NS)
    return make_app(Config(), replay=rp)
