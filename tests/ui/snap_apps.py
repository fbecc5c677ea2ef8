"""Apps for snapshot tests: the states a user sees, fed from committed recordings.

Each app is deterministic: a replay stands still at a fixed position, a live
app shows a `LiveState` folded from a recording up to a fixed time (no
session of its own), and nothing on screen reads the wall clock.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.replay import Replay
from anubis_tui.config import Config
from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event
from anubis_tui.ui.app import AnubisApp, LiveOptions, make_app

RECORDINGS = Path(__file__).resolve().parents[2] / "recordings"
RECORDING = RECORDINGS / "vm-2core-cpu-gemma270m.msgpack"
POWERCAP = RECORDINGS / "h200-cuda-gemma270m-pyspy-powercap.msgpack"
PROFILERS = RECORDINGS / "h100-cuda-gemma270m-profilers.msgpack"
KNOBS = RECORDINGS / "h200-cuda-gemma270m-knobs.msgpack"
FAKE_SSH = Path(__file__).resolve().parent / "fake_ssh.py"
AT_NS = 20_000_000_000
S = 1_000_000_000


def live_state(path: Path = RECORDING, at_ns: int = AT_NS) -> LiveState:
    """A `LiveState` folded from the records of `path` stamped up to `at_ns`."""
    records, _ = read_all(path)
    state = LiveState()
    state.consume_many([r for r in records if getattr(r, "t", 0) <= at_ns])
    return state


def live_app() -> AnubisApp:
    """The live layout on the CPU VM's recording at 20 s."""
    return make_app(Config(), live=LiveOptions(autostart=False), state=live_state())


def replay_app(path: Path = RECORDING, at_ns: int = AT_NS) -> AnubisApp:
    """A replay of `path` standing still at `at_ns`."""
    records, _ = read_all(path)
    rp = Replay(records)
    rp.playing = False
    rp.seek(at_ns)
    return make_app(Config(), replay=rp)


def powercap_app() -> AnubisApp:
    """H200 under a power cap, 50 s in: py-spy on, tok/s down 95 % with power_cap lit, and
    the throttle warning that says so."""
    return replay_app(POWERCAP, 50 * S)


def profilers_app() -> AnubisApp:
    """H100, 72 s in: scalene on after the worker's relaunch, py-spy's two segments done."""
    return replay_app(PROFILERS, 72 * S)


def knobs_app() -> AnubisApp:
    """H200 knob run, 60 s in: the fourth knob setting, three changes done."""
    return replay_app(KNOBS, 60 * S)


def paused_app() -> AnubisApp:
    """The live layout on the CPU VM's recording, paused at 20 s (space)."""
    state = live_state()
    state.consume(Event(AT_NS + 1, "paused", {}))
    return make_app(Config(), live=LiveOptions(autostart=False), state=state)


def remote_app(until_s: float = 20.0) -> AnubisApp:
    """`anubis run --remote gpu-box` whose link drops after the H200 power-cap recording's
    first `until_s` seconds (fake_ssh.py stands in for ssh)."""
    ssh = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_SSH))} {POWERCAP} {until_s:g}"
    return make_app(Config(), live=LiveOptions(remote="gpu-box", ssh=ssh))
