"""The command line: one module per command; argparse lives here and nowhere else.

Bad input ends in one clear line on stderr and a non-zero exit, never a
traceback: what the user can fix raises an `AnubisError` (`CliError` for a flag
that does not fit), and `main` alone turns it into ``anubis: <message>``, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from anubis_tui import __version__
from anubis_tui.cli import (
    agent,
    bench,
    compare,
    db,
    encoding,
    export,
    models,
    record,
    replay,
    report,
    restore,
    run,
    sensors,
    sweep,
)
from anubis_tui.cli.common import Parser
from anubis_tui.config import load_config
from anubis_tui.errors import AnubisError
from anubis_tui.plugins import add_plugin_dirs

COMMANDS = (
    run, replay, record, report, export, sensors, bench, restore, sweep, compare, agent, db,
    models,
)  # fmt: skip

GUIDE = """\
anubis runs a small language model on this machine (llama.cpp; the default model
ships with anubis) and shows, live, what it costs: watts, joules per token,
temperatures, throttling, and what a profiler adds on top. Every session is
recorded, so you can replay it, report on it, compare it and export it.
"""

EXAMPLES = """\
examples:
  anubis                          the live monitor on the default model (? lists the keys)
  anubis --no-record              the same, without writing a recording
  anubis run --model m.gguf       another GGUF model
  anubis record --duration 60     a headless minute, recorded
  anubis report FILE              what a recording measured, setting by setting
  anubis replay FILE              a recording in the live view
  anubis sensors                  which power, thermal and throttle sensors this machine has

Recordings go to $XDG_DATA_HOME/anubis/recordings/ (~/.local/share/anubis/recordings/)
unless --record (run) or -o (record) says where. The config file is
$XDG_CONFIG_HOME/anubis/config.toml. `anubis COMMAND --help` describes each command.
Global options (--plugins) may come before or after the command; options of
`run` work without the word `run`.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``anubis`` parser: global flags and one subparser per module in `COMMANDS`."""
    p = Parser(
        prog="anubis",
        description=GUIDE,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"anubis {__version__}")
    plugins_help = "load plugins (sinks, sources, profilers) from a folder without installing them"
    p.add_argument("--plugins", action="append", default=[], metavar="DIR", help=plugins_help)
    sub = p.add_subparsers(dest="command", parser_class=Parser, title="commands", metavar="COMMAND")
    for mod in COMMANDS:
        mod.add_parser(sub)
    for cmd in sub.choices.values():  # the global option after the command too
        cmd.add_argument(
            "--plugins", dest="plugins_after", action="append", default=[], metavar="DIR",
            help=plugins_help,
        )  # fmt: skip
    return p


def with_command(argv: Sequence[str], commands: Sequence[str]) -> list[str]:
    """`argv` with ``run`` put where no command was named: after the global options, before
    the first other argument (so ``anubis --no-record`` is ``anubis run --no-record``)."""
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in commands or a in ("-h", "--help", "--version"):
            return args
        if a == "--plugins":
            i += 2
        elif a.startswith("--plugins="):
            i += 1
        else:
            break
    return [*args[:i], "run", *args[i:]]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default sys.argv), run the command; returns the exit status (2: an
    AnubisError, printed as one line; 130: Ctrl-C).
    """
    encoding.install()  # a non-UTF-8 locale gets ASCII stand-ins, never UnicodeEncodeError
    parser = build_parser()
    names = [m.__name__.rsplit(".", 1)[1] for m in COMMANDS]  # each module is its command
    args = parser.parse_args(with_command(sys.argv[1:] if argv is None else argv, names))
    args.plugins = [*args.plugins, *getattr(args, "plugins_after", [])]
    if hook := os.environ.get("ANUBIS_NVML_MODULE"):
        # A test hook (fake GPUs in tests): it runs the code it names, so say so.
        print(
            f"anubis: warning: ANUBIS_NVML_MODULE={hook} replaces NVML (test hook)", file=sys.stderr
        )
    try:
        config = load_config()
        add_plugin_dirs(args.plugins)
        return int(args.handler(args, config))
    except AnubisError as e:  # the one place an anubis error becomes a line and a status
        print(f"anubis: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
