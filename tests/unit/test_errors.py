"""`AnubisError`: every anubis exception derives from it, and the CLI turns it into one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import anubis_tui
from anubis_tui import cli
from anubis_tui.errors import AnubisError, one_line

SKIP = ("anubis_tui.ui", "anubis_tui.__main__", "anubis_tui.inference.worker")


def anubis_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for m in pkgutil.walk_packages(anubis_tui.__path__, "anubis_tui."):
        if m.name.startswith(SKIP):
            continue
        mod = importlib.import_module(m.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == m.name:
                found[f"{m.name}.{name}"] = obj
    return found


def test_every_anubis_exception_derives_from_anubis_error():
    found = anubis_exceptions()
    assert len(found) >= 20  # the walk found them (22 when this was written)
    assert [n for n, c in found.items() if not issubclass(c, AnubisError)] == []


def test_the_built_in_kinds_are_kept_for_callers_that_catch_them():
    from anubis_tui.config import ConfigError, NotRegularFile
    from anubis_tui.records import RecordError

    assert issubclass(RecordError, ValueError) and issubclass(ConfigError, ValueError)
    e = NotRegularFile("/tmp/x", is_dir=True)
    assert isinstance(e, OSError) and str(e) == "/tmp/x is a directory"


def test_a_message_over_several_lines_is_one():
    assert one_line("  first\n\n  second line \r\n") == "first / second line"
    assert str(AnubisError("cannot load\nllama said: no\n")) == "cannot load / llama said: no"


def test_main_prints_any_anubis_error_once_with_status_2(monkeypatch, capsys):
    from anubis_tui.cli import sensors
    from anubis_tui.inference.models import ModelError

    def boom(args, config):
        raise ModelError("model.gguf: not a GGUF file\n(magic b'xxxx')")

    monkeypatch.setattr(sensors, "cmd_sensors", boom)
    monkeypatch.setattr(cli, "build_parser", _parser_with(sensors, boom))
    assert cli.main(["sensors"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "anubis: model.gguf: not a GGUF file / (magic b'xxxx')"
    assert not any("Traceback" in ln for ln in err)


def _parser_with(mod, handler):
    build = cli.build_parser

    def parser():
        p = build()
        p.set_defaults(handler=handler)
        sub = next(a for a in p._actions if a.dest == "command")
        sub.choices[mod.__name__.rsplit(".", 1)[1]].set_defaults(handler=handler)
        return p

    return parser


@pytest.mark.parametrize("kind", [KeyboardInterrupt, BrokenPipeError])
def test_main_keeps_its_other_exits(monkeypatch, kind):
    from anubis_tui.cli import sensors

    def boom(args, config):
        raise kind()

    monkeypatch.setattr(cli, "build_parser", _parser_with(sensors, boom))
    assert cli.main(["sensors"]) == (130 if kind is KeyboardInterrupt else 0)
