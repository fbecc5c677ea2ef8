"""The Textual app, driven with Pilot; conditions are polled, never slept on."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from anubis_tui.analysis.live import LiveState
from anubis_tui.config import Config
from anubis_tui.inference.models import default_model, read_gguf
from anubis_tui.inference.worker import Spec
from anubis_tui.recording.reader import read_all
from anubis_tui.ui.app import LiveOptions, make_app
from tests.conftest import FIXTURES
from tests.ui.snap_apps import RECORDING, live_app, replay_app

APP_SIZE = (100, 32)


async def until(pilot, pred, timeout: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await pilot.pause(0.1)


def text(app, wid: str) -> str:
    w = app.query_one(wid)
    return w.shown() if hasattr(w, "shown") else str(w.render())


async def test_panels_fill_from_a_recording():
    app = replay_app()
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(
            pilot,
            lambda: (
                "tok/s" in text(app, "#throughput")
                and "—" not in text(app, "#throughput").splitlines()[0]
            ),
            what="throughput",
        )
        assert "W" in text(app, "#power") and "est." in text(app, "#power")
        assert "Hz" in text(app, "#monitor")
        assert "/" in text(app, "#timeline") and "s" in text(app, "#timeline")


async def test_replay_seek_play_and_speed():
    app = replay_app()
    rp = app.replay
    async with app.run_test(size=APP_SIZE) as pilot:
        start = rp.pos_ns
        await pilot.press("right")
        await until(pilot, lambda: rp.pos_ns == start + 5_000_000_000, what="seek +5 s")
        await pilot.press("left", "left")
        await until(pilot, lambda: rp.pos_ns == start - 5_000_000_000, what="seek -5 s")
        # seeking back rebuilt the state: exactly the tokens stamped up to the position
        want = sum(
            r.count for r in rp.records if getattr(r, "phase", "") == "decode" and r.t <= rp.pos_ns
        )
        assert rp.state.tokens == want > 0
        await pilot.press("home")
        await until(pilot, lambda: rp.pos_ns == 0)
        await pilot.press("end")
        await until(pilot, lambda: rp.pos_ns == rp.end_ns)
        await pilot.press("greater_than_sign")
        assert rp.speed == 2.0
        await pilot.press("less_than_sign", "less_than_sign")
        assert rp.speed == 0.5
        await pilot.press("space")
        assert rp.playing is True


async def test_live_rate_keys_make_events_and_say_when_sources_are_slower(monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "intel_laptop"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    app = make_app(Config(), live=LiveOptions())
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(pilot, lambda: app.session is not None, what="session")
        await pilot.press("plus")
        await until(
            pilot,
            lambda: any(
                e.kind == "rate" and e.payload["sampler_hz"] == 20 for e in app.state.events
            ),
            what="rate event",
        )
        await pilot.press("minus", "minus")
        await until(
            pilot,
            lambda: any(
                e.payload.get("sampler_hz") == 5 for e in app.state.events if e.kind == "rate"
            ),
        )
        await pilot.press("m")
        await until(pilot, lambda: any(e.kind == "marker" for e in app.state.events))
        await pilot.press("q")


async def test_live_rate_is_capped_where_sources_update_slower(monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    app = make_app(Config(rate_hz=2.0), live=LiveOptions())
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(pilot, lambda: app.session is not None)
        await pilot.press("plus")
        await until(
            pilot,
            lambda: any("update at most" in n.message for n in app._notifications),
            what="cap notice",
        )
        assert app.session.rate_hz == 2.0
        await pilot.press("q")


@pytest.mark.slow
async def test_pause_stops_tokens_and_worker_crash_is_a_notification(tmp_path, monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    model = default_model()
    spec = Spec(model=str(model), t0_ns=0, threads=1, max_tokens=64)
    app = make_app(
        Config(), live=LiveOptions(spec=spec, model=read_gguf(model), log_path=tmp_path / "w.log")
    )
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(pilot, lambda: app.state.tokens > 0, 60, "tokens")
        await pilot.press("space")
        await until(pilot, lambda: app.state.paused, 30, "paused")
        n = app.state.tokens
        await asyncio.sleep(1.0)
        assert app.state.tokens == n
        assert "paused" in text(app, "#title")
        await pilot.press("space")
        await until(pilot, lambda: app.state.tokens > n, 30, "tokens after resume")
        os.kill(app.session.worker_pid(), signal.SIGKILL)
        await until(
            pilot,
            lambda: any("worker died" in n.message for n in app._notifications),
            10,
            "crash notice",
        )
        await pilot.press("q")


def test_live_state_from_the_committed_recording_is_consistent():
    records, _ = read_all(RECORDING)
    st = LiveState()
    st.consume_many(records)
    snap = st.snapshot()
    assert snap.tokens == sum(r.count for r in records if getattr(r, "phase", "") == "decode")
    assert snap.requests == sum(1 for r in records if getattr(r, "kind", "") == "request_end")
    assert snap.ended


def test_snapshot_live_80x24(snap_compare):
    assert snap_compare(live_app(), terminal_size=(80, 24))


def test_snapshot_live_160x48(snap_compare):
    assert snap_compare(live_app(), terminal_size=(160, 48))


def test_snapshot_live_200x60(snap_compare):
    assert snap_compare(live_app(), terminal_size=(200, 60))


def test_snapshot_replay_80x24(snap_compare):
    assert snap_compare(replay_app(), terminal_size=(80, 24))


@pytest.mark.slow
async def test_p_starts_pyspy_and_the_overhead_panel_fills(tmp_path, monkeypatch):
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / "empty_container"))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = default_model()
    spec = Spec(model=str(model), t0_ns=0, threads=1, max_tokens=64)
    app = make_app(
        Config(), live=LiveOptions(spec=spec, model=read_gguf(model), log_path=tmp_path / "w.log")
    )
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(pilot, lambda: app.state.tokens > 60 and app.session is not None, 60)
        await asyncio.sleep(3.0)  # a baseline of at least 3 s
        await pilot.press("p")
        await until(pilot, lambda: any(e.kind == "profiler_on" for e in app.state.events), 20)
        await until(pilot, lambda: "py-spy@100," in text(app, "#profiler"), 5)
        # the overhead fills in once the segment holds enough data (≥ 3 s, ≥ 50 tokens)
        await until(
            pilot,
            lambda: "Δtok/s" in text(app, "#profiler") and app.state.snapshot().segment.enough_data,
            30,
            "overhead figures",
        )
        assert "ceiling" in text(app, "#profiler") and "tok/s" in text(app, "#profiler")
        await pilot.press("right_square_bracket")
        await until(
            pilot,
            lambda: any(
                e.kind == "profiler_rate" and e.payload["rate_hz"] == 250 for e in app.state.events
            ),
            20,
            "rate change",
        )
        await pilot.press("p")
        await until(pilot, lambda: any(e.kind == "profiler_off" for e in app.state.events), 20)
        segs = app.state.snapshot().segments
        assert [s.profiler for s in segs] == [None, "py-spy", "py-spy", None]
        assert [s.rate_hz for s in segs[1:3]] == [100.0, 250.0]
        # after p turns py-spy off, the panel still shows what each py-spy segment cost
        await until(pilot, lambda: "py-spy@250" in text(app, "#profiler"), 5, "finished rows")
        assert "py-spy@100" in text(app, "#profiler")
        await pilot.press("q")


async def test_no_color_and_16_colours_render(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = replay_app()
    assert app.no_color  # Textual turns the whole app monochrome
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "tok/s" in text(app, "#throughput"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TEXTUAL_COLOR_SYSTEM", "standard")  # 16 colours
    app = replay_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "tok/s" in text(app, "#throughput"))


async def test_keys_can_be_remapped_from_config():
    app = make_app(Config(keys={"marker": "M"}), live=LiveOptions(autostart=False))
    async with app.run_test(size=APP_SIZE) as pilot:
        await pilot.pause(0.2)
        keys = {b.binding.id: b.binding.key for b in app.active_bindings.values() if b.binding.id}
        assert keys.get("marker") == "M"


async def test_model_picker_lists_gguf_files_and_returns_the_choice(tmp_path):
    from anubis_tui.ui.screens import ModelPicker

    a, b = tmp_path / "a-q4_0.gguf", tmp_path / "b-q8_0.gguf"
    a.write_bytes(b"GGUF")
    b.write_bytes(b"GGUF" * 10)
    app = make_app(Config(), live=LiveOptions(autostart=False))
    chosen: list = []
    async with app.run_test(size=APP_SIZE) as pilot:
        app.push_screen(ModelPicker([a, b], str(a)), chosen.append)
        await pilot.pause(0.2)
        listing = app.screen.query_one("#models")
        assert listing.option_count == 2
        assert "(running)" in str(listing.get_option_at_index(0).prompt)
        await pilot.press("down", "enter")
        await until(pilot, lambda: chosen == [str(b)], 5, "the second model chosen")
        app.push_screen(ModelPicker([a, b], str(a)), chosen.append)
        await pilot.pause(0.2)
        await pilot.press("escape")
        await until(pilot, lambda: chosen == [str(b), None], 5, "escape cancels")


async def test_help_screen_groups_every_binding_with_keys_as_typed():
    app = make_app(Config(), live=LiveOptions(autostart=False))
    async with app.run_test(size=(100, 50)) as pilot:
        groups = dict(app.help_groups())
        assert set(groups) >= {"Inference", "Sampling", "Profilers", "Knobs", "Recording", "App"}
        keys = {k for rows in groups.values() for k, _ in rows}
        assert {"?", "[", "]", "t", "T", "w", "W", "o"} <= keys
        assert not any("_" in k and len(k) > 3 for k in keys), keys  # no question_mark
        await pilot.press("question_mark")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", 5)
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ != "HelpScreen", 5)


async def test_power_panel_names_what_system_power_leaves_out(monkeypatch, tmp_path):
    """NVIDIA/nvidia-docker#40 (a GPU whose power NVML does not support) on the nct6793 server
    of netdata#23673: the panel says the GPU is not covered, and the impossible temperature is
    a warning once, never a reading."""
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(FIXTURES / "field" / "nct6793_bogus_temp", root, symlinks=True)
    fakes = FIXTURES.parent / "fakes"
    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(root))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(fakes / "nvml_quadro_k2100m.py"))
    app = make_app(Config(), live=LiveOptions())
    async with app.run_test(size=APP_SIZE) as pilot:
        await until(pilot, lambda: app.session is not None, what="session")
        await until(pilot, lambda: "GPU0" in text(app, "#power"), what="GPU0 not covered")
        assert "not covered" in text(app, "#power")
        log = "\n".join(app.query_one("#log").lines)
        assert "not covered: GPU0 (Quadro K2100M) power not measured: NVML Not Supported" in log
        await until(
            pilot,
            lambda: any(e.kind == "implausible_reading" for e in app.state.events),
            what="implausible_reading",
        )
        assert "3892313" not in text(app, "#thermal")
        await pilot.press("q")
