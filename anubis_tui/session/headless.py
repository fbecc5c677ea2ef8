"""One headless runner: a session started, a job run beside it, one wait, a clean stop.

`record`, `sweep` and `agent` are the same run with nobody watching:
start the session, run a job in a thread (a plan, a sweep, or none), wait
for whatever comes first, stop the session with a Footer that says why.
`Headless` is that run; the CLI modules only parse flags and call it.

The one wait (`Headless.wait`) ends, checked every `TICK_S` (0.5 s), on:

- ``signal`` (or the signal's name): SIGINT or SIGTERM, installed while the
  runner is entered, always a clean end with a Footer, also while a
  profiler relaunches the worker;
- the job's name (``plan``, ``sweep``): the job returned; what it returned
  (None: it ran to the end, else why it ended early) is `Ended.job_error`;
- ``worker``: the inference worker died on its own (only without a job: a
  plan or a sweep watches the worker itself, since a scalene relaunch may
  bring it back);
- ``recording error``: the recording stopped being written (a full disk):
  a run is worth nothing without its file;
- ``duration``: the time asked for has passed;
- any reason given to `Headless.end` by another thread (the agent's
  ``stop`` command, stdin's end, a consumer gone).

Errors that stop a run before it starts (`HeadlessError`) are one line for
the user; the session is stopped (a Footer) before they are raised.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from anubis_tui.errors import AnubisError

if TYPE_CHECKING:
    from anubis_tui.records import Footer
    from anubis_tui.session.plan import PlanStep
    from anubis_tui.session.surface import ControlSurface

# How often the wait looks (a signal, `end` and a duration's end are seen at once): every
# wake-up of an idle thread is CPU that headless `record` spends at any token rate.
TICK_S = 0.5
JOB_JOIN_S = 30.0  # the longest wait for a job to see `stop` (a sweep mid-reload)

Job = Callable[[threading.Event], "str | None"]


class HeadlessError(AnubisError):
    """A headless run that could not start (a worker log that cannot be made): one line."""


def say_stderr(msg: str) -> None:
    """The default voice of a headless run: ``anubis: MSG`` on stderr."""
    print(f"anubis: {msg}", file=sys.stderr)


@dataclass(frozen=True)
class Ended:
    """How a headless run ended: `reason` (what ended the wait, the Footer's ``stopped_by``),
    whether its job ran, and the job's error (None when it ran to its end)."""

    reason: str
    job_done: bool = False
    job_error: str | None = None


class Headless:
    """A session run with nobody watching; use as a context manager.

    ``with Headless(session) as run:`` installs the SIGINT/SIGTERM handlers and
    starts the session (`HeadlessError` if it cannot start); leaving the block
    stops the session with the reason the run ended (``error`` after an
    exception) and restores the handlers. The Footer is then `footer`.

    `label` prefixes the Footer's reason (``agent: stdin closed``);
    `signal_names` records a signal by its name (``SIGTERM``) instead of ``signal``.
    """

    def __init__(
        self,
        surface: ControlSurface,
        say: Callable[[str], None] = say_stderr,
        label: str | None = None,
        signal_names: bool = False,
    ) -> None:
        self.s = surface
        self.say = say
        self.label = label
        self.signal_names = signal_names
        self.stop = threading.Event()
        self.reason: str | None = None
        self.footer: Footer | None = None
        self._old: dict[int, Any] = {}
        self._reason_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Headless:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.s.start()
        except OSError as e:
            self.end("start failed")
            self._finish()
            raise HeadlessError(
                str(e) if not e.strerror else f"cannot start: {e.strerror}"
            ) from None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.end("error")
        self._finish()

    def _finish(self) -> None:
        self.stop.set()  # a job still running stops at its next step
        reason = self.reason or "error"
        try:
            self.footer = self.s.stop(f"{self.label}: {reason}" if self.label else reason)
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)
            self._old = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.end(signal.Signals(signum).name if self.signal_names else "signal")

    def end(self, reason: str) -> None:
        """End the wait; the first reason given is the one kept (any thread)."""
        with self._reason_lock:
            if self.reason is None:
                self.reason = reason
        self.stop.set()

    # -- the one wait ------------------------------------------------------------------

    def wait(
        self,
        job: Job | None = None,
        job_name: str = "job",
        duration_s: float | None = None,
        watch_worker: bool = True,
        watch_recording: bool = True,
        tick: Callable[[], None] | None = None,
        join_s: float = 0.0,
    ) -> Ended:
        """Run `job(stop)` in a thread (if any) and wait for the first end (module doc).

        `tick` runs on this thread every `TICK_S` (the agent's heartbeat); `join_s`
        is how long the job is given to see `stop` after the wait ends.
        """
        result: list[str | None] = []
        runner = None
        if job is not None:

            def run_job() -> None:
                try:
                    result.append(job(self.stop))
                except Exception as e:  # an error, not a traceback and an exit 0
                    result.append(f"{type(e).__name__}: {e}")
                self.end(job_name)  # the wait ends now, not at its next look

            runner = threading.Thread(target=run_job, name=job_name, daemon=True)
            runner.start()
        end_at = time.monotonic() + duration_s if duration_s else None
        while not self.stop.wait(
            TICK_S if end_at is None else min(TICK_S, max(0.0, end_at - time.monotonic()))
        ):
            why = self._why_end(result, runner, watch_worker, watch_recording, end_at)
            if why is not None:
                self.end(why if why != "job" else job_name)
                break
            if tick is not None:
                tick()
        self.stop.set()
        if runner is not None and join_s > 0:
            runner.join(join_s)
        if runner is not None and result and result[0] is not None and self.reason == job_name:
            self.reason = "error"  # the job ended early: its own message says why
        return Ended(self.reason or "signal", bool(result), result[0] if result else None)

    def _why_end(
        self,
        result: Sequence[str | None],
        runner: threading.Thread | None,
        watch_worker: bool,
        watch_recording: bool,
        end_at: float | None,
    ) -> str | None:
        if runner is not None and result:
            return "job"
        if watch_worker and runner is None and self._worker_dead():
            return "worker"
        if watch_recording and self.s.recording_error:
            return "recording error"
        if end_at is not None and time.monotonic() >= end_at:
            return "duration"
        return None

    def _worker_dead(self) -> bool:
        return bool(self.s.worker_error) and not self.s.worker_alive()

    # -- jobs ----------------------------------------------------------------------------

    def plan(self, steps: Sequence[PlanStep]) -> Job:
        """The job running `steps` (`session.plan`), each for its seconds, once the model
        has loaded; a worker that dies ends it. Each step is said as it starts."""

        def run(stop: threading.Event) -> str | None:
            return run_plan(self.s, steps, stop, self.say)

        return run


def run_plan(
    surface: ControlSurface,
    steps: Sequence[PlanStep],
    stop: threading.Event,
    say: Callable[[str], None] = say_stderr,
) -> str | None:
    """Each step in turn once the model is loaded: its knobs, then its profiler state, then
    its seconds. None when the plan ran (or `stop` ended it), else why it could not go on."""
    err = surface.wait_loaded()
    if err:
        say(f"plan not run: {err}")
        return None  # the recording still ends with the plan: nothing of it ran
    for step in steps:
        if stop.is_set():
            return None
        said = [surface.set_knob(name, value).message for name, value in step.knobs.items()]
        if step.profiler is not None:
            said.append(surface.profiler_apply(step.profiler).message)
        say(f"plan {step.describe()} for {step.seconds:g} s: {'; '.join(said)}")
        end = time.monotonic() + step.seconds
        while not stop.wait(min(TICK_S, max(0.0, end - time.monotonic()))) and (
            time.monotonic() < end
        ):
            if not surface.worker_alive() and surface.worker_error:
                say(f"plan ended: {surface.worker_error}")
                return None
    return None
