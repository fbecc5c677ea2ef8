"""The Textual app: live monitor and replay in one UI. It composes widgets and nothing more.

The app reads a `LiveState` and acts through the session's control surface:
a live session's bus feeds the state, a replay feeds it the same records
from a file. A live session's records wait in an inbox (a deque append on
the bus thread, nothing more) and are folded into the state once per frame,
under one lock: the app's work per frame does not grow with the token rate.
Request start/end Events are not written to the event log (the throughput
panel shows them), for the same reason.

Errors: an exception that escapes a key's action (`run_action`), a frame
(`frame`) or a thread worker (`on_worker_state_changed`; the workers say
``exit_on_error=False``) reaches `AnubisApp.report_error`: it is shown as a
notification and a line of the event log, and the app keeps running; the
same message again within `ERROR_REPEAT_S` is counted, not shown again. An
exception in a message handler is left to Textual (the app ends; `run`
still stops the session, so device settings are put back).
Widgets change only on the event loop: thread workers hand their results
over with `call_from_thread`. Panels redraw at a steady 1 fps
(text only when it changed) and once just after each key's outcome: a
redraw re-renders every widget it touches, so the cost is per frame, and
1 fps halves what 2 fps cost (the app's own CPU 2.1 → 1.1 % of a core at
1,000 tok/s; the figures are 1-2 s windows and the clock counts seconds);
charts hold one bin per second and redraw once a second. Session calls that
may block (starting a session, a profiler relaunching the worker) run in
thread workers; nothing on the event loop touches a sensor, a pipe or a
file.
"""

from __future__ import annotations

import contextlib
import sysconfig
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import textual
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.css.query import NoMatches
from textual.widgets import Footer, Log, Static
from textual.worker import Worker, WorkerState

from anubis_tui.analysis.live import NOTIFY_KINDS, LiveState, Snapshot, recorded_rate_hz
from anubis_tui.analysis.replay import Replay
from anubis_tui.config import Config
from anubis_tui.plugins import QueuedExport
from anubis_tui.records import Event, Record
from anubis_tui.session.knobs import KNOBS
from anubis_tui.ui.screens import HelpScreen, ModelPicker
from anubis_tui.ui.widgets.charts import Charts
from anubis_tui.ui.widgets.knobs import KnobsPanel
from anubis_tui.ui.widgets.monitor import MonitorPanel
from anubis_tui.ui.widgets.panel import Panel
from anubis_tui.ui.widgets.power import PowerPanel
from anubis_tui.ui.widgets.profiler import ProfilerPanel
from anubis_tui.ui.widgets.thermal import ThermalPanel
from anubis_tui.ui.widgets.throttle import ThrottlePanel
from anubis_tui.ui.widgets.throughput import ThroughputPanel
from anubis_tui.ui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from textual.actions import ActionParseResult
    from textual.dom import DOMNode
    from textual.notifications import SeverityLevel

    from anubis_tui.inference.models import ModelFacts
    from anubis_tui.inference.worker import Spec
    from anubis_tui.session import Outcome, Session
    from anubis_tui.session.remote import RemoteSession

UI_FPS = 1
KEY_FRAME_S = 0.3  # a frame this long after a key's outcome (its Events through the bus)
# Events the log leaves out: panels show them, and they come with every request (or 2 s).
QUIET_KINDS = frozenset({"profiler_frames", "request_start", "request_end"})
ERROR_REPEAT_S = 10.0  # the same error again within this many seconds: counted, not shown again


@dataclass
class LiveOptions:
    """What `anubis run` asked for."""

    spec: Spec | None = None  # None: sensors only
    model: ModelFacts | None = None
    record_path: str | None = None
    log_path: Path | None = None
    discovery: dict[str, object] = field(default_factory=dict)
    autostart: bool = True  # False: show a LiveState fed by someone else (tests, demos)
    scalene_ready: bool = False
    pyspy_native: bool = False
    models_dirs: list[Path] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)  # --export NAME[:OPTIONS] sink plugins
    remote: str | None = None  # [user@]host: the session runs there, as `anubis agent`
    remote_cmd: str = "anubis agent"
    ssh: str = "ssh"
    attach: Any = None  # an AttachSpec: drive a running server (inference/attach.py)
    sinks: list[Callable[[Record], None]] = field(default_factory=list)  # also get every record


def chart_rows(height: int) -> int:
    """Lines per chart for a terminal `height` lines tall: 1 up to 30, then one more for
    every 6 lines (the panels keep at least 14 lines), at most 8."""
    return max(1, min(8, (height - 19) // 6))


def _knob_bindings() -> list[BindingType]:
    """t/T, g/G, b, f, k, o, w/W, c/C, n: lower steps down (or cycles), upper steps up."""
    out: list[BindingType] = []
    for k in KNOBS:
        if k.name == "model":
            out.append(Binding("o", "pick_model", "Model", id="knob_model", show=False))
            continue
        down, _, up = k.keys.partition("/")
        step = 1 if not up else -1
        out.append(
            Binding(
                down, f"knob('{k.name}', {step})", f"{k.label} −", id=f"knob_{k.name}", show=False
            )
        )
        if up:
            out.append(
                Binding(
                    up, f"knob('{k.name}', 1)", f"{k.label} +", id=f"knob_{k.name}_up", show=False
                )
            )
    return out


# The help screen's groups: binding id → group title (in this order).
HELP_GROUPS = ("inference", "sampling", "profilers", "knobs", "recording", "replay", "app")
HELP_DESCRIPTIONS = {
    "quit": ("app", "quit (device settings changed by knobs are put back)"),
    "help": ("app", "this help"),
    "log": ("app", "show or hide the event log"),
    "pause": ("inference", "pause or resume inference"),
    "rate_up": ("sampling", "sample the sensors faster (up to 10 Hz, or as fast as they update)"),
    "rate_down": ("sampling", "sample the sensors slower"),
    "record": ("recording", "start or stop a recording (a new file; named when you quit)"),
    "marker": ("recording", "put a marker in the recording"),
    "pyspy": ("profilers", "py-spy on the inference worker, on or off"),
    "scalene": ("profilers", "scalene on the inference worker; off runs it plain again"),
    "prof_rate_down": ("profilers", "the running profiler samples slower"),
    "prof_rate_up": ("profilers", "the running profiler samples faster"),
    "play": ("replay", "play or pause the replay"),
    "seek_back": ("replay", "back 5 s"),
    "seek_fwd": ("replay", "forward 5 s"),
    "slower": ("replay", "play slower"),
    "faster": ("replay", "play faster"),
    "start": ("replay", "to the start"),
    "end": ("replay", "to the end"),
    "knob_model": ("knobs", "pick the model (GGUF files of the cache and --models-dir)"),
}
for _k in KNOBS:
    _d = _k.help + (" (reloads the model)" if _k.reload else "")
    HELP_DESCRIPTIONS.setdefault(
        f"knob_{_k.name}", ("knobs", _d + (": down" if "/" in _k.keys else ""))
    )
    HELP_DESCRIPTIONS.setdefault(f"knob_{_k.name}_up", ("knobs", _d + ": up"))


class AnubisApp(App[int]):
    """The monitor: title line, six figure panels, the knobs strip, charts, the replay
    timeline, the throttle warning, the event log (l) and the footer.

    It shows a `LiveState` (`state`) and acts through the session's control
    surface (`session`: a `Session`, a `RemoteSession`, or None while starting or
    in a replay). `LiveApp` and `ReplayApp` differ only in their key bindings;
    build either with `make_app`. `recorded` lists the files this app's session
    recorded to. Errors: see the module docstring."""

    CSS_PATH = "styles/app.tcss"
    TITLE = "anubis"
    ENABLE_COMMAND_PALETTE = False  # its footer entry would not fit 80 columns beside ours

    COMMON: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("l", "toggle_log", "Log", id="log", show=False),
    ]
    LIVE_BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause", "Pause", id="pause"),
        Binding("plus", "rate(1)", "+Hz", id="rate_up", show=False),
        Binding("minus", "rate(-1)", "-Hz", id="rate_down", show=False),
        Binding("r", "record", "Rec", id="record"),
        Binding("m", "marker", "Mark", id="marker"),
        Binding("p", "profiler('py-spy')", "py-spy", id="pyspy"),
        Binding("s", "profiler('scalene')", "scalene", id="scalene"),
        Binding(
            "left_square_bracket", "profiler_rate(-1)", "Rate−", id="prof_rate_down", show=False
        ),
        Binding("right_square_bracket", "profiler_rate(1)", "Rate+", id="prof_rate_up", show=False),
        *_knob_bindings(),
    ]
    REPLAY_BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "play", "Play/Pause", id="play"),
        Binding("left", "seek(-5)", "-5s", id="seek_back"),
        Binding("right", "seek(5)", "+5s", id="seek_fwd"),
        Binding("less_than_sign", "speed(0)", "Slower", id="slower"),
        Binding("greater_than_sign", "speed(1)", "Faster", id="faster"),
        Binding("home", "seek_to(0)", "Start", id="start", show=False),
        Binding("end", "seek_to(-1)", "End", id="end", show=False),
    ]

    def __init__(
        self,
        config: Config,
        live: LiveOptions | None = None,
        replay: Replay | None = None,
        state: LiveState | None = None,
    ) -> None:
        self.config = config
        self.live = live
        self.replay = replay
        self.state: LiveState = replay.state if replay is not None else (state or LiveState())
        self.session: Session | RemoteSession | None = None
        self._events_seen = 0
        self._last_frame = time.monotonic()
        self._lines: dict[str, str] = {}
        self._panels: list[Panel] = []
        self._exports: list[QueuedExport] = []
        self.recorded: list[str] = []  # files this app's session recorded to (the CLI names them)
        self._inbox: deque[Record] = deque()  # records from the bus, folded once per frame
        # error message → (monotonic s it was last shown, times it came since)
        self._errors: dict[str, tuple[float, int]] = {}
        super().__init__()
        if config.keys:
            self.set_keymap(dict(config.keys))

    # -- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The layout (styles/app.tcss): title, panel grid, knobs, charts, timeline,
        throttle warning, event log, footer."""
        yield Static("", id="title")
        with Grid(id="panels"):
            yield ThroughputPanel(id="throughput")
            yield PowerPanel(id="power")
            yield ThermalPanel(id="thermal")
            yield ThrottlePanel(id="throttle")
            yield ProfilerPanel(id="profiler")
            yield MonitorPanel(id="monitor")
        yield KnobsPanel(id="knobs")
        yield Charts()
        yield Timeline()
        warning = Static("", id="warning")
        warning.display = False  # shown by the frame while a throttle warning holds
        yield warning
        log = Log(id="log", max_lines=500)
        log.display = False
        log.can_focus = False  # arrow keys belong to the replay, not to scrolling the log
        yield log
        yield Footer()

    def on_mount(self) -> None:
        """The frame timer (`UI_FPS` a second) and a first frame once laid out; a live app
        starts its session (unless `LiveOptions.autostart` is False), a replay logs its
        header and shows the rate it was recorded at."""
        self._panels = list(self.query(Panel))
        self.query_one(MonitorPanel).target_hz = self.config.rate_hz
        self.set_interval(1 / UI_FPS, self.frame)
        # The first frame once the layout is done (panels fit their text to their size), not
        # a timer period later.
        self.call_after_refresh(self.frame)
        if self.replay is None:
            self.query_one(Timeline).display = False
            if self.live is None or self.live.autostart:
                self.start_session()
        else:
            hdr = self.replay.header
            self.log_line("replay: " + (hdr.created_utc if hdr else "stream"))
            self._log_system_power(hdr)
            # the rate it was recorded at, not this machine's config
            recorded = recorded_rate_hz(hdr)
            if recorded is not None:
                self.query_one(MonitorPanel).target_hz = recorded

    def _log_system_power(self, hdr: Any) -> None:
        """The event log (l) starts with how system power is made and what it leaves out."""
        cfg = getattr(hdr, "config", None)
        sp = cfg.get("system_power") if isinstance(cfg, dict) else None
        if not isinstance(sp, dict) or not sp.get("reason"):
            return
        self.log_line(f"system power: {sp['reason']}"[:200])
        for part in sp.get("uncovered") or []:
            self.log_line(f"  not covered: {part}"[:200])

    def on_resize(self) -> None:
        """Charts get taller with the terminal (`chart_rows`: one line each at 80x24, 3 at
        40 lines, 6 at 60); the panels take the rest, so both grow. Text is fitted to the
        new sizes at once."""
        self.query_one(Charts).set_rows(chart_rows(self.size.height or 24))
        self.call_after_refresh(self.frame)  # text fitted to the new sizes at once

    # -- errors: one place -------------------------------------------------------------

    async def run_action(
        self,
        action: str | ActionParseResult,
        default_namespace: DOMNode | None = None,
        namespaces: Mapping[str, DOMNode] | None = None,
    ) -> bool:
        """Every key's action (the app's and its screens') runs here: an exception it
        raises is shown (`report_error`) and the app goes on. Textual's default would end
        the app, and an exception left to its message loop would stop that loop."""
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except Exception as e:
            self.report_error(e)
            return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A thread worker that failed (its error kept, ``exit_on_error=False``) is shown."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, where=f"worker {event.worker.name}")

    def report_error(self, error: BaseException, where: str = "") -> None:
        """Show `error` (notification and event log) and keep running; the same message
        again within `ERROR_REPEAT_S` s is only counted. Safe from any thread."""
        if threading.get_ident() != self._thread_id:
            self.call_from_thread(self.report_error, error, where)
            return
        where = _raised_in(error) or where
        msg = f"{type(error).__name__}: {error}"[:240] + (f" (in {where})" if where else "")
        now = time.monotonic()
        last, count = self._errors.get(msg, (-ERROR_REPEAT_S, 0))
        if now - last < ERROR_REPEAT_S:
            self._errors[msg] = (last, count + 1)
            return
        again = f" ({count} more since)" if count else ""
        self._errors[msg] = (now, 0)
        self.log.error("".join(traceback.format_exception(error)))  # Textual's devtools log
        with contextlib.suppress(NoMatches):  # the app is going: its log is gone
            self.log_line(f"{self.state.t / 1e9:8.1f}s error {msg}{again}")
        self.notify(msg + again, title="error (the app goes on)", severity="error", timeout=10)

    # -- session (live) -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="session", exit_on_error=False)
    def start_session(self) -> None:
        """Build and start the session off the event loop (a thread worker): a
        `RemoteSession` for ``--remote``, else `make_session`. A failure to start
        (OSError, ssh missing) is a notification and the app stays up without a
        session; any other exception reaches `report_error`. Results reach widgets
        through `call_from_thread` only."""
        from anubis_tui.session.factory import make_session

        opts = self.live or LiveOptions()
        if opts.remote:
            from anubis_tui.session.remote import RemoteSession

            remote = RemoteSession(
                opts.remote,
                remote_cmd=opts.remote_cmd,
                ssh=opts.ssh,
                sinks=[self._inbox.append, *opts.sinks],
                record_path=opts.record_path,
            )
            try:
                remote.start()
            except OSError as e:
                self.call_from_thread(self.notify, f"ssh: {e}", severity="error", timeout=10)
                return
            self.session = remote
            return
        try:
            session = make_session(
                self.config,
                opts.spec,
                [self._inbox.append, *opts.sinks],
                model=opts.model,
                attach=opts.attach,
                log_path=opts.log_path,
                discovery=opts.discovery,
                pyspy_native=opts.pyspy_native,
                models_dirs=opts.models_dirs,
                exports=opts.exports,  # closed by session.stop
                on_export_error=lambda m: self.call_from_thread(
                    self.notify, m, severity="error", timeout=10
                ),
            )
            self.state.consume(session.header)
            self.call_from_thread(self._log_system_power, session.header)
            if opts.record_path:
                out = session.start_recording(opts.record_path)
                if not out.ok:
                    self.call_from_thread(self.notify, out.message, severity="error", timeout=10)
            session.start()
        except OSError as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=10)
            return
        self.session = session
        if opts.model is not None:
            from anubis_tui.profilers.static import estimate

            # The bandwidth copy test runs once per machine (cached), here off the event loop.
            gpu_layers = opts.spec.gpu_layers if opts.spec is not None else 0
            static = estimate(opts.model.file_size, gpu_layers=gpu_layers, layers=opts.model.layers)
            self.call_from_thread(self._show_static, static.short)
        if opts.scalene_ready and opts.spec is not None:
            self.call_from_thread(self._say, session.profiler_ready())

    def _show_static(self, line: Callable[[float | None], str]) -> None:
        """The profiler panel's static-ceiling line (tok/s → text), set on the event loop."""
        self.query_one(ProfilerPanel).static_line = line

    def run(self, *args: Any, **kwargs: Any) -> int | None:
        """Run the app; the session stops (device settings back, Footer written) on every
        exit path, an unhandled exception in a handler or worker included."""
        try:
            return super().run(*args, **kwargs)
        finally:
            self.stop_session()

    def stop_session(self) -> None:
        """Stop the session (device settings put back, the recording's Footer written)
        and note the files it recorded; idempotent. Called by q and by `run` on every
        exit path."""
        if self.session is not None:
            self.session.stop("quit")
            self._note_recorded()
            self.session = None
        for sink in self._exports:
            sink.close()
        self._exports = []

    async def action_quit(self) -> None:
        """q: stop the session (device settings back) and leave; the app leaves even when
        stopping fails (`run` tries to stop it once more on the way out)."""
        try:
            self.stop_session()
        finally:
            self.exit(0)

    # -- frames -----------------------------------------------------------------------

    def fold_inbox(self) -> None:
        """Fold the records that came since the last frame into the state, in one go."""
        inbox = self._inbox
        if inbox:
            self.state.consume_many([inbox.popleft() for _ in range(len(inbox))])

    def frame(self) -> None:
        """One frame (a timer at `UI_FPS`, and just after a key's outcome): replay advanced,
        inbox folded, panels redrawn, new Events logged. An error is shown, and the next
        frame comes as usual."""
        if self._exit or self._closing:
            return  # a timer that fires while the app is going: its widgets may be gone
        try:
            self._frame()
        except Exception as e:
            self.report_error(e)

    def _frame(self) -> None:
        now = time.monotonic()
        if self.replay is not None:
            self.replay.advance(now - self._last_frame)
            self.state = self.replay.state
        self._last_frame = now
        self.fold_inbox()
        if len(self.screen_stack) > 1:
            return  # help or the model picker is open: nothing beneath it is redrawn
        snap = self.state.snapshot()
        with self.batch_update():
            self.draw(snap)
        self.pump_events()

    def draw(self, s: Snapshot) -> None:
        """Redraw from one `Snapshot`: the title (mode, host, model, t in s, recording,
        paused, a remote link's state), every panel, the throttle warning and the
        charts; the replay timeline in a replay."""
        self._line("#title", self.title_text(s))
        for panel in self._panels:
            panel.refresh_from(s)
        warn = self.query_one("#warning", Static)
        self._line("#warning", f" ⚠ {s.throttle_warning}" if s.throttle_warning else "")
        if warn.display != bool(s.throttle_warning):
            warn.display = bool(s.throttle_warning)  # the one change that needs a layout
        self.query_one(Charts).refresh_from(s)
        if self.replay is not None:
            self.query_one(Timeline).refresh_from(self.replay, self.size.width or 80)

    def title_text(self, s: Snapshot) -> str:
        """The title line: mode (LIVE, REPLAY, REMOTE host), host name, model, session time
        in s, the file being recorded, paused, and a remote link that dropped or stalled."""
        mode = "REPLAY" if self.replay is not None else "LIVE"
        host = s.header.host.get("hostname", "") if s.header else ""
        model = (s.header.model.get("name") if s.header else None) or "no model"
        where = self.session.recording if self.session is not None else None
        rec = f"  ● rec {Path(where).name}" if where else ""
        paused = "  ⏸ paused" if s.paused else ""
        if self.live is not None and self.live.remote:
            mode = f"REMOTE {self.live.remote}"
        return f" anubis {mode}  {host}  {model}  t={s.t_s:.0f}s{rec}{paused}{self._link()}"

    def _link(self) -> str:
        """A remote session's link: "" while it talks, else disconnected (and why) or
        stalled (for how many s)."""
        r = self.session
        if self.live is None or not self.live.remote or r is None:
            return ""
        if not getattr(r, "connected", True):
            why = str(getattr(r, "lost", "") or "")
            return f"  ⚠ disconnected: r reconnects{f' ({why[:60]})' if why else ''}"
        if (quiet := getattr(r, "stalled_s", None)) is not None:
            return f"  ⚠ stalled {quiet:.0f} s"
        return ""

    def _line(self, wid: str, text: str) -> None:
        """A one-line Static: repainted when its text changes, never laid out again."""
        if self._lines.get(wid) != text:
            self._lines[wid] = text
            self.query_one(wid, Static).update(text, layout=False)

    def pump_events(self) -> None:
        """New Events to the event log (one line each, at most 200 characters, t in s;
        request and frame Events left out), and the kinds in `NOTIFY_KINDS` as
        notifications in a live session (a worker that died says how and its last
        log line)."""
        events, self._events_seen = self.state.new_events(self._events_seen)
        for e in events:
            if e.kind in QUIET_KINDS:
                continue  # shown in a panel, and as frequent as requests: not for the log
            line = f"{e.t / 1e9:8.1f}s {e.kind} " + " ".join(
                f"{k}={v}" for k, v in e.payload.items() if k not in ("log_tail", "system_info")
            )
            self.log_line(line[:200])
            sev = NOTIFY_KINDS.get(e.kind)
            if sev is not None and self.replay is None:
                level = cast("SeverityLevel", sev)  # NOTIFY_KINDS holds only Textual's levels
                self.notify(
                    notice(e)[:300], title=e.kind.replace("_", " "), severity=level, timeout=8
                )

    def _note_recorded(self) -> None:
        s = self.session
        paths = list(getattr(s, "recorded", None) or [])
        if not paths and s is not None and s.record_path and s.record_path != "-":
            paths = [s.record_path]  # a remote session records one file at a time
        for p in paths:
            if p not in self.recorded:
                self.recorded.append(p)

    def log_line(self, line: str) -> None:
        """Append one line to the event log (l); the log keeps the last 500 lines."""
        self.query_one("#log", Log).write_line(line)

    # -- actions (live): each is one call of the session's control surface ----------------

    def _say(self, out: Outcome) -> None:
        self.notify(out.message, severity="information" if out.ok else "warning", timeout=4)
        self.set_timer(KEY_FRAME_S, self.frame)  # what the key changed, without waiting

    @work(thread=True, group="control", exclusive=False, exit_on_error=False)
    def control(self, call: Callable[[Any], Outcome]) -> None:
        """Run one control-surface call off the event loop and say what it did."""
        s = self.session
        if s is None:
            self.call_from_thread(self.notify, "the session is still starting", severity="warning")
            return
        self.call_from_thread(self._say, call(s))

    def action_pause(self) -> None:
        """space: pause or resume inference (a ``paused``/``resumed`` Event)."""
        self.control(lambda s: s.toggle_pause())

    def action_rate(self, direction: int) -> None:
        """+/-: the sampler one step faster (`direction` 1) or slower (-1), in Hz; the
        monitor panel's target follows."""

        def step(s: Session) -> Outcome:
            out = s.step_rate(direction)
            rate = s.rate_hz
            self.call_from_thread(lambda: setattr(self.query_one(MonitorPanel), "target_hz", rate))
            return out

        self.control(step)

    def action_marker(self) -> None:
        """m: a marker in the recording, labelled with the session time in s."""
        label = f"key m at {self.state.t / 1e9:.1f}s"
        self.control(lambda s: s.marker(label))

    def action_record(self) -> None:
        """r: start or stop recording to a new file; on a remote session whose link
        dropped, r reconnects instead."""
        if self.live is not None and self.live.remote:  # remote: r reconnects a dropped link
            self.control(lambda s: s.reconnect())
            return
        self.control(lambda s: s.stop_recording() if s.recording else s.start_recording())

    def action_profiler(self, name: str) -> None:
        """p/s: the profiler `name` (``py-spy``, ``scalene``) on the inference worker, on or off."""
        self.control(lambda s: s.profiler_toggle(name))

    def action_profiler_rate(self, step: int) -> None:
        """[ / ]: the running profiler's sampling rate one step down (-1) or up (1)."""
        self.control(lambda s: s.profiler_step_rate(step))

    def action_knob(self, name: str, direction: int) -> None:
        """A knob's key: the knob `name` one step down (-1) or up (1), or cycled."""
        self.control(lambda s: s.knob_step(name, direction))

    def action_pick_model(self) -> None:
        """o: the model picker (GGUF files of the cache and --models-dir, with size,
        quantization and cached perplexity); the chosen file reloads the worker. A
        remote session cycles the remote machine's files instead."""
        if self.live is not None and self.live.remote:  # the files are there: o cycles them
            self.control(lambda s: s.knob_step("model", 1))
            return
        s = self.session
        if s is None or s.spec is None:
            self.notify("no model in this session", severity="warning")
            return
        files = s.model_choices()
        if len(files) < 2:
            dirs = ", ".join(str(d) for d in s.models_dirs)
            self.notify(f"no other GGUF file in {dirs} (add --models-dir DIR)", severity="warning")
            return

        def chosen(path: str | None) -> None:
            if path:
                self.control(lambda s: s.set_knob("model", path))

        self.push_screen(ModelPicker(files, s.spec.model), chosen)

    # -- actions (replay) ------------------------------------------------------------------

    def action_play(self) -> None:
        """space (replay): play or pause the replay."""
        if self.replay is not None:
            self.replay.playing = not self.replay.playing

    def action_seek(self, seconds: float) -> None:
        """left/right (replay): move the position by `seconds` s (negative: back)."""
        if self.replay is not None:
            self.replay.seek_by(seconds)
            self.query_one(Charts).invalidate()

    def action_seek_to(self, where: int) -> None:
        """home/end (replay): to the start (`where` 0) or the end (-1)."""
        if self.replay is not None:
            self.replay.seek(0 if where == 0 else self.replay.end_ns)
            self.query_one(Charts).invalidate()

    def action_speed(self, up: int) -> None:
        """< / > (replay): the next slower (`up` 0) or faster (1) speed, 0.25× to 16×."""
        if self.replay is not None:
            sp = self.replay.faster(bool(up))
            self.notify(f"speed {sp:g}×", timeout=1)

    # -- common ------------------------------------------------------------------------------

    def action_toggle_log(self) -> None:
        """l: show or hide the event log."""
        log = self.query_one("#log", Log)
        log.display = not log.display

    def action_help(self) -> None:
        """?: the help screen, every key of this mode grouped (`help_groups`)."""
        self.push_screen(HelpScreen(self.help_groups()))

    def help_groups(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every binding of this mode as (key as the user types it, description), grouped."""
        groups: dict[str, list[tuple[str, str]]] = {g: [] for g in HELP_GROUPS}
        for b in self._bindings_list():
            group, desc = HELP_DESCRIPTIONS.get(b.id or "", ("app", b.description))
            groups[group].append((self.get_key_display(b), desc))
        return [(g.capitalize(), rows) for g, rows in groups.items()]

    def _bindings_list(self) -> list[Binding]:
        return [
            b
            for b in self.COMMON
            + (self.REPLAY_BINDINGS if self.replay is not None else self.LIVE_BINDINGS)
            if isinstance(b, Binding)
        ]


class LiveApp(AnubisApp):
    """The live monitor's keys: `AnubisApp.COMMON` and `AnubisApp.LIVE_BINDINGS`."""

    BINDINGS: ClassVar[list[BindingType]] = AnubisApp.COMMON + AnubisApp.LIVE_BINDINGS


class ReplayApp(AnubisApp):
    """A replay's keys: `AnubisApp.COMMON` and `AnubisApp.REPLAY_BINDINGS`."""

    BINDINGS: ClassVar[list[BindingType]] = AnubisApp.COMMON + AnubisApp.REPLAY_BINDINGS


def notice(e: Event) -> str:
    """An Event's notification text: its reason or error; a worker that died says how
    (signal or exit code) and its last log line; an attached server says which failed."""
    p = e.payload
    if e.kind != "worker_died":
        return str(p.get("reason") or p.get("error") or e.kind)
    if srv := p.get("server"):  # an attached server (attach.py)
        return f"the server at {srv} failed: {p.get('reason')}"
    how = p.get("signal") or f"exit {p.get('returncode')}"
    tail = p.get("log_tail") or []
    return f"inference worker died ({how})" + (f": {tail[-1]}" if tail else "")


def _raised_in(error: BaseException) -> str:
    """``marker (app.py:412)``: the innermost frame of `error`'s traceback outside Textual
    and the standard library ("" where there is none)."""
    skip = (str(Path(textual.__file__).parent), sysconfig.get_paths()["stdlib"])
    frames = [
        f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(skip)
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.name} ({Path(f.filename).name}:{f.lineno})"


def make_app(
    config: Config,
    live: LiveOptions | None = None,
    replay: Replay | None = None,
    state: LiveState | None = None,
) -> AnubisApp:
    """The one factory the CLI and the tests use."""
    if replay is not None:
        return ReplayApp(config, replay=replay)
    return LiveApp(config, live=live or LiveOptions(), state=state)
