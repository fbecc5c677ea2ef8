"""Issue 22 item 5: an error in a key handler, a timer or a worker is shown and the app
goes on; the session is still stopped (device settings back) when the user quits."""

from __future__ import annotations

from anubis_tui.config import Config
from anubis_tui.session import Outcome
from anubis_tui.ui.app import LiveOptions, make_app
from tests.ui.test_app import until


class StubSession:
    """The control surface's methods the app calls here; `stop` counts its calls."""

    recording = None
    record_path = None
    spec = None

    def __init__(self) -> None:
        self.recorded: list[str] = []
        self.stops: list[str | None] = []

    def marker(self, label: str = "") -> Outcome:
        raise ValueError("the marker's sink is full")

    def toggle_pause(self) -> Outcome:
        return Outcome(True, "paused")

    def stop(self, reason: str | None = None) -> None:
        self.stops.append(reason)


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


def log_text(app) -> str:
    return "\n".join(app.query_one("#log").lines)


async def test_a_key_handler_that_raises_is_shown_and_the_app_goes_on(monkeypatch):
    app = make_app(Config(), live=LiveOptions(autostart=False))

    def broken(self) -> None:
        raise RuntimeError("knob table out of step")

    monkeypatch.setattr(type(app), "action_toggle_log", broken)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("l")
        await until(pilot, lambda: any("knob table" in m for m in messages(app)), 5, "notice")
        msg = next(m for m in messages(app) if "knob table" in m)
        assert msg.startswith("RuntimeError: knob table out of step (in broken (test_errors.py:")
        assert "error RuntimeError: knob table out of step" in log_text(app)
        assert app.is_running and app.return_code is None
        # the same key again within ERROR_REPEAT_S: counted, not a second notification
        await pilot.press("l")
        await pilot.pause(0.2)
        assert sum("knob table" in m for m in messages(app)) == 1
        # the app still answers keys
        await pilot.press("question_mark")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", 5, "help")
        await pilot.press("escape")
    assert app._exception is None  # nothing was left for Textual to re-raise


async def test_a_worker_that_raises_is_shown_and_quit_still_stops_the_session():
    app = make_app(Config(), live=LiveOptions(autostart=False))
    stub = StubSession()
    async with app.run_test(size=(100, 32)) as pilot:
        app.session = stub  # type: ignore[assignment]
        await pilot.press("m")  # the control worker calls marker(), which raises
        await until(
            pilot, lambda: any("sink is full" in m for m in messages(app)), 5, "worker error"
        )
        assert "ValueError: the marker's sink is full (in " in messages(app)[-1]
        assert app.is_running
        await pilot.press("space")  # the next key's worker runs and says what it did
        await until(pilot, lambda: "paused" in messages(app), 5, "next outcome")
        await pilot.press("q")
    assert stub.stops == ["quit"]
    assert app.return_code == 0


async def test_a_frame_that_raises_is_shown_once_per_repeat_window(monkeypatch):
    app = make_app(Config(), live=LiveOptions(autostart=False))
    calls: list[int] = []

    def draw(self, snap) -> None:
        calls.append(1)
        raise KeyError("channel")

    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause(0.2)
        monkeypatch.setattr(type(app), "draw", draw)
        await until(pilot, lambda: len(calls) >= 4, 10, "frames go on")
        assert sum("KeyError: 'channel' (in draw (test_errors.py:" in m for m in messages(app)) == 1
        assert app.is_running


async def test_an_error_while_stopping_still_quits():
    app = make_app(Config(), live=LiveOptions(autostart=False))
    stub = StubSession()

    def stop(reason=None):
        stub.stops.append(reason)
        raise OSError("device restore failed")

    stub.stop = stop  # type: ignore[method-assign]
    async with app.run_test(size=(100, 32)) as pilot:
        app.session = stub  # type: ignore[assignment]
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, 5, "exit")
    assert stub.stops == ["quit"]


def test_notices_say_what_failed():
    from anubis_tui.records import Event
    from anubis_tui.ui.app import notice

    died = {"signal": "SIGKILL", "log_tail": ["llama: out of memory"]}
    assert notice(Event(1, "worker_died", died)) == (
        "inference worker died (SIGKILL): llama: out of memory"
    )
    assert notice(Event(1, "worker_died", {"returncode": 3})) == "inference worker died (exit 3)"
    server = {"server": "http://h:8080", "reason": "connection refused"}
    assert notice(Event(1, "worker_died", server)) == (
        "the server at http://h:8080 failed: connection refused"
    )
    assert notice(Event(1, "sensor_lost", {"reason": "hwmon3 gone"})) == "hwmon3 gone"
    assert notice(Event(1, "sink_error", {"error": "disk full"})) == "disk full"
    assert notice(Event(1, "connection_lost", {})) == "connection_lost"


def test_an_error_textual_ends_the_app_on_still_stops_the_session():
    """An exception in a message handler is left to Textual (the app ends, code 1); `run`
    stops the session on the way out, so device settings are put back."""
    app = make_app(Config(), live=LiveOptions(autostart=False))
    stub = StubSession()

    def broken() -> None:
        raise RuntimeError("handler failed")

    async def auto_pilot(pilot) -> None:
        app.session = stub  # type: ignore[assignment]
        app.call_later(broken)  # runs as a message of the app's own loop
        await pilot.pause(5)

    app.run(headless=True, size=(100, 32), auto_pilot=auto_pilot)
    assert stub.stops == ["quit"]
    assert app.return_code == 1
