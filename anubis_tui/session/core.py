"""The session: sources, sampler, inference worker, profilers and sinks, wired; headless.

The session is the one control surface. The app's keys, `record --plan`
and (later) the remote agent call its methods and nothing else: pause and
resume, sampling rate, profiler on/off and rate, marker, recording start
and stop. Each method emits the Event that records it (a ``command`` Event
with the outcome, beside whatever the change itself emits) and returns an
`Outcome`. Methods may block (a worker relaunch): call them off a UI's
event loop.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from anubis_tui.analysis.identity import model_sha256, prompts_sha256
from anubis_tui.analysis.segments import show_knob
from anubis_tui.config import Config
from anubis_tui.device import ControlError, DeviceSettings, JournalError, restore
from anubis_tui.inference.attach import AttachClient, AttachSpec
from anubis_tui.inference.client import WorkerClient, create_log, exit_reason
from anubis_tui.inference.models import ModelFacts, cache_dir
from anubis_tui.inference.worker import BUILTIN_PROMPTS, Spec
from anubis_tui.profilers.controller import Failure, ProfilerController
from anubis_tui.profilerspec import ProfilerSetting
from anubis_tui.recording.format import default_path, make_header
from anubis_tui.recording.writer import RecordingError, RecordingWriter, open_output
from anubis_tui.records import Channel, Event, Footer, Record
from anubis_tui.session.bus import Bus, Sink, Totals
from anubis_tui.session.knobs import (
    DEVICE,
    LIVE,
    InferenceKnob,
    Knob,
    KnobContext,
    KnobRefused,
    KnobValueError,
    LiveKnob,
    knob_table,
    model_files,
)
from anubis_tui.session.sampler import Sampler
from anubis_tui.sources.base import Source
from anubis_tui.sources.process import ProcessSource
from anubis_tui.sources.registry import discover

RATE_STEPS = (1, 2, 5, 10, 20, 50, 100)
LOAD_WAIT_S = 600.0  # a bound for a model that never loads; death or a stop ends it sooner


@dataclass(frozen=True)
class Outcome:
    """What a control-surface call did: ok or not, and one line for the user."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return self.message


class Session:
    """Everything a run needs. `start`, then `stop`; sinks get every record in time order."""

    def __init__(
        self,
        config: Config,
        spec: Spec | None = None,
        model: ModelFacts | None = None,
        sources: list[Source] | None = None,
        t0_ns: int | None = None,
        sinks: list[Sink] | None = None,
        log_path: Path | None = None,
        discovery_config: dict[str, object] | None = None,
        profiles_dir: Path | None = None,
        pyspy_native: bool = False,
        log_replace: bool = False,
        models_dirs: list[Path] | None = None,
        device_knobs: bool = True,
        attach: AttachSpec | None = None,
    ) -> None:
        self.config = config
        self.attach = attach  # a server to drive instead of our worker (inference/attach.py)
        self.model = model
        self.t0_ns = t0_ns if t0_ns is not None else time.monotonic_ns()
        # The session's own copy (the caller's Spec is never changed): worker stamps share
        # the session's zero, and knobs replace it whole (`_set_knob`).
        self.spec = dataclasses.replace(spec, t0_ns=self.t0_ns) if spec is not None else None
        if sources is None:
            cfg = dict(discovery_config or {})
            if config.cpu_tdp_w:
                cfg["cpu_tdp_w"] = config.cpu_tdp_w
            sources = discover(config=cfg)
        self.log_path = log_path
        self._log_replace = log_replace
        self.bus = Bus(self.t0_ns)
        self.totals = Totals()
        self.bus.add_sink(self.totals)
        self.bus.add_sink(self._watch)
        for sink in sinks or []:
            self.bus.add_sink(sink)
        self.sampler = Sampler(
            sources, emit=self.bus.emit, rate_hz=config.rate_hz, t0_ns=self.t0_ns
        )
        self.header = make_header(
            self.sampler.channels,
            self.t0_ns,
            model=model.plain() if model else {},
            config={**config.plain(), "system_power": self._system_power()},
        )
        if spec is not None:  # identity (analysis/identity.py): model file and prompt set
            self.header.model["sha256"] = model_sha256(spec.model, cache_dir())
            self.header.config["prompts_sha256"] = prompts_sha256(spec.prompts or BUILTIN_PROMPTS)
        if attach is not None:
            self.header.config["attach"] = attach.plain()
            self.header.model.setdefault("name", attach.model)
            self.header.model["served_by"] = attach.url
        self._worker: WorkerClient | AttachClient | None = None
        self._writer: RecordingWriter | None = None
        self._record_totals: Totals | None = None  # the open recording's own totals
        self._record_sink: Sink = self.totals  # the open recording's sink (counts, writes)
        self.record_path: str | None = None
        self._scalene_ready = False  # --scalene-ready: the worker stays under scalene
        self.recorded: list[str] = []  # every file a recording was opened at, in order
        self.default_rate_hz = config.rate_hz  # `+` may always come back up to it
        self._profiles_dir = profiles_dir
        self._pyspy_native = pyspy_native
        self._profilers: ProfilerController | None = None
        self._paused = False
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._footer: Footer | None = None
        self._probes: dict[str, str | None] = {}
        self.worker_error: str | None = None  # why inference ended, if it ended on its own
        self.models_dirs = [cache_dir(), *(models_dirs or [])]
        self._device_knobs = device_knobs
        self.device: DeviceSettings | None = None
        self._knob_lock = threading.Lock()
        self.knob_table: dict[str, Knob] = knob_table()  # name → Knob, in KNOBS order
        self.exports: list[Any] = []  # --export sinks (`session.factory`), closed by `stop`

    # -- wiring ----------------------------------------------------------------------------

    def _system_power(self) -> dict[str, Any]:
        sp = self.sampler.system
        if sp is None:
            return {}
        return {
            "channels": list(sp.channels),
            "tier": sp.tier,
            "method": sp.method,
            "reason": sp.reason,
            "uncovered": list(sp.uncovered),
        }

    def _process_source(self) -> ProcessSource | None:
        return next((s for s in self.sampler.sources if isinstance(s, ProcessSource)), None)

    def add_sink(self, sink: Sink) -> None:
        """`sink(record)` gets every record from now on, in time order, on the bus thread."""
        self.bus.add_sink(sink)

    def emit_event(self, kind: str, **payload: Any) -> None:
        """An Event of `kind` with `payload`, stamped now (`Bus.now`), to every sink."""
        self.bus.emit(Event(self.bus.now(), kind, payload))

    def _watch(self, rec: Record) -> None:
        if not isinstance(rec, Event):
            return
        if rec.kind == "model_loaded":
            self._paused = False
        elif rec.kind == "worker_died":
            how = rec.payload.get("signal") or f"exit {rec.payload.get('returncode')}"
            self.worker_error = f"the inference worker died ({how})"
            if rec.payload.get("server"):  # an attached server (inference/attach.py)
                self.worker_error = f"the server at {rec.payload['server']} failed: " + str(
                    rec.payload.get("reason")
                )
            if self._profilers is not None:
                self._profilers.worker_died()
        elif rec.kind == "error" and rec.payload.get("stage") == "load":
            self.worker_error = f"the model failed to load: {rec.payload.get('reason')}"
        elif rec.kind == "paused":
            self._paused = True
        elif rec.kind == "resumed":
            self._paused = False

    def _command(self, cmd: str, out: Outcome, **args: Any) -> Outcome:
        self.emit_event("command", cmd=cmd, ok=out.ok, message=out.message, **args)
        return out

    # -- what a UI may show ----------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether inference is paused: set by ``paused`` Events, cleared by ``resumed`` and
        ``model_loaded``.
        """
        return self._paused

    @property
    def recording(self) -> str | None:
        """Where the session records now (None when it does not)."""
        w = self._writer
        return self.record_path if w is not None and w.error is None else None

    @property
    def writer(self) -> RecordingWriter | None:
        """The RecordingWriter of the current recording (None before the first one)."""
        return self._writer

    @property
    def recording_error(self) -> str | None:
        """Why the recording stopped being written (a full disk), if it did; kept after stop."""
        w = self._writer
        return w.error if w is not None else None

    @property
    def channels(self) -> list[Channel]:
        """The sampler's channels, in the order of a Sample's values."""
        return self.sampler.channels

    def flush(self, timeout: float = 2.0) -> None:
        """Deliver every record stamped up to now to the sinks (`Bus.flush`), within `timeout` s."""
        self.bus.flush(timeout)

    def now_ns(self) -> int:
        """The session clock: ns since t0, as the records are stamped."""
        return self.bus.now()

    def profiler_check(self, name: str) -> str | None:
        """Why profiler `name` cannot run here (None if it can; `ProfilerController.check`)."""
        return self.profilers.check(name)

    @property
    def rate_hz(self) -> float:
        """The sampling rate asked for last, in Hz (`Sampler.target_rate_hz`)."""
        return self.sampler.target_rate_hz

    @property
    def profiles_dir(self) -> Path:
        """Where profiler artifacts go: the recording's path with ``.profiles`` for a suffix, or
        a new temporary directory (``anubis-profiles-*``) when there is no file; fixed at
        first use.
        """
        if self._profiles_dir is None:
            rec = self.record_path
            self._profiles_dir = (
                Path(rec).absolute().with_suffix(".profiles")
                if rec and rec != "-"
                else Path(tempfile.mkdtemp(prefix="anubis-profiles-"))
            )
        return self._profiles_dir

    @property
    def profilers(self) -> ProfilerController:
        """The ProfilerController, made on first use (the session is its Host)."""
        with self._lock:
            if self._profilers is None:
                self._profilers = ProfilerController(self, native=self._pyspy_native)
            return self._profilers

    def has_model(self) -> bool:
        """Whether this session runs inference (a worker Spec), loaded or not."""
        return self.spec is not None

    def worker_alive(self) -> bool:
        """Whether the worker (or the attach client) has started and not exited."""
        w = self._worker
        return w is not None and not w.exited.is_set()

    # -- the worker, for the profiler controller (Host) -------------------------------------

    def worker_pid(self) -> int | None:
        """The process running inference, only if it is our worker or descends from it."""
        w = self._worker
        if isinstance(w, AttachClient):  # the attached server, when py-spy can read it
            proc = self.attach.server.get("process") if self.attach is not None else None
            python = isinstance(proc, dict) and proc.get("python")
            return w.pid if python and not w.exited.is_set() else None
        if w is None or w.exited.is_set() or w.proc is None:
            return None
        pid = w.loaded_info.get("pid") or w.proc.pid
        if not isinstance(pid, int) or pid <= 0:
            return None
        if pid == w.proc.pid:
            return pid
        try:
            kids = {p.pid for p in psutil.Process(w.proc.pid).children(recursive=True)}
        except psutil.Error:
            return None
        return pid if pid in kids else None

    def attach_process(self, role: str, pid: int | None) -> None:
        """Point the process source's `role` channels ("worker") at `pid` (None: detach); a no-op
        without a ProcessSource.
        """
        ps = self._process_source()
        if ps is not None:
            ps.attach(role, pid)

    def _start_worker(
        self, prefix: list[str] | None = None, env: dict[str, str] | None = None
    ) -> WorkerClient | AttachClient:
        assert self.spec is not None
        if self.attach is not None:  # the server runs the model; we drive it
            a = AttachClient(self.spec, self.attach, self.bus.emit)
            a.start()
            self._worker = a
            self.attach_process("worker", a.pid)
            return a
        log = self.log_path or Path(os.devnull)
        w = WorkerClient(self.spec, self.bus.emit, log, script_prefix=prefix, env=env)
        w.start()
        self._worker = w
        self.attach_process("worker", w.proc.pid if w.proc else None)
        return w

    def wait_loaded(self, timeout: float = LOAD_WAIT_S) -> str | None:
        """Block until the model loads (None) or why it will not: load error, death, stop."""
        w = self._worker
        if w is None:
            return "no inference worker in this session"
        end = time.monotonic() + timeout
        while not w.loaded.wait(0.1):
            if self._stopping.is_set():
                return "the session is stopping"
            if time.monotonic() > end:
                return f"the model did not load within {timeout:.0f} s"
        if w.load_error:
            return f"the model failed to load: {w.load_error}"
        if w.exited.is_set():
            return self.worker_error or f"the worker exited ({w.returncode})"
        return None

    def relaunch_worker(
        self, prefix: list[str] | None, env: dict[str, str] | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Stop the worker and start it again under `prefix` (scalene's launcher; None: plain)
        with `env`.

        Returns (the new worker's ``loaded`` info, None) once the model is loaded, or (None,
        why not): no worker, an attached server, a stopping session, or a failed load.
        """
        if self.spec is None:
            return None, "no inference worker in this session"
        if self.attach is not None:
            return None, "the attached server is not anubis's to relaunch (scalene must start it)"
        if self._stopping.is_set():
            return None, "the session is stopping"
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
            at = prefix.index("-m") + 1 if prefix and "-m" in prefix else 0
            launcher = (prefix or [])[at : at + 2]
            self.emit_event("worker_restart", launcher=launcher)
            w = self._start_worker(prefix, env)
        err = self.wait_loaded()
        return (None, err) if err else (dict(w.loaded_info), None)

    def probe_worker(self, prefix: list[str], env: dict[str, str] | None) -> str | None:
        """Run a short worker (8 tokens) under a launcher beside the real one; None if it works.

        The real worker is not touched: a launcher that crashes llama.cpp on this
        machine (scalene on the H100 host did) is found out here, once per launcher.
        """
        if self.spec is None:
            return "no inference worker in this session"
        if self.attach is not None:
            return "the attached server is not anubis's to relaunch (scalene must start it)"
        key = " ".join(prefix[:4])
        if key in self._probes:
            return self._probes[key]
        spec = dataclasses.replace(self.spec, max_requests=1, max_tokens=8)
        seen: list[str] = []
        log = Path(tempfile.mkdtemp(prefix="anubis-probe-")) / "probe.log"

        def collect(rec: Record) -> None:
            if isinstance(rec, Event):
                seen.append(rec.kind)

        w = WorkerClient(spec, collect, log, script_prefix=prefix, env=env)
        w.start()
        while not w.exited.wait(0.1):
            if self._stopping.is_set():
                w.stop()
                return "the session is stopping"
        err = None
        if "worker_stopped" not in seen or w.returncode != 0:
            how = exit_reason(w.returncode or 0)
            tail = w.log_tail(1)
            err = f"a test worker under it died ({how})" + (f": {tail[-1][:120]}" if tail else "")
        self._probes[key] = err
        return err

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling and inference. OSError (one line) if the worker's log cannot be made."""
        if self.spec is not None and self.log_path is not None:
            create_log(self.log_path, replace=self._log_replace)
        self.sampler.start()
        if self._device_knobs:
            self._start_device()
        self.emit_knobs()
        if self.spec is not None:
            self._start_worker()

    def _start_device(self) -> None:
        """Find the device controls; undo what a crashed anubis left changed."""
        self.device = DeviceSettings.discover()
        journal = self.device.journal
        if journal.changes() and journal.owner() is None:
            lines = restore(journal, list(self.device.controls.values()))
            self.emit_event("device_restored", lines=lines, after="a session that did not end")
        elif journal.refusal:  # not trusted: neither restored nor written over
            why = f"not using {journal.path}: {journal.refusal}"
            self.emit_event("error", stage="device", reason=why)

    def stop(self, reason: str | None = None) -> Footer:
        """Stop profilers, worker and sampler, drain the bus, write the Footer (idempotent)."""
        if self._footer is not None:
            return self._footer
        self._stopping.set()
        if self._profilers is not None:
            self._profilers.shutdown()
        if self._worker is not None:
            self._worker.stop()
        if self.device is not None:
            lines = self.device.restore_all()
            if lines:
                self.emit_event("device_restored", lines=lines, after="session end")
            self.device.close()
        self.sampler.stop()
        self.bus.close()
        for sink in self.exports:  # after the bus drained: they saw every record
            sink.close()
        footer = self._make_footer(reason)
        if self._writer is not None:
            self._writer.close(self._make_footer(reason, totals=self._record_totals))
        for s in self.sampler.sources:
            s.close()
        self._footer = footer
        return footer

    def _make_footer(
        self, reason: str | None, totals: Totals | None = None, **extra: Any
    ) -> Footer:
        """The Footer with `totals` (a recording's own; the session's when None)."""
        st = self.sampler.stats
        own = totals or self.totals
        totals_out: dict[str, Any] = {
            "clean": True,
            "samples": own.samples,
            "tokens_decode": own.tokens_decode,
            "tokens_prompt": own.tokens_prompt,
            "requests": own.requests,
            "events": own.events,
            "sampler_ticks": st.ticks,
            "sampler_samples": st.samples,  # ticks that read something: each is a Sample
            "sampler_skipped": st.skipped_ticks,
            "sampler_read_errors": st.read_errors,
            # Whether every channel gave readings to the end; which did not.
            "all_channels_alive": not self.sampler.lost_channels,
            "lost_channels": self.sampler.lost_channels,
            **extra,
        }
        if reason:
            totals_out["stopped_by"] = reason
        if self.worker_error:
            totals_out["worker_error"] = self.worker_error
        return Footer(self.bus.now(), totals_out)

    # -- the control surface -------------------------------------------------------------------

    def pause(self) -> Outcome:
        """Pause inference (the worker's ``pause`` command); refused when no worker runs."""
        w = self._worker
        if w is None or w.exited.is_set():
            out = Outcome(False, "no inference running")
        elif self._paused:
            out = Outcome(True, "inference is already paused")
        else:
            out = Outcome(w.pause(), "inference paused")
        return self._command("pause", out)

    def resume(self) -> Outcome:
        """Resume inference (the worker's ``resume`` command); refused when no worker runs."""
        w = self._worker
        if w is None or w.exited.is_set():
            out = Outcome(False, "no inference running")
        else:
            out = Outcome(w.resume(), "inference resumed")
        return self._command("resume", out)

    def toggle_pause(self) -> Outcome:
        """`resume` when paused, else `pause`."""
        return self.resume() if self._paused else self.pause()

    def set_rate(self, rate_hz: float) -> Outcome:
        """Sample at `rate_hz`; faster than the sources update is refused, except that the
        session's starting rate (default 10 Hz) is always allowed, so `+` undoes `-`."""
        cap = self.sampler.max_useful_rate_hz
        cur = self.sampler.target_rate_hz
        if rate_hz > max(cap, self.default_rate_hz) and rate_hz > cur:
            out = Outcome(
                False,
                f"sampling stays at {cur:g} Hz: the sources here update at most {cap:g} Hz, "
                f"so {rate_hz:g} Hz would only repeat their values",
            )
        else:
            new = self.sampler.set_rate(rate_hz)
            self.config = self.config.replace(rate_hz=float(new))
            out = Outcome(True, f"sampling at {new:g} Hz")
        return self._command("rate", out, rate_hz=rate_hz)

    def step_rate(self, direction: int) -> Outcome:
        """One step up or down the ladder of sampling rates, from the rate asked for last."""
        cur = self.sampler.target_rate_hz
        if direction > 0:
            nxt = next((r for r in RATE_STEPS if r > cur), cur)
        else:
            nxt = next((r for r in reversed(RATE_STEPS) if r < cur), cur)
        if nxt == cur:
            return self._command("rate", Outcome(True, f"sampling stays at {cur:g} Hz"))
        return self.set_rate(float(nxt))

    def marker(self, label: str = "") -> Outcome:
        """A ``marker`` Event with `label` (a user's note on the timeline); always ok."""
        self.emit_event("marker", label=label)
        return self._command("marker", Outcome(True, "marker"), label=label)

    def attached_profiler_why(self, name: str) -> str | None:
        """Why profiler `name` cannot profile the attached server (None if it can, or if
        there is no attached server)."""
        a = self.attach
        if a is None:
            return None
        if name == "scalene":
            return "scalene: it must start the process it profiles, and the server is not ours"
        proc = a.server.get("process")
        if not isinstance(proc, dict):
            return "py-spy: the server's process is unknown here (pass --attach-pid PID)"
        if not proc.get("python"):
            pid = proc.get("pid")
            return (
                f"py-spy reads Python stacks and the server ({proc.get('name')}, pid {pid}) is "
                f"a native program; for its C/C++ frames use perf top -p {pid}"
            )
        return None

    def profiler_toggle(self, name: str) -> Outcome:
        """Profiler `name` on or off (`ProfilerController.toggle`); refused with no model, or
        where it cannot profile the attached server.

        Turning scalene off also relaunches the worker plain, unless --scalene-ready.
        """
        if self.spec is None:
            return self._command(
                "profiler", Outcome(False, f"{name}: no inference to profile"), name=name
            )
        if (why := self.attached_profiler_why(name)) and self.profilers.active != name:
            return self._command("profiler", Outcome(False, why), name=name)
        was_on = self.profilers.active == "scalene"
        msg = self.profilers.toggle(name)
        if name == "scalene" and was_on and self._profiler_ok(msg) and not self._scalene_ready:
            # Off means off: the worker leaves scalene's launcher too (a plain baseline, not
            # a "scalene-off" setting for the rest of the session). --scalene-ready keeps it.
            plain = self.profilers.go_plain()
            ok = self._profiler_ok(plain)
            msg = "scalene off, worker plain again" if ok else f"scalene off; {plain}"
            return self._command("profiler", Outcome(ok, msg), name=name)
        return self._command("profiler", Outcome(self._profiler_ok(msg), msg), name=name)

    def profiler_step_rate(self, step: int) -> Outcome:
        """Step the sampling rate of py-spy or scalene by `step`
        (`ProfilerController.step_rate`); refused with no model.
        """
        if self.spec is None:
            return self._command("profiler_rate", Outcome(False, "no inference to profile"))
        msg = self.profilers.step_rate(step)
        return self._command("profiler_rate", Outcome(self._profiler_ok(msg), msg), step=step)

    def profiler_apply(self, setting: ProfilerSetting) -> Outcome:
        """Put the profilers in `setting` (a plan step's or a sweep treatment's)."""
        why = self.attached_profiler_why(setting.profiler) if setting.profiler else None
        if why:
            self.profilers.apply(ProfilerSetting.OFF)
            return self._command("profiler_apply", Outcome(False, why), profiler=setting.profiler)
        msg = self.profilers.apply(setting)
        return self._command(
            "profiler_apply",
            Outcome(self._profiler_ok(msg), msg),
            profiler=setting.profiler,
            rate_hz=setting.rate_hz,
            native=setting.native,
        )

    def profiler_plain(self) -> Outcome:
        """Profilers off and the worker out from under scalene (a sweep's baseline)."""
        if self.spec is None:
            return self._command("profiler_plain", Outcome(False, "no inference to profile"))
        msg = self.profilers.go_plain()
        return self._command("profiler_plain", Outcome(self._profiler_ok(msg), msg))

    def profiler_ready(self) -> Outcome:
        """Run the worker under scalene (profiling off) so the scalene toggle is instant."""
        self._scalene_ready = True
        msg = self.profilers.make_scalene_ready()
        return self._command("profiler_ready", Outcome(self._profiler_ok(msg), msg))

    @staticmethod
    def _profiler_ok(msg: str) -> bool:
        return not isinstance(msg, Failure)

    def start_recording(self, path: str | None = None, out: IO[bytes] | None = None) -> Outcome:
        """Record every record from now on (a Header first) to `path` (a new file) or `out`."""
        with self._lock:
            if self.recording is not None:
                return self._command(
                    "record", Outcome(False, f"already recording to {self.record_path}")
                )
            path = path or default_path(self.config.record_dir)
            try:
                if out is None:
                    if path != "-":
                        Path(path).parent.mkdir(parents=True, exist_ok=True)
                    out = open_output(path)
            except (RecordingError, OSError) as e:
                msg = str(e) if isinstance(e, RecordingError) else f"cannot record: {e}"
                return self._command("record", Outcome(False, msg))
            self.record_path = path
            self.header.config["knobs"] = self.knob_values()  # the setting this file starts in
            if path != "-":
                self.recorded.append(path)
            # Its own totals: a recording started later counts only what it holds (one sink
            # counts and writes, so the two never see different records).
            own = self._record_totals = Totals()
            self._writer = RecordingWriter(
                out,
                self.header,
                fsync_s=self.config.fsync_interval_s,
                on_error=lambda msg: self.emit_event("recording_error", reason=msg),
            )
            submit = self._writer.submit

            def record(rec: Record) -> None:
                own(rec)
                submit(rec)

            self._record_sink = record
            self.bus.add_sink(record)
            done = self._command("record", Outcome(True, f"recording to {path}"), path=path)
            self.emit_knobs()  # the recording starts knowing every knob's value
            return done

    def stop_recording(self) -> Outcome:
        """Close the recording with a Footer holding the totals so far."""
        with self._lock:
            w = self._writer
            if w is None:
                return self._command("record_stop", Outcome(False, "not recording"))
            out = self._command(
                "record_stop", Outcome(True, f"recording saved: {self.record_path}")
            )
            self.bus.flush()  # what was emitted before this call reaches the file
            self.bus.remove_sink(self._record_sink)
            own = self._record_totals
            self._writer = None
            self._record_totals = None
            w.close(self._make_footer("user", totals=own))
            return out

    # -- knobs ---------------------------------------------------------------------------------

    def model_choices(self) -> list[Path]:
        """GGUF files the model knob offers: the model cache and ``--models-dir``."""
        files = model_files(self.models_dirs)
        if self.spec is not None and Path(self.spec.model).resolve() not in {
            p.resolve() for p in files
        }:
            files.insert(0, Path(self.spec.model))
        return files

    def _gpu_offload(self) -> bool | None:
        w = self._worker
        v = w.loaded_info.get("gpu_offload") if w is not None else None
        return v if isinstance(v, bool) else None

    def _knob_context(self) -> KnobContext:
        """What the knobs read of this session now (`anubis_tui.session.knobs.KnobContext`)."""
        return KnobContext(
            spec=self.spec,
            device=self.device,
            attached=self.attach is not None,
            attached_model=self.attach.model if self.attach is not None else None,
            gpu_offload=self._gpu_offload(),
            model_layers=self.model.layers if self.model is not None else None,
            model_choices=self.model_choices,
            cpu_count=os.cpu_count() or 1,
        )

    def _knobs_now(self) -> dict[str, tuple[Any, str]]:
        """Each knob's value now and why it cannot be changed here ("" when it can)."""
        ctx = self._knob_context()
        return {n: k.read(ctx) for n, k in self.knob_table.items()}

    def knob_values(self) -> dict[str, Any]:
        """Each knob's value now (None where there is none: no model, no control)."""
        return {n: v for n, (v, _) in self._knobs_now().items()}

    def knob_state(self) -> dict[str, str]:
        """Each knob's reason it cannot be changed here ("" when it can)."""
        return {n: why for n, (_, why) in self._knobs_now().items()}

    def emit_knobs(self) -> None:
        """A ``knobs`` Event: every knob's value and whether it can change (panel, segments)."""
        state = self._knobs_now()
        self.emit_event(
            "knobs",
            values={n: v for n, (v, _) in state.items()},
            state={n: why for n, (_, why) in state.items()},
        )

    def knob_step(self, name: str, direction: int) -> Outcome:
        """One step of a knob's ladder (lower keys step down or cycle, upper keys step up)."""
        k = self.knob_table.get(name) if isinstance(name, str) else None
        if k is None:
            return self._command("knob", Outcome(False, f"no knob {name!r}"), name=name)
        ctx = self._knob_context()
        value, why = k.read(ctx)
        if why:
            return self._command("knob", Outcome(False, f"{k.label}: {why}"), name=name)
        nxt = k.next(value, direction, ctx)
        if nxt == value:
            return self._command(
                "knob", Outcome(True, f"{k.label} stays at {show_knob(name, value)}"), name=name
            )
        return self.set_knob(name, nxt)

    def set_knob(self, name: str, value: Any) -> Outcome:
        """Set one knob; a reload keeps its time out of the figures; a failure goes back."""
        k = self.knob_table.get(name) if isinstance(name, str) else None
        if k is None:
            return self._command("knob", Outcome(False, f"no knob {name!r}"), name=name)
        try:  # one typed check (type, finite, range) before anything acts
            value = k.check(value)
        except KnobValueError as e:  # the refused value is recorded as text: it may not pack
            shown = repr(value)[:80]
            return self._command("knob", Outcome(False, str(e)), name=name, value=shown)
        with self._knob_lock:
            out = self._set_knob(k, value)
        return self._command("knob", out, name=name, value=value)

    def _knob_event(self, name: str, value: Any, previous: Any, **extra: Any) -> None:
        self.emit_event("knob", name=name, value=value, previous=previous, **extra)

    def _set_knob(self, k: Knob, value: Any) -> Outcome:
        """Apply a checked value by how `k` applies (device, live or reload)."""
        ctx = self._knob_context()
        previous, _ = k.read(ctx)
        why = k.refusal(value, ctx)
        if why:
            return Outcome(False, f"{k.label}: {why}")
        if value == previous:
            return Outcome(True, f"{k.label} stays at {show_knob(k.name, value)}")
        shown = f"{k.label} {show_knob(k.name, previous)} → {show_knob(k.name, value)}"
        if k.applies == DEVICE:
            return self._device_knob(k, value, previous, shown)
        assert isinstance(k, InferenceKnob)
        try:
            change = k.change(value, ctx)
        except KnobRefused as e:
            return Outcome(False, str(e))
        if k.applies == LIVE:
            return self._live_knob(k, value, previous, change, shown)
        return self._reload_knob(k, value, previous, change, shown)

    def _device_knob(self, k: Knob, value: Any, previous: Any, shown: str) -> Outcome:
        assert self.device is not None
        try:
            previous = self.device.set(k.name, value)
        except (ControlError, JournalError, OSError) as e:
            return Outcome(False, f"{k.label}: {e}")
        self._knob_event(k.name, value, previous)
        self.emit_knobs()
        return Outcome(True, f"{shown} (put back when anubis exits)")

    def _live_knob(
        self, k: InferenceKnob, value: Any, previous: Any, change: dict[str, Any], shown: str
    ) -> Outcome:
        """A knob the running worker takes at once (threads): no reload, a new Spec copy."""
        assert isinstance(k, LiveKnob) and self.spec is not None
        w = self._worker
        if w is None or w.exited.is_set() or not k.apply_live(w, value):
            return Outcome(False, f"{k.name}: no inference running")
        self.spec = dataclasses.replace(self.spec, **change)
        self._knob_event(k.name, value, previous, **k.live_extra(value))
        return Outcome(True, shown)

    def _reload_knob(
        self, k: Knob, value: Any, previous: Any, change: dict[str, Any], shown: str
    ) -> Outcome:
        """Restart the worker with `change` applied to a copy of the Spec; on failure, go back."""
        name = k.name
        old = self.spec
        assert old is not None
        self.spec = dataclasses.replace(old, **change)
        self._knob_event(name, value, previous, reload=True)
        err = self.profilers.reload_worker()
        if err is None:
            self.worker_error = None
            w = self._worker
            load_s = w.loaded_info.get("load_s") if w is not None else None
            self.emit_knobs()
            took = f" (reloaded in {load_s:.1f} s)" if isinstance(load_s, float) else ""
            return Outcome(True, shown + took)
        self.spec = old
        self._knob_event(name, previous, value, reverted=True, reason=err)
        again = self.profilers.reload_worker()
        if again is None:
            self.worker_error = None
        tail = "" if again is None else f"; and the old setting failed too: {again}"
        self.emit_knobs()
        return Outcome(
            False,
            f"{k.label} {show_knob(name, value)} failed: {err}; "
            f"back to {show_knob(name, previous)}{tail}",
        )
