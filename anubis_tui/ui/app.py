"""The Textual app: live monitor and replay in one UI.

The app reads a `LiveState` and nothing else: a live session's bus feeds it
records, a replay feeds it the same records from a file. Panels redraw at a
steady 4 fps (text only when it changed); charts hold one bin per second and
redraw once a second. Blocking work (starting a session: discovery, the
worker) runs in a thread worker; nothing on the event loop touches a sensor,
a pipe or a file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Footer, Log, Sparkline, Static

from anubis_tui.analysis.live import NOTIFY_KINDS, LiveState, Snapshot, fmt
from anubis_tui.config import Config

UI_FPS = 4
RATE_STEPS = (1, 2, 5, 10, 20, 50, 100)


@dataclass
class LiveOptions:
    """What `anubis run` asked for."""

    spec: Any = None  # inference.worker.Spec, or None for sensors only
    model: Any = None  # inference.models.ModelFacts
    record_path: str | None = None
    log_path: Path | None = None
    discovery: dict[str, object] = field(default_factory=dict)
    autostart: bool = True  # False: show a LiveState fed by someone else (tests, demos)
    scalene_ready: bool = False
    pyspy_native: bool = False


class Panel(Static):
    """A bordered text panel that only re-renders when its text changes."""

    def __init__(self, title: str, **kw: Any) -> None:
        super().__init__("", **kw)
        self.border_title = title
        self._text = ""

    def show(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.update(text)


class AnubisApp(App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "anubis"

    COMMON: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("l", "toggle_log", "Log", id="log"),
    ]
    LIVE_BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause", "Pause", id="pause"),
        Binding("plus", "rate(1)", "+Hz", id="rate_up"),
        Binding("minus", "rate(-1)", "-Hz", id="rate_down"),
        Binding("r", "record", "Rec", id="record"),
        Binding("m", "marker", "Mark", id="marker"),
        Binding("p", "profiler('py-spy')", "py-spy", id="pyspy"),
        Binding("s", "profiler('scalene')", "scalene", id="scalene"),
        Binding("left_square_bracket", "profiler_rate(-1)", "[", id="prof_rate_down"),
        Binding("right_square_bracket", "profiler_rate(1)", "]", id="prof_rate_up"),
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
        replay: Any = None,
        state: LiveState | None = None,
    ) -> None:
        self.config = config
        self.live = live
        self.replay = replay
        self.state: LiveState = replay.state if replay is not None else (state or LiveState())
        self.session: Any = None
        self.controller: Any = None
        self.static: Any = None
        self._events_seen = 0
        self._bins_drawn = -1
        self._last_frame = time.monotonic()
        self.recording_path: str | None = None
        self.started_at = time.monotonic()
        super().__init__()
        if config.keys:
            self.set_keymap(dict(config.keys))

    # -- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        with Grid(id="panels"):
            yield Panel("throughput", id="throughput")
            yield Panel("power & energy", id="power")
            yield Panel("thermal", id="thermal")
            yield Panel("throttle", id="throttle")
            yield Panel("profiler", id="profiler")
            yield Panel("monitor", id="monitor")
        with Vertical(id="charts"):
            with Horizontal(classes="chart"):
                yield Static("W   ", classes="chart-label")
                yield Sparkline([], id="spark-power")
            with Horizontal(classes="chart"):
                yield Static("°C  ", classes="chart-label")
                yield Sparkline([], id="spark-temp")
            with Horizontal(classes="chart"):
                yield Static("tok/s", classes="chart-label")
                yield Sparkline([], id="spark-tps")
            yield Static("", id="segments")
        yield Static("", id="timeline")
        yield Static("", id="warning")
        log = Log(id="log", max_lines=500)
        log.display = False
        log.can_focus = False  # arrow keys belong to the replay, not to scrolling the log
        yield log
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1 / UI_FPS, self.frame)
        self.frame()  # the first frame now, not a timer period later
        if self.replay is None:
            self.query_one("#timeline").display = False
            if self.live is None or self.live.autostart:
                self.start_session()
        else:
            self.log_line(
                "replay: " + (self.replay.header.created_utc if self.replay.header else "stream")
            )

    def on_resize(self) -> None:
        # Taller charts where the terminal has the room; one line each at 80x24.
        tall = (self.size.height or 24) >= 40
        for chart in self.query(".chart"):
            chart.styles.height = 3 if tall else 1
        for spark in self.query(Sparkline):
            spark.styles.height = 3 if tall else 1

    # -- session (live) -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="session")
    def start_session(self) -> None:
        from anubis_tui.recording.writer import RecordingError, open_output
        from anubis_tui.session import Session

        opts = self.live or LiveOptions()
        try:
            session = Session(
                self.config,
                spec=opts.spec,
                model=opts.model,
                log_path=opts.log_path,
                discovery_config=opts.discovery,
            )
            session.add_sink(self.state.consume)
            self.state.consume(session.header)
            if opts.record_path:
                session.record_to(open_output(opts.record_path), path=opts.record_path)
                self.recording_path = opts.record_path
            session.start()
        except (RecordingError, OSError) as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=10)
            return
        self.session = session
        from anubis_tui.profilers.controller import ProfilerController

        self.controller = ProfilerController(session, native=opts.pyspy_native)
        if opts.model is not None:
            from anubis_tui.profilers.static import estimate

            # The bandwidth copy test runs once per machine (cached), here off the event loop.
            gpu_layers = opts.spec.gpu_layers if opts.spec is not None else 0
            self.static = estimate(opts.model.file_size, gpu_layers=gpu_layers)
        if opts.scalene_ready and opts.spec is not None:
            msg = self.controller.make_scalene_ready()
            self.call_from_thread(self.notify, msg, timeout=4)

    def stop_session(self) -> None:
        if self.controller is not None:
            self.controller.shutdown()
        if self.session is not None:
            self.session.stop()
            self.session = None

    async def action_quit(self) -> None:
        self.stop_session()
        self.exit(0)

    # -- frames -----------------------------------------------------------------------

    def frame(self) -> None:
        now = time.monotonic()
        if self.replay is not None:
            self.replay.advance(now - self._last_frame)
            self.state = self.replay.state
        self._last_frame = now
        snap = self.state.snapshot()
        with self.batch_update():
            self.draw(snap)
        self.pump_events()

    def pump_events(self) -> None:
        events, self._events_seen = self.state.new_events(self._events_seen)
        for e in events:
            line = f"{e.t / 1e9:8.1f}s {e.kind} " + " ".join(
                f"{k}={v}" for k, v in e.payload.items() if k not in ("log_tail", "system_info")
            )
            self.log_line(line[:200])
            sev = NOTIFY_KINDS.get(e.kind)
            if sev is not None and self.replay is None:
                msg = e.payload.get("reason") or e.payload.get("error") or e.kind
                if e.kind == "worker_died":
                    how = e.payload.get("signal") or f"exit {e.payload.get('returncode')}"
                    tail = e.payload.get("log_tail") or []
                    msg = f"inference worker died ({how})" + (f": {tail[-1]}" if tail else "")
                self.notify(str(msg)[:300], title=e.kind.replace("_", " "), severity=sev, timeout=8)  # type: ignore[arg-type]

    def log_line(self, line: str) -> None:
        self.query_one("#log", Log).write_line(line)

    def draw(self, s: Snapshot) -> None:
        q = self.query_one
        mode = "REPLAY" if self.replay is not None else "LIVE"
        host = s.header.host.get("hostname", "") if s.header else ""
        model = (s.header.model.get("name") if s.header else None) or "no model"
        rec = f"  ● rec {Path(self.recording_path).name}" if self.recording_path else ""
        paused = "  ⏸ paused" if s.paused else ""
        q("#title", Static).update(f" anubis {mode}  {host}  {model}  t={s.t_s:.0f}s{rec}{paused}")
        q("#throughput", Panel).show(
            f"decode  {fmt(s.decode_tps, '.1f')} tok/s\n"
            f"prompt  {fmt(s.prompt_tps, '.0f')} tok/s\n"
            f"TTFT    {fmt(s.ttft_ms, '.0f')} ms (med {fmt(s.ttft_median_ms, '.0f')})\n"
            f"{s.requests} requests, {s.tokens} tokens"
        )
        q("#power", Panel).show(self._power_text(s))
        q("#thermal", Panel).show(self._thermal_text(s))
        q("#throttle", Panel).show(self._throttle_text(s))
        q("#profiler", Panel).show(self._profiler_text(s))
        sc = s.self_cost
        q("#monitor", Panel).show(
            f"sampler {fmt(sc['rate_hz'], '.1f')}/{self.config.rate_hz:g} Hz\n"
            f"p99 late {fmt(sc['jitter_p99_s'] and sc['jitter_p99_s'] * 1e3, '.2f')} ms\n"
            f"anubis  {fmt(sc['anubis_cpu'] and sc['anubis_cpu'] * 100, '.1f')} % CPU\n"
            f"worker  {fmt(sc['worker_cpu'] and sc['worker_cpu'] * 100, '.0f')} % CPU"
        )
        warn = q("#warning", Static)
        warn.update(f" ⚠ {s.throttle_warning}" if s.throttle_warning else "")
        warn.display = bool(s.throttle_warning)
        if len(s.history_tps) != self._bins_drawn:
            self._bins_drawn = len(s.history_tps)
            self._draw_charts(s)
        if self.replay is not None:
            self._draw_timeline()

    def _power_text(self, s: Snapshot) -> str:
        ch = s.system_channel
        est = " est." if ch is not None and ch.method == "estimated" else ""
        lines = [
            f"system {fmt(s.system_power, '.1f', ' W')}{est}",
            f"  from {ch.scope if ch else '—'}",
            f"energy {fmt(s.energy_j, '.1f', ' J')}{est}",
            f"J/tok  {fmt(s.jpt_recent, '.3f')}{est}",
        ]
        for v in s.power[:3]:
            m = v.channel.method
            tag = (
                ("ctr" if v.channel.meta.get("energy_channel") else "der")
                if m == "derived"
                else {"instant": "inst", "estimated": "est", "counter": "ctr"}.get(m, "avg")
            )
            name = v.channel.id.split(".")[-2] if "." in v.channel.id else v.channel.id
            lines.append(f"{name[:10]:<10}{fmt(v.value, '6.1f')} W {tag}")
        return "\n".join(lines)

    def _thermal_text(self, s: Snapshot) -> str:
        if not s.temps:
            return "no temperature sensor"
        lines = []
        for v in sorted(s.temps, key=lambda v: -(v.value or -1e9))[:5]:
            m = v.channel.meta
            lim = m.get("critical_c") or m.get("trip_c") or m.get("max_c")
            label = v.channel.label
            chip = v.channel.meta.get("chip")
            if chip and label.startswith(f"{chip} "):
                label = label[len(chip) + 1 :]
            lines.append(
                f"{label[:11]:<11}{fmt(v.value, '5.1f')}°C" + (f"/{lim:.0f}" if lim else "")
            )
        return "\n".join(lines)

    def _throttle_text(self, s: Snapshot) -> str:
        if not s.throttle:
            return "no throttle flags on this machine"
        lines = []
        for v in s.throttle[:4]:
            names = list(dict.fromkeys(v.channel.meta.get("flags", {}).values()))
            lit = []
            for n in names:
                if n == "idle":
                    continue
                on = n in v.active
                share = v.share.get(n, 0.0)
                if on or share > 0:
                    lit.append(f"[reverse]{n}[/]" if on else f"{n} {share:.0%}")
            occurred = f" boot:{','.join(v.occurred)}" if v.occurred else ""
            lines.append(f"{v.channel.id[:12]:<12} " + (" ".join(lit) or "ok") + occurred)
        return "\n".join(lines)

    def _profiler_text(self, s: Snapshot) -> str:
        seg = s.segment
        ctl = self.controller
        head = "off"
        if seg is not None and seg.profiler:
            rate = f" @ {seg.rate_hz:g} Hz" if seg.rate_hz else ""
            head = f"{seg.profiler}{rate} for {seg.seconds:.0f}s"
        lines = [head]
        if seg is not None and seg.profiler and s.baseline is not None:
            b = s.baseline
            grey = not (seg.enough and b.enough)
            dt = pct(seg.decode_tps, b.decode_tps)
            dw = diff(seg.power_w, b.power_w)
            dj = pct(seg.j_per_token, b.j_per_token)
            dc = diff(seg.temp_max, b.temp_max)
            spread = seg.tps_spread
            noise = ""
            if spread and b.decode_tps:
                noise = " ±" + fmt(100 * spread / b.decode_tps, ".0f", "%")
            txt = (
                f"Δtok/s {fmt(dt, '+.0f', '%')}{noise} ΔW {fmt(dw, '+.1f')}\n"
                f"ΔJ/tok {fmt(dj, '+.0f', '%')} Δ°C {fmt(dc, '+.0f')}"
            )
            if seg.throttled or b.throttled:
                txt += f" [b]throttle: {','.join(sorted(seg.throttled | b.throttled))}[/]"
            lines.append(f"[dim]{txt}  (needs ≥3 s, ≥50 tok)[/]" if grey else txt)
        cpu = s.self_cost.get("profiler_cpu")
        if cpu is not None or (seg is not None and seg.profiler):
            n = seg.samples_collected if seg is not None else None
            if n is None and seg is not None and seg.profiler and seg.rate_hz:
                n_txt = f"~{seg.rate_hz * seg.seconds:.0f}"  # py-spy tells the count at stop
            else:
                n_txt = "—" if n is None else str(n)
            lines.append(f"own CPU {fmt(cpu and cpu * 100, '.0f', '%')} samples {n_txt}")
        if ctl is not None:
            for name, count in ctl.hot_frames()[:2]:
                lines.append(f"hot {name[:26]} ×{count}")
        if self.static is not None:
            lines.append(self.static.line(s.decode_tps))
        return "\n".join(lines)

    def _draw_charts(self, s: Snapshot) -> None:
        width = max(10, self.query_one("#spark-tps", Sparkline).size.width or 60)
        for wid, data in (
            ("#spark-power", s.history_power),
            ("#spark-temp", s.history_temp),
            ("#spark-tps", s.history_tps),
        ):
            tail = [0.0 if math.isnan(x) else x for x in data[-width:]]
            # Left-pad to the width: one column is one second on every chart and the strip.
            pad = min(tail) if tail else 0.0
            self.query_one(wid, Sparkline).data = [pad] * (width - len(tail)) + tail
        n = width
        strip = [" "] * n
        first = len(s.history_tps) - n
        for seg in s.segments:
            if seg.profiler is None:
                continue
            a = int(seg.start_ns // 1_000_000_000) - first
            b = int(seg.end_ns // 1_000_000_000) - first
            for i in range(max(0, a), min(n, b + 1)):
                strip[i] = "▀"
        for m in s.history_marks:
            i = m - first
            if 0 <= i < n:
                strip[i] = "│"
        self.query_one("#segments", Static).update("      " + "".join(strip))

    def _draw_timeline(self) -> None:
        rp = self.replay
        end = max(1, rp.end_ns)
        width = max(20, (self.size.width or 80) - 30)
        pos = int(rp.pos_ns / end * (width - 1))
        bar = ["─"] * width
        for t, kind in rp.markers():
            i = int(t / end * (width - 1))
            bar[i] = "│" if kind == "marker" else "▀"
        bar[pos] = "●"
        state = "▶" if rp.playing else "⏸"
        live = " LIVE" if rp.growing and rp.pos_ns >= rp.end_ns - 1_000_000_000 else ""
        self.query_one("#timeline", Static).update(
            f" {state} {rp.pos_ns / 1e9:6.1f}/{end / 1e9:.1f}s {rp.speed:g}×{live} " + "".join(bar)
        )

    # -- actions (live) ------------------------------------------------------------------

    def action_pause(self) -> None:
        w = self.session.worker if self.session is not None else None
        if w is None:
            self.notify("no inference running (started with --no-model?)", severity="warning")
            return
        (w.resume if self.state.paused else w.pause)()

    def action_rate(self, direction: int) -> None:
        if self.session is None:
            return
        sampler = self.session.sampler
        cur = sampler.target_rate_hz  # two quick presses step twice, not once
        cap = sampler.max_useful_rate_hz
        if direction > 0:
            nxt = next((r for r in RATE_STEPS if r > cur), cur)
            if nxt > cap:
                self.notify(
                    f"sources here update at most {cap:g} Hz: sampling faster than "
                    f"{cur:g} Hz would only repeat values",
                    severity="warning",
                )
                return
        else:
            nxt = next((r for r in reversed(RATE_STEPS) if r < cur), cur)
        if nxt != cur:
            sampler.set_rate(nxt)
            self.config = self.config.replace(rate_hz=float(nxt))
            self.notify(f"sampling at {nxt:g} Hz", timeout=2)

    def action_marker(self) -> None:
        if self.session is not None:
            self.session.marker(f"key m at {self.state.t / 1e9:.1f}s")
            self.notify("marker", timeout=1)

    def action_record(self) -> None:
        if self.session is None:
            return
        self.toggle_recording()

    @work(thread=True, group="record")
    def toggle_recording(self) -> None:
        from anubis_tui.recording.format import default_path
        from anubis_tui.recording.writer import RecordingError, open_output
        from anubis_tui.records import Footer as FooterRec

        s = self.session
        if s.writer is not None and s.writer.error is None and self.recording_path:
            w = s.writer
            s.bus.sinks.remove(w.submit)
            s.writer = None
            w.close(FooterRec(s.bus.now(), {"clean": True, "stopped_by": "user"}))
            path, self.recording_path = self.recording_path, None
            self.call_from_thread(self.notify, f"recording saved: {path}")
            return
        path = default_path(self.config.record_dir)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            s.record_to(open_output(path), path=path)
        except RecordingError as e:
            self.call_from_thread(self.notify, str(e), severity="error")
            return
        self.recording_path = path
        self.call_from_thread(self.notify, f"recording to {path}")

    def action_profiler(self, name: str) -> None:
        if self.controller is None:
            self.notify(f"{name}: no profiler controller in this session", severity="warning")
            return
        self.run_profiler_action("toggle", name)

    def action_profiler_rate(self, step: int) -> None:
        if self.controller is None:
            self.notify("no profiler running", severity="warning")
            return
        self.run_profiler_action("rate", step)

    @work(thread=True, group="profiler", exclusive=True)
    def run_profiler_action(self, what: str, arg: Any) -> None:
        ctl = self.controller
        msg = ctl.toggle(arg) if what == "toggle" else ctl.step_rate(arg)
        if msg:
            self.call_from_thread(self.notify, msg, timeout=4)

    # -- actions (replay) ------------------------------------------------------------------

    def action_play(self) -> None:
        self.replay.playing = not self.replay.playing

    def action_seek(self, seconds: float) -> None:
        self.replay.seek_by(seconds)
        self._bins_drawn = -1

    def action_seek_to(self, where: int) -> None:
        self.replay.seek(0 if where == 0 else self.replay.end_ns)
        self._bins_drawn = -1

    def action_speed(self, up: int) -> None:
        sp = self.replay.faster(bool(up))
        self.notify(f"speed {sp:g}×", timeout=1)

    # -- common ------------------------------------------------------------------------------

    def action_toggle_log(self) -> None:
        log = self.query_one("#log", Log)
        log.display = not log.display

    def action_help(self) -> None:
        keys = ", ".join(f"{b.key}: {b.description}" for b in self._bindings_list())
        self.notify(keys, title="keys", timeout=10)

    def _bindings_list(self) -> list[Binding]:
        return [
            b
            for b in self.COMMON
            + (self.REPLAY_BINDINGS if self.replay is not None else self.LIVE_BINDINGS)
            if isinstance(b, Binding)
        ]


def pct(x: float | None, y: float | None) -> float | None:
    return None if x is None or not y else 100 * (x - y) / y


def diff(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


class LiveApp(AnubisApp):
    BINDINGS: ClassVar[list[BindingType]] = AnubisApp.COMMON + AnubisApp.LIVE_BINDINGS


class ReplayApp(AnubisApp):
    BINDINGS: ClassVar[list[BindingType]] = AnubisApp.COMMON + AnubisApp.REPLAY_BINDINGS


def make_app(
    config: Config,
    live: LiveOptions | None = None,
    replay: Any = None,
    state: LiveState | None = None,
) -> AnubisApp:
    """The one factory the CLI and the tests use."""
    if replay is not None:
        return ReplayApp(config, replay=replay)
    return LiveApp(config, live=live or LiveOptions(), state=state)
