"""Turns profiler commands (keys, sweep plans, the agent) into profiler processes and Events.

Every change is an Event, so it lands in the recording and splits it into
segments: ``profiler_on`` / ``profiler_off`` / ``profiler_rate`` and
``profiler_ready`` (the worker runs under scalene with profiling off, a
state that may cost something too). While a profiler runs, a
``profiler_frames`` Event every `FRAMES_EVERY_S` carries its hottest frames
and the samples so far; when its segment ends, one more carries what its
artifact says (py-spy's speedscope, scalene's JSON), marked ``final``.
Failures become ``profiler_error`` Events and a message; inference carries
on. Methods block (process starts, worker restarts): the session calls them
off the UI's event loop.

The controller knows its session only through `Host`, which the session
implements: it never reaches into the worker, the sampler or the bus.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from anubis_tui.profilers.base import Profiler, profiler_classes
from anubis_tui.profilers.pyspy import PySpy, speedscope_hot_frames
from anubis_tui.profilers.scalene import Scalene, scalene_command, scalene_env, scalene_hot_lines
from anubis_tui.profilerspec import RATES_HZ, ProfilerSetting

FRAMES_EVERY_S = 2.0


class Failure(str):
    """A message that says a command failed (it was also emitted as a profiler_error)."""


class Host(Protocol):
    """What the controller needs from its session."""

    @property
    def profiles_dir(self) -> Path:
        """The folder for profiler artifacts (speedscope and scalene JSON)."""
        ...

    def emit_event(self, kind: str, **payload: Any) -> None:
        """An Event of `kind` stamped now, to the session's sinks (``profiler_*`` kinds here)."""
        ...

    def worker_pid(self) -> int | None:
        """The running inference process, verified to descend from our worker; else None."""

    def relaunch_worker(
        self, prefix: list[str] | None, env: dict[str, str] | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Restart the worker (under a launcher); its model_loaded payload, or why not.

        Returns as soon as the model loads, fails, the worker dies or the
        session stops: never at a timeout alone.
        """

    def attach_process(self, role: str, pid: int | None) -> None:
        """Point the process channels of `role` ("profiler", "worker") at `pid`; None detaches."""
        ...

    def probe_worker(self, prefix: list[str], env: dict[str, str] | None) -> str | None:
        """A short test worker under a launcher, the real one untouched; None if it works."""

    def has_model(self) -> bool:
        """Whether the session has an inference worker to profile."""
        ...


class ProfilerController:
    """Owns the profilers of one session."""

    def __init__(
        self,
        host: Host,
        native: bool = False,
        classes: dict[str, type[Profiler]] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.out_dir = host.profiles_dir
        found = classes if classes is not None else profiler_classes(warn)
        # The two built-in kinds: one attaches to a running pid, one launches its target.
        pyspy_cls = found.get("py-spy", PySpy)
        scalene_cls = found.get("scalene", Scalene)
        self.pyspy: PySpy = pyspy_cls() if issubclass(pyspy_cls, PySpy) else PySpy()
        self.pyspy.native = native
        self.scalene: Scalene = scalene_cls() if issubclass(scalene_cls, Scalene) else Scalene()
        self.pyspy_rate = 100.0
        self.scalene_rate = 100.0
        self.active: str | None = None  # "py-spy" | "scalene" | None
        self.lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._worker_gone = threading.Event()
        threading.Thread(target=self._watchdog, name="profiler-watchdog", daemon=True).start()

    # -- plumbing ------------------------------------------------------------------------

    def _emit(self, kind: str, **payload: Any) -> None:
        self.host.emit_event(kind, **payload)

    def _error(self, msg: str) -> Failure:
        self._emit("profiler_error", reason=msg)
        return Failure(msg)

    def worker_died(self) -> None:
        """The worker is gone: end a running profiler's segment now (called from any thread)."""
        self._worker_gone.set()
        self._wake.set()

    def worker_started(self) -> None:
        """A worker (re)start is under way: a death seen before it no longer ends a segment."""
        self._worker_gone.clear()

    def _watchdog(self) -> None:
        """Ends segments whose profiler or worker died; emits hot frames every 2 s."""
        while not self._closed.is_set():
            self._wake.wait(FRAMES_EVERY_S)
            self._wake.clear()
            if self._closed.is_set():
                return
            if not self.lock.acquire(timeout=0.5):
                continue  # a command is running; it handles the state itself
            try:
                if self._worker_gone.is_set() and self.active is not None:
                    self._end_active(reason="the inference worker died")
                    continue
                if self.active == "py-spy":
                    why = self.pyspy.exited_early()
                    if why:
                        self._end_active(reason=why)
                        self._error(why)
                        continue
                    self._frames_event(final=False)
            finally:
                self.lock.release()

    def _frames_event(self, final: bool, frames: list[dict[str, Any]] | None = None) -> None:
        if frames is None:
            frames = self.pyspy.hot_frames()
        live = None if final else self.pyspy.samples  # py-spy's own count so far
        if not frames and live is None:
            return
        payload: dict[str, Any] = {"profiler": self.active or "py-spy"}
        if frames:  # none yet: only the count (the segment keeps the frames it has)
            payload["frames"] = frames
        if not final:
            payload["snapshots"] = self.pyspy.snapshots
            if live is not None:
                payload["samples"] = live
        payload["final"] = final
        self._emit("profiler_frames", **payload)

    def _end_active(self, reason: str | None = None) -> None:
        """Stop whatever runs and emit the profiler_off that ends its segment."""
        extra = {"reason": reason} if reason else {}
        if self.active == "py-spy":
            art, samples = self._pyspy_stop()
            self._pyspy_off(art, samples, **extra)
        elif self.active == "scalene":
            art = self.scalene.stop()
            ready = None if reason else "scalene-off"
            self._off("scalene", artifact=str(art) if art else None, ready=ready, **extra)
            self._scalene_findings(art)

    def _off(self, profiler: str, **payload: Any) -> None:
        """End `profiler`'s segment: the one place a ``profiler_off`` Event is emitted.

        `payload` (each optional, see `anubis_tui.records`): ``samples`` (int),
        ``artifact`` (path or None), ``ready`` (the state left behind, e.g.
        ``scalene-off``: the worker still runs under scalene) and ``reason``.
        """
        self.active = None
        self._emit("profiler_off", profiler=profiler, **payload)

    # -- py-spy ----------------------------------------------------------------------------

    def _pyspy_start(self, rate: float) -> str | None:
        pid = self.host.worker_pid()
        if pid is None:
            return "py-spy: no inference worker is running"
        err = self.pyspy.start(pid, rate, self.out_dir)
        if err:
            return err
        self.host.attach_process("profiler", self.pyspy.status().pid)
        return None

    def _pyspy_stop(self) -> tuple[Path | None, int | None]:
        art = self.pyspy.stop()
        self.host.attach_process("profiler", None)
        return art, self.pyspy.samples

    def _pyspy_off(self, art: Path | None, samples: int | None, **extra: Any) -> None:
        """py-spy has stopped: its findings, then the profiler_off that ends the segment."""
        self._pyspy_findings(art, samples)
        self._off("py-spy", samples=samples, artifact=str(art) if art else None, **extra)

    def _pyspy_findings(self, art: Path | None, samples: int | None) -> None:
        frames = None
        if art is not None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                frames = speedscope_hot_frames(art)
        self._emit(
            "profiler_frames",
            profiler="py-spy",
            frames=frames if frames is not None else self.pyspy.hot_frames(),
            samples=samples,
            final=True,
            source="speedscope" if frames is not None else "dump",
        )

    # -- scalene ----------------------------------------------------------------------------

    def _relaunch(self, under_scalene: bool, rate: float) -> str | None:
        """Restart the worker (under scalene or plain) and wait for its model or its death."""
        if not self.host.has_model():
            return "no inference worker in this session"
        artifact = None
        prefix = None
        if under_scalene:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                return f"cannot create {self.out_dir}: {e.strerror}"
            self.scalene.launches += 1
            artifact = self.out_dir / f"scalene-{self.scalene.launches:03d}-{rate:g}hz.json"
            prefix = scalene_command(rate, artifact)
        self.worker_started()
        info, err = self.host.relaunch_worker(prefix, scalene_env() if under_scalene else None)
        if err or info is None:
            self.scalene.attach(None, False, rate, Path(""))
            return err or "the worker did not start"
        pid = info.get("pid")
        if under_scalene and not info.get("under_scalene"):
            self.scalene.attach(None, False, rate, Path(""))
            return "the worker did not start under scalene"
        self.scalene.attach(
            pid if isinstance(pid, int) else None, under_scalene, rate, artifact or Path("")
        )
        return None

    def _scalene_usable(self) -> str | None:
        """Why scalene cannot profile the worker here (None if it can); the worker is untouched."""
        ok, why = self.scalene.available()
        if not ok:
            return why
        probe_art = Path(tempfile.mkdtemp(prefix="anubis-scalene-probe-")) / "probe.json"
        err = self.host.probe_worker(scalene_command(self.scalene_rate, probe_art), scalene_env())
        return f"scalene cannot run llama.cpp on this machine: {err}" if err else None

    def _under_scalene(self, rate: float) -> Failure | None:
        """``profiler_ready`` → relaunch under scalene at `rate` → on failure, plain again.

        The one copy of that sequence. The relaunch (a model load) belongs to
        the scalene-loaded segment, not the baseline, so ``profiler_ready``
        comes first. None when the worker now runs under scalene with profiling
        off; else a Failure (also a ``profiler_error``) once the plain worker
        is back (or saying why it is not).
        """
        self._emit("profiler_ready", profiler="scalene-off", rate_hz=rate)
        err = self._relaunch(True, rate)
        if err is None:
            return None
        again = self._leave_scalene(reason=err)
        tail = "plain inference restarted" if again is None else f"and plain restart: {again}"
        return self._error(f"scalene: {err}; {tail}")

    def _leave_scalene(self, reason: str | None = None) -> str | None:
        """End the scalene-loaded segment and relaunch the worker plain; None, or why not."""
        self._off("scalene", **({"reason": reason} if reason else {}))
        return self._relaunch(False, self.scalene_rate)

    def _scalene_on(self) -> str | None:
        pid = self.host.worker_pid()
        if pid is None:
            return "scalene: no worker"
        return self.scalene.start(pid, self.scalene_rate, self.out_dir)

    def _scalene_findings(self, art: Path | None) -> None:
        if art is None:
            return
        found = scalene_hot_lines(art, wait_s=5.0)
        if found is None:
            return
        frames, samples = found
        self._emit(
            "profiler_frames",
            profiler="scalene",
            frames=frames,
            samples=samples,
            final=True,
            source="scalene json",
        )

    # -- public -----------------------------------------------------------------------------

    def toggle(self, name: str) -> str:
        """Profiler `name` (``py-spy`` or ``scalene``) on if off, off if on, one at a time.

        Returns one line for the user: what happened, or a `Failure` (also emitted as
        ``profiler_error``) for an unknown name, a second profiler, or a start that failed.
        """
        with self.lock:
            if name == "py-spy":
                return self._toggle_pyspy()
            if name == "scalene":
                return self._toggle_scalene()
            return self._error(f"unknown profiler {name!r}")

    def _toggle_pyspy(self) -> str:
        if self.active == "scalene" or self.scalene.under_scalene:
            return self._error(
                "py-spy is off while the worker runs under scalene "
                "(it would sample scalene's own handlers)"
            )
        if self.active == "py-spy":
            art, samples = self._pyspy_stop()
            self._pyspy_off(art, samples)
            return f"py-spy off: {samples} samples" + (f" → {art}" if art else "")
        ok, why = self.pyspy.available()
        if not ok:
            return self._error(why)
        err = self._pyspy_start(self.pyspy_rate)
        if err:
            return self._error(err)
        self.active = "py-spy"
        mode = "native" if self.pyspy.native else "nonblocking"
        self._emit(
            "profiler_on",
            profiler="py-spy",
            rate_hz=self.pyspy_rate,
            mode=mode,
            artifact=str(self.pyspy.artifact),
            pid=self.pyspy.status().pid,
        )
        return f"py-spy on at {self.pyspy_rate:g} Hz ({mode})"

    def _toggle_scalene(self) -> str:
        if self.active == "py-spy":
            return self._error("stop py-spy first (p): one profiler at a time")
        if not self.scalene.under_scalene:
            err = self._scalene_usable()
            if err:
                return self._error(err)
            failed = self._under_scalene(self.scalene_rate)
            if failed:
                return failed
        if self.active == "scalene":
            self._end_active()
            return "scalene off (worker stays under scalene: s turns it back on)"
        err = self._scalene_on()
        if err:
            return self._error(err)
        self.active = "scalene"
        self._emit(
            "profiler_on",
            profiler="scalene",
            rate_hz=self.scalene_rate,
            interval_s=1 / self.scalene_rate,
            artifact=str(self.scalene.artifact),
        )
        return f"scalene on, sampling every {1000 / self.scalene_rate:g} ms"

    def step_rate(self, step: int) -> str:
        """The sampling rate `step` places along `RATES_HZ` (Hz; stops at the ends): py-spy's
        when it runs or nothing runs plain, else scalene's. A running py-spy restarts at the
        new rate (its artifact so far kept); scalene's rate is fixed per launch, so a running
        scalene relaunches the worker. Returns one line for the user, or a `Failure`.
        """
        with self.lock:
            if self.active == "py-spy" or (self.active is None and not self.scalene.under_scalene):
                return self._step_pyspy(step)
            return self._step_scalene(step)

    def _step_pyspy(self, step: int) -> str:
        new = _step(self.pyspy_rate, step)
        if new == self.pyspy_rate:
            return f"py-spy rate stays at {new:g} Hz"
        self.pyspy_rate = new
        if self.active != "py-spy":
            return f"py-spy will sample at {new:g} Hz"
        art, samples = self._pyspy_stop()
        self._pyspy_findings(art, samples)
        err = self._pyspy_start(new)
        if err:
            self._off("py-spy", samples=samples, reason=err)
            return self._error(err)
        self._emit(
            "profiler_rate",
            profiler="py-spy",
            rate_hz=new,
            mode="native" if self.pyspy.native else "nonblocking",
            previous_samples=samples,
            previous_artifact=str(art) if art else None,
            artifact=str(self.pyspy.artifact),
            pid=self.pyspy.status().pid,
        )
        return f"py-spy now at {new:g} Hz"

    def _step_scalene(self, step: int) -> str:
        new = _step(self.scalene_rate, step)
        if new == self.scalene_rate:
            return f"scalene rate stays at {new:g} Hz"
        self.scalene_rate = new
        was_on = self.active == "scalene"
        if was_on:
            art = self.scalene.stop()
            self._scalene_findings(art)
        failed = self._under_scalene(new)  # scalene's rate is fixed per launch
        if failed:
            return failed
        if was_on:
            err = self._scalene_on()
            if err:
                self.active = None
                return self._error(err)
            self._emit(
                "profiler_rate",
                profiler="scalene",
                rate_hz=new,
                interval_s=1 / new,
                artifact=str(self.scalene.artifact),
            )
        return f"scalene now every {1000 / new:g} ms (worker restarted)"

    def apply(self, setting: ProfilerSetting) -> str:
        """Put the session in `setting` (plans, sweeps): whatever runs stops first."""
        with self.lock:
            if self.active == "py-spy":
                self._toggle_pyspy()
            elif self.active == "scalene":
                self._toggle_scalene()
            if setting.profiler is None:
                return "off"
            if setting.profiler == "py-spy":
                if self.scalene.under_scalene:
                    err = self._leave_scalene()
                    if err:
                        return self._error(err)
                self.pyspy.native = setting.native
                self.pyspy_rate = setting.rate_hz
                return self._toggle_pyspy()
            self.scalene_rate = setting.rate_hz
            if self.scalene.under_scalene and self.scalene.rate_hz != setting.rate_hz:
                failed = self._under_scalene(setting.rate_hz)
                if failed:
                    return failed
            return self._toggle_scalene()

    def check(self, name: str) -> str | None:
        """Why profiler `name` cannot run here (None if it can); scalene is tried on a test
        worker (once, cached), the real worker is untouched."""
        with self.lock:
            if name == "scalene":
                return self._scalene_usable()
            ok, why = self.pyspy.available()
            return None if ok else why

    def go_plain(self) -> str:
        """Profilers off, and the worker plain again if it runs under scalene (a true baseline)."""
        with self.lock:
            if self.active is not None:
                self._end_active()
            if not self.scalene.under_scalene:
                return "off"
            err = self._leave_scalene()
            return self._error(err) if err else "off, worker plain again"

    def reload_worker(self) -> str | None:
        """Restart the worker (its spec changed) under the launcher it runs under now.

        A running profiler's segment ends first (py-spy would lose its target).
        """
        with self.lock:
            if self.active is not None:
                self._end_active()
            return self._relaunch(self.scalene.under_scalene, self.scalene_rate)

    def make_scalene_ready(self) -> str:
        """Run the worker under scalene with profiling off, so `s` toggles at once."""
        with self.lock:
            if self.scalene.under_scalene:
                return "the worker already runs under scalene"
            err = self._scalene_usable()
            if err:
                return self._error(err)
            failed = self._under_scalene(self.scalene_rate)
            if failed:
                return failed
            return "worker under scalene, profiling off: s turns it on"

    def shutdown(self) -> None:
        """Stop the watchdog and end the running profiler's segment (its artifact written); for
        the session's end.
        """
        self._closed.set()
        self._wake.set()
        with self.lock:
            self._end_active()
            self.active = None


def _step(rate: float, step: int) -> float:
    i = min(range(len(RATES_HZ)), key=lambda k: abs(RATES_HZ[k] - rate))
    i = max(0, min(len(RATES_HZ) - 1, i + step))
    return float(RATES_HZ[i])
