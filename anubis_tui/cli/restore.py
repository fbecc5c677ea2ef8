"""`anubis restore`: put back the device settings an anubis that did not end cleanly changed."""

from __future__ import annotations

import argparse
from typing import Any

from anubis_tui.cli.common import CliError
from anubis_tui.config import Config


def add_parser(sub: Any) -> None:
    """Register the ``restore`` subcommand and its flags on `sub` (argparse's subparsers)."""
    r = sub.add_parser(
        "restore",
        help="put back device settings (GPU power limit, CPU max frequency, nvpmodel) "
        "that an anubis killed or crashed left changed",
    )
    r.set_defaults(handler=cmd_restore)


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    """Restore what the journal lists; exit 0 when nothing is left in it, 1 when some is.

    Each line says what was written and what was not (and why). A journal not
    owned by the user or writable by others is refused (exit 2), as is one whose
    owner is a live anubis.
    """
    from anubis_tui.device import Journal, restore
    from anubis_tui.device.controls import close_controls, discover_controls

    journal = Journal()
    changes = journal.changes()
    if journal.refusal:  # like ssh's StrictModes: a file others could have written is not used
        raise CliError(f"not using {journal.path}: {journal.refusal}")
    if not changes:
        why = f"; ignored a damaged journal: {journal.damage}" if journal.damage else ""
        print(f"anubis: nothing to restore ({journal.path} lists no change{why})")
        return 0
    owner = journal.owner()
    if owner is not None:
        raise CliError(f"anubis (pid {owner}) is running and will restore its changes itself")
    controls = discover_controls()
    try:
        lines = restore(journal, controls)
    finally:
        close_controls(controls)
    for line in lines:
        print(f"anubis: {line}")
    return 0 if not journal.changes() else 1
