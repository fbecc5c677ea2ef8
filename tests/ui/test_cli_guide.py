"""The command line a user meets: global flags anywhere, a guide for --help, clean defaults."""

from __future__ import annotations

import subprocess

from anubis_tui.cli import COMMANDS, build_parser, with_command
from anubis_tui.config import Config, default_record_dir
from tests.conftest import ANUBIS, cli_env, errors

NAMES = [m.__name__.rsplit(".", 1)[1] for m in COMMANDS]


def test_no_command_means_run_after_the_global_options():
    assert with_command(["--no-record"], NAMES) == ["run", "--no-record"]
    assert with_command(["--plugins", "p", "--no-record"], NAMES) == [
        "--plugins", "p", "run", "--no-record",
    ]  # fmt: skip
    assert with_command([], NAMES) == ["run"]
    assert with_command(["report", "x.msgpack"], NAMES) == ["report", "x.msgpack"]
    assert with_command(["--help"], NAMES) == ["--help"]


def test_plugins_is_accepted_before_and_after_the_command():
    p = build_parser()
    a = p.parse_args(["--plugins", "a", "record", "--plugins", "b", "--duration", "1"])
    assert a.plugins == ["a"] and a.plugins_after == ["b"]
    a = p.parse_args(with_command(["--no-record", "--no-model"], NAMES))
    assert a.command == "run" and a.no_record and a.no_model


def test_help_reads_as_a_guide():
    out = subprocess.run([*ANUBIS, "--help"], capture_output=True, text=True, env=cli_env())
    assert out.returncode == 0
    for said in ("what it costs", "examples:", "anubis --no-record", "Recordings go to",
                 "anubis COMMAND --help"):  # fmt: skip
        assert said in out.stdout, said


def test_recordings_default_to_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_record_dir() == str(tmp_path / "anubis" / "recordings")
    assert Config().record_dir == str(tmp_path / "anubis" / "recordings")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # ignored, as the spec says
    assert default_record_dir().endswith("/.local/share/anubis/recordings")


def test_sweep_refuses_an_unknown_profiler_before_the_model_loads(tmp_path):
    p = subprocess.run(
        [*ANUBIS, "sweep", "--profilers", "foo", "-o", str(tmp_path / "s.msgpack")],
        capture_output=True,
        text=True,
        env=cli_env("empty_container"),
        timeout=60,
    )
    err = errors(p.stderr)
    assert p.returncode == 2 and "unknown profiler 'foo'" in err and err.count("\n") == 1
    assert not (tmp_path / "s.msgpack").exists()  # refused before anything was opened
    assert not (tmp_path / "s.msgpack.log").exists()
