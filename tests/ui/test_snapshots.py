"""Snapshots of the states a user sees (issue 22 item 7), rendered from committed recordings.

Each screen is fixed: a terminal size, a replay standing still at a fixed
position or a live state folded up to a fixed time, no wall clock on screen.
Beside each snapshot, a check of the one thing the state is about, so a
regenerated snapshot cannot quietly lose it. Regenerate with
``pytest tests/ui/test_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

from tests.ui import snap_apps
from tests.ui.test_app import text, until

SIZE = (120, 36)


def test_powercap_throttle(snap_compare):
    async def check(pilot) -> None:
        await until(pilot, lambda: "throttled" in text(pilot.app, "#warning"), 10, "warning")
        assert "power_cap" in text(pilot.app, "#throttle")

    assert snap_compare(snap_apps.powercap_app(), terminal_size=SIZE, run_before=check)


def test_powercap_throttle_80x24(snap_compare):
    assert snap_compare(snap_apps.powercap_app(), terminal_size=(80, 24))


def test_h100_profilers(snap_compare):
    async def check(pilot) -> None:
        await until(pilot, lambda: "scalene" in text(pilot.app, "#profiler"), 10, "scalene")
        assert "py-spy" in text(pilot.app, "#profiler")  # its finished segments

    assert snap_compare(snap_apps.profilers_app(), terminal_size=SIZE, run_before=check)


def test_knobs_run(snap_compare):
    async def check(pilot) -> None:
        await until(pilot, lambda: "knobs" in text(pilot.app, "#knobs"), 10, "knobs")

    assert snap_compare(snap_apps.knobs_app(), terminal_size=SIZE, run_before=check)


def test_paused(snap_compare):
    async def check(pilot) -> None:
        await until(pilot, lambda: "paused" in text(pilot.app, "#title"), 10, "paused")
        assert "—" in text(pilot.app, "#throughput").splitlines()[0]  # no tok/s while paused

    assert snap_compare(snap_apps.paused_app(), terminal_size=SIZE, run_before=check)


def test_remote_disconnected(snap_compare):
    app = snap_apps.remote_app()

    async def dropped(pilot) -> None:
        await until(
            pilot, lambda: app.session is not None and not app.session.connected, 30, "the drop"
        )
        await until(pilot, lambda: "disconnected" in text(app, "#title"), 10, "title says so")
        assert "ssh exited (255)" in text(app, "#title")
        # the connection_lost Event may come a frame after the title saw the link down
        await until(
            pilot,
            lambda: any("ssh exited (255)" in n.message for n in app._notifications),
            5,
            "the notification",
        )
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=dropped)


def test_help_screen_80x24(snap_compare):
    async def open_help(pilot) -> None:
        await until(pilot, lambda: "t=20s" in text(pilot.app, "#title"), 10, "the first frame")
        await pilot.press("question_mark")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "HelpScreen", 5, "help")

    assert snap_compare(snap_apps.live_app(), terminal_size=(80, 24), run_before=open_help)
