"""The command line: one module per command; argparse lives here and nowhere else.

Bad input ends in one clear line on stderr and a non-zero exit, never a
traceback: every command raises `CliError` for what the user can fix.
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
    record,
    replay,
    report,
    restore,
    run,
    sensors,
    sweep,
)
from anubis_tui.cli.common import CliError, Parser
from anubis_tui.config import ConfigError, load_config
from anubis_tui.plugins import PluginError, add_plugin_dirs

COMMANDS = (
    run, replay, record, report, export, sensors, bench, restore, sweep, compare, agent, db
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="anubis", description=__doc__)
    p.add_argument("--version", action="version", version=f"anubis {__version__}")
    p.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="DIR",
        help="load plugins (sinks, sources, profilers) from a folder without installing them",
    )
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    for mod in COMMANDS:
        mod.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hook := os.environ.get("ANUBIS_NVML_MODULE"):
        # A test hook (fake GPUs in tests): it runs the code it names, so say so.
        print(
            f"anubis: warning: ANUBIS_NVML_MODULE={hook} replaces NVML (test hook)", file=sys.stderr
        )
    try:
        config = load_config()
        if args.command is None:  # only global options were given: the default command
            args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "run"])
        add_plugin_dirs(args.plugins)
        return int(args.handler(args, config))
    except (CliError, ConfigError, PluginError) as e:
        print(f"anubis: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    encoding.install()  # a non-UTF-8 locale gets ASCII stand-ins, never UnicodeEncodeError
