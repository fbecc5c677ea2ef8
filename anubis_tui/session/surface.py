"""What the UI, plans, sweeps and the agent protocol speak to: the control surface, as types.

Two `typing.Protocol` classes, nested:

- `Commands` is every command a person or a program can give a session: a
  key in the app, an agent-protocol command (`session.agent.COMMANDS`), a
  line of a plan. Each returns an `Outcome` (ok, one line) and records itself
  as a ``command`` Event. `Session` answers them here; `RemoteSession`
  answers them by sending each to the agent at the other end of ssh and
  waiting for its ack.
- `ControlSurface` adds what a run with nobody watching needs to watch
  itself: wait for the model, see the worker die or the recording fail, read
  the knobs, emit its own Events and fold the records (`Sweep`, the plan
  runner and the headless runner in `session.headless`). `Session` is one;
  nothing outside the session layer reaches past it into the bus, the
  sampler or the profiler controller.

Both are ``runtime_checkable``: ``isinstance(x, ControlSurface)`` checks that
the names exist (not their signatures; mypy checks those where a `Session`
is passed as one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from anubis_tui.profilerspec import ProfilerSetting
    from anubis_tui.records import Channel, Footer, Header
    from anubis_tui.session.core import Outcome


@runtime_checkable
class Commands(Protocol):
    """The commands of a session, local or remote; each returns an `Outcome`, never raises
    for a refused value (the message says why), and may block (a model reload): call them
    off a UI's event loop."""

    def pause(self) -> Outcome:
        """Pause inference; sampling goes on."""
        ...

    def resume(self) -> Outcome:
        """Resume paused inference."""
        ...

    def toggle_pause(self) -> Outcome:
        """Resume when paused, else pause."""
        ...

    def set_rate(self, rate_hz: float) -> Outcome:
        """Sample at `rate_hz` (Hz)."""
        ...

    def step_rate(self, direction: int) -> Outcome:
        """One step up (1) or down (-1) the ladder of sampling rates."""
        ...

    def marker(self, label: str = "") -> Outcome:
        """A ``marker`` Event with `label` on the timeline."""
        ...

    def profiler_toggle(self, name: str) -> Outcome:
        """Profiler `name` (py-spy, py-spy-native, scalene) on or off."""
        ...

    def profiler_step_rate(self, step: int) -> Outcome:
        """py-spy's (or, under scalene, scalene's) sampling rate one step up (1) or down (-1)."""
        ...

    def profiler_plain(self) -> Outcome:
        """Profilers off and the worker out from under scalene (a true baseline)."""
        ...

    def set_knob(self, name: str, value: Any) -> Outcome:
        """Set knob `name` (`session.knobs.KNOBS`) to `value`, checked by the knob."""
        ...

    def knob_step(self, name: str, direction: int) -> Outcome:
        """Knob `name` one step up (1) or down (-1) its ladder (`Knob.next`)."""
        ...

    def start_recording(self, path: str | None = None) -> Outcome:
        """Record to `path` (None: a new file in the record directory; "-": stdout)."""
        ...

    def stop_recording(self) -> Outcome:
        """Stop recording: the Footer is written and the file closed."""
        ...

    @property
    def recording(self) -> str | None:
        """Where the session records now; None when it does not (or the recording failed)."""
        ...


@runtime_checkable
class ControlSurface(Commands, Protocol):
    """`Commands` and what a headless run (a plan, a sweep, the agent) needs to watch itself."""

    @property
    def header(self) -> Header:
        """The session's Header (channels, model, config), as its recordings start."""
        ...

    @property
    def channels(self) -> Sequence[Channel]:
        """The sampler's channels, in the order of a Sample's values (more may come later,
        as ``ChannelsAdded`` records)."""
        ...

    @property
    def worker_error(self) -> str | None:
        """Why inference ended on its own (a crash, a failed load); None while it runs."""
        ...

    @property
    def recording_error(self) -> str | None:
        """Why the session's recording stopped being written (a full disk), if it did."""
        ...

    def now_ns(self) -> int:
        """The session clock: ns since its t0 (the stamps of its records)."""
        ...

    def wait_loaded(self, timeout: float = ...) -> str | None:
        """Block until the model is loaded (None) or say why it will not be."""
        ...

    def worker_alive(self) -> bool:
        """Whether the inference worker has started and not exited."""
        ...

    def knob_values(self) -> dict[str, Any]:
        """Every knob's value now (None where it has none here)."""
        ...

    def profiler_apply(self, setting: ProfilerSetting) -> Outcome:
        """Put the profilers in `setting` (a plan step's or a sweep treatment's)."""
        ...

    def profiler_check(self, name: str) -> str | None:
        """Why profiler `name` cannot run here (None if it can); the worker is untouched."""
        ...

    def flush(self, timeout: float = ...) -> None:
        """Deliver every record stamped up to now to the sinks (at most `timeout` s)."""
        ...

    def emit_event(self, kind: str, **payload: Any) -> None:
        """An Event stamped now, to every sink (the recording included)."""
        ...

    def add_sink(self, sink: Any) -> None:
        """`sink(record)` gets every record from now on, in time order, on the bus thread."""
        ...

    def start(self) -> None:
        """Start the bus, sampler and worker (the model loads in the background)."""
        ...

    def stop(self, reason: str | None = None) -> Footer:
        """Stop everything; the Footer (totals, and `reason` as ``stopped_by``) of the session."""
        ...
