"""The one base of anubis's own exceptions.

Every exception anubis raises for something the user can fix (a bad flag, a
file that is not a recording, a server that cannot be attached to) derives
from `AnubisError`. Its message is one line: the command line prints it once,
in `anubis_tui.cli.main`, as ``anubis: <message>`` with exit status 2, so
no command converts errors by hand. A class that is also a built-in kind
(``ValueError``, ``OSError``) lists `AnubisError` first, so that callers
catching the built-in kind keep working.

(The model is Harlequin's ``exception.py``: one base the app catches once.)
"""

from __future__ import annotations

__all__ = ["AnubisError", "one_line"]


def one_line(text: str) -> str:
    """`text` on one line: its non-blank lines joined by `` / ``, each stripped."""
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return " / ".join(lines)


class AnubisError(Exception):
    """An error the user can act on; ``str(e)`` is one line, without a traceback.

    A message spread over several lines (a subprocess's stderr, a library's
    multi-line text) is joined into one by `one_line`.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())
