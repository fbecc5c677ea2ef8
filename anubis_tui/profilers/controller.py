"""Turns profiler keys (and sweep plans) into profiler processes and Events.

Every change is an Event on the session's bus, so it lands in the recording
and splits it into segments: ``profiler_on`` / ``profiler_off`` /
``profiler_rate`` (py-spy or scalene with its rate) and ``profiler_ready``
(the worker runs under scalene with profiling off — a state that may cost
something too). Failures become ``profiler_error`` Events and a message;
inference carries on. Methods block (process starts, worker restarts): the
app calls them from a thread worker.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anubis_tui.profilers.base import RATES_HZ
from anubis_tui.profilers.pyspy import PySpy
from anubis_tui.profilers.scalene import SCALENE_ENV, Scalene, scalene_command
from anubis_tui.records import Event, Record

LOAD_TIMEOUT_S = 120.0


@dataclass
class Step:
    """One step of a sweep plan: profiler (None = off), rate, py-spy native mode, seconds."""

    profiler: str | None
    rate_hz: float
    native: bool
    seconds: float


def parse_plan(text: str) -> list[Step]:
    """``off:10,py-spy@100:10,py-spy@1000n:10,scalene@100:10`` → steps."""
    steps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        what, sep, secs = part.rpartition(":")
        if not sep:
            raise ValueError(f"plan step {part!r} needs :SECONDS")
        seconds = float(secs)
        if seconds <= 0:
            raise ValueError(f"plan step {part!r}: seconds must be positive")
        if what == "off":
            steps.append(Step(None, 0, False, seconds))
            continue
        name, _, rate = what.partition("@")
        if name not in ("py-spy", "scalene"):
            raise ValueError(f"plan step {part!r}: profiler must be py-spy or scalene")
        native = rate.endswith("n")
        rate_hz = float(rate.rstrip("n") or 100)
        if rate_hz not in RATES_HZ:
            raise ValueError(f"plan step {part!r}: rate must be one of {RATES_HZ}")
        steps.append(Step(name, rate_hz, native, seconds))
    if not steps:
        raise ValueError("empty plan")
    return steps


class ProfilerController:
    """Owns the profilers of one session."""

    def __init__(self, session: Any, out_dir: Path | None = None, native: bool = False) -> None:
        self.session = session
        if out_dir is None:
            # Artifacts live next to the recording they belong to.
            rec = getattr(session, "record_path", None)
            out_dir = (
                Path(rec).with_suffix(".profiles")
                if rec and rec != "-"
                else Path(tempfile.gettempdir()) / f"anubis-profiles-{os.getpid()}"
            )
        self.out_dir = out_dir
        self.pyspy = PySpy(native=native)
        self.scalene = Scalene()
        self.pyspy_rate = 100.0
        self.scalene_rate = 100.0
        self.active: str | None = None  # "py-spy" | "scalene" | None
        self.lock = threading.Lock()
        self._loaded = threading.Event()
        self._last_loaded: dict[str, Any] = {}
        session.add_sink(self._watch)
        self._stop_watch = threading.Event()
        threading.Thread(target=self._watchdog, name="profiler-watchdog", daemon=True).start()

    # -- plumbing ------------------------------------------------------------------------

    def _watch(self, rec: Record) -> None:
        if isinstance(rec, Event) and rec.kind == "model_loaded":
            self._last_loaded = dict(rec.payload)
            self._loaded.set()

    def _emit(self, kind: str, **payload: Any) -> None:
        self.session.bus.emit(Event(self.session.bus.now(), kind, payload))

    def _error(self, msg: str) -> str:
        self._emit("profiler_error", reason=msg)
        return msg

    def _worker_pid(self) -> int | None:
        w = self.session.worker
        if w is None or w.exited.is_set():
            return None
        return int(self._last_loaded.get("pid") or w.pid)

    def _attach_profiler_pid(self, pid: int | None) -> None:
        ps = self.session.process_source
        if ps is not None:
            ps.attach("profiler", pid)

    def _watchdog(self) -> None:
        while not self._stop_watch.wait(1.0):
            with self.lock:
                if self.active == "py-spy":
                    why = self.pyspy.exited_early()
                    if why:
                        self._pyspy_off(*self._pyspy_stop(), reason=why)
                        self._error(why)

    # -- py-spy ----------------------------------------------------------------------------

    def _pyspy_start(self, rate: float) -> str | None:
        pid = self._worker_pid()
        if pid is None:
            return "py-spy: no inference worker is running"
        err = self.pyspy.start(pid, rate, self.out_dir)
        if err:
            return err
        self._attach_profiler_pid(self.pyspy.status().pid)
        return None

    def _pyspy_stop(self) -> tuple[Path | None, int | None]:
        art = self.pyspy.stop()
        self._attach_profiler_pid(None)
        return art, self.pyspy.samples

    def _pyspy_off(self, art: Path | None, samples: int | None, **extra: Any) -> None:
        """py-spy has stopped: the segment ends, with what it collected."""
        self.active = None
        self._emit(
            "profiler_off",
            profiler="py-spy",
            samples=samples,
            artifact=str(art) if art else None,
            **extra,
        )

    # -- scalene ----------------------------------------------------------------------------

    def _relaunch(self, under_scalene: bool, rate: float) -> str | None:
        """Restart the worker (under scalene or plain) and wait for its model."""
        if self.session.spec is None:
            return "no inference worker in this session"
        artifact = None
        prefix = None
        if under_scalene:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            artifact = self.out_dir / f"scalene-{int(time.time())}-{rate:g}hz.json"
            prefix = scalene_command(rate, artifact)
        self._loaded.clear()
        self.session.restart_worker(prefix, SCALENE_ENV if under_scalene else None)
        if not self._loaded.wait(LOAD_TIMEOUT_S):
            return "the worker did not come back within 2 minutes"
        info = self._last_loaded
        if under_scalene and not info.get("under_scalene"):
            return "the worker did not start under scalene"
        if under_scalene and artifact is not None:
            self.scalene.attach(int(info["pid"]), True, rate, artifact)
        else:
            self.scalene.attach(int(info.get("pid") or 0), False, rate, Path(""))
        return None

    def _scalene_on(self) -> str | None:
        pid = self._worker_pid()
        if pid is None:
            return "scalene: no worker"
        return self.scalene.start(pid, self.scalene_rate, self.out_dir)

    # -- public -----------------------------------------------------------------------------

    def toggle(self, name: str) -> str:
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
            ok, why = Scalene.available()
            if not ok:
                return self._error(why)
            # The relaunch (model load) belongs to the scalene-loaded segment, not the baseline.
            self._emit("profiler_ready", profiler="scalene-off", rate_hz=self.scalene_rate)
            err = self._relaunch(True, self.scalene_rate)
            if err:
                self._emit("profiler_off", profiler="scalene")
                return self._error(f"scalene: {err}")
        if self.active == "scalene":
            art = self.scalene.stop()
            self.active = None
            self._emit(
                "profiler_off",
                profiler="scalene",
                ready="scalene-off",
                artifact=str(art) if art else None,
            )
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
        with self.lock:
            if self.active == "py-spy" or (self.active is None and not self.scalene.under_scalene):
                new = _step(self.pyspy_rate, step)
                if new == self.pyspy_rate:
                    return f"py-spy rate stays at {new:g} Hz"
                self.pyspy_rate = new
                if self.active != "py-spy":
                    return f"py-spy will sample at {new:g} Hz"
                art, samples = self._pyspy_stop()
                err = self._pyspy_start(new)
                if err:
                    self._pyspy_off(art, samples)
                    return self._error(err)
                self._emit(
                    "profiler_rate",
                    profiler="py-spy",
                    rate_hz=new,
                    previous_samples=samples,
                    previous_artifact=str(art) if art else None,
                    artifact=str(self.pyspy.artifact),
                    pid=self.pyspy.status().pid,
                )
                return f"py-spy now at {new:g} Hz"
            new = _step(self.scalene_rate, step)
            if new == self.scalene_rate:
                return f"scalene rate stays at {new:g} Hz"
            self.scalene_rate = new
            was_on = self.active == "scalene"
            if was_on:
                self.scalene.stop()
            err = self._relaunch(True, new)  # scalene's rate is fixed per launch
            if err:
                self.active = None
                return self._error(f"scalene: {err}")
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
            else:
                self._emit("profiler_ready", profiler="scalene-off", rate_hz=new)
            return f"scalene now every {1000 / new:g} ms (worker restarted)"

    def apply(self, step: Step) -> str:
        """Put the session in `step`'s profiler state (for sweep plans)."""
        with self.lock:
            cur = self.active
        if cur == "py-spy":
            self.toggle("py-spy")
        elif cur == "scalene":
            self.toggle("scalene")
        if step.profiler is None:
            return "off"
        if step.profiler == "py-spy":
            if self.scalene.under_scalene:
                with self.lock:
                    err = self._relaunch(False, self.scalene_rate)
                if err:
                    return self._error(err)
            self.pyspy.native = step.native
            self.pyspy_rate = step.rate_hz
            return self.toggle("py-spy")
        self.scalene_rate = step.rate_hz
        if self.scalene.under_scalene and self.scalene.rate_hz != step.rate_hz:
            with self.lock:
                err = self._relaunch(True, step.rate_hz)
            if err:
                return self._error(err)
        return self.toggle("scalene")

    def make_scalene_ready(self) -> str:
        """Run the worker under scalene with profiling off, so `s` toggles at once."""
        with self.lock:
            if self.scalene.under_scalene:
                return "the worker already runs under scalene"
            self._emit("profiler_ready", profiler="scalene-off", rate_hz=self.scalene_rate)
            err = self._relaunch(True, self.scalene_rate)
            if err:
                self._emit("profiler_off", profiler="scalene")
                return self._error(f"scalene: {err}")
            return "worker under scalene, profiling off: s turns it on"

    def hot_frames(self) -> list[tuple[str, int]]:
        """Hottest functions py-spy has seen, while it runs."""
        return list(self.pyspy.top) if self.active == "py-spy" else []

    def shutdown(self) -> None:
        self._stop_watch.set()
        with self.lock:
            if self.active == "py-spy":
                self._pyspy_off(*self._pyspy_stop())
            elif self.active == "scalene":
                art = self.scalene.stop()
                self._emit("profiler_off", profiler="scalene", artifact=str(art) if art else None)
            self.active = None


def _step(rate: float, step: int) -> float:
    i = min(range(len(RATES_HZ)), key=lambda k: abs(RATES_HZ[k] - rate))
    i = max(0, min(len(RATES_HZ) - 1, i + step))
    return float(RATES_HZ[i])
