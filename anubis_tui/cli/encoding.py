"""Output that survives any locale: ASCII stand-ins for what the terminal cannot encode.

A server reached over SSH may run with an ISO-8859-1 or ASCII locale
(porthole-ascend-cinnamon/mhddos_proxy_releases#10, kensanata/mastodon-archive#20):
printing "✓", "—" or "Δ" there raised UnicodeEncodeError and ended the command.
`install` gives stdout and stderr an error handler that writes an ASCII stand-in
for each character the stream's encoding lacks (latin-1 keeps its own °, µ, ±
and ×), so every command prints, whatever the locale.
"""

from __future__ import annotations

import codecs
import io
import sys

STAND_INS = {
    "✓": "ok",
    "✗": "x",
    "—": "-",
    "–": "-",
    "−": "-",
    "Δ": "d",
    "≥": ">=",
    "≤": "<=",
    "≈": "~",
    "±": "+/-",
    "×": "x",
    "°": "deg",
    "µ": "u",
    "→": "->",
    "←": "<-",
    "↑": "^",
    "↓": "v",
    "…": "...",
    "●": "*",
    "○": "o",
    "└": "`-",
    "│": "|",
    "─": "-",
    "┴": "+",
    "╭": "+",
    "╮": "+",
    "╰": "+",
    "╯": "+",
    "⊇": "contains",
    "²": "^2",
    "·": ".",
    "•": "*",
}
HANDLER = "anubis-ascii"


def _stand_in(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(STAND_INS.get(ch, "?") for ch in bad), err.end


def is_utf8(stream: object) -> bool:
    """Whether a text stream encodes as UTF-8 (so box drawing and units print as they are)."""
    enc = getattr(stream, "encoding", None) or ""
    try:
        return codecs.lookup(enc).name == "utf-8"
    except LookupError:
        return False


def install() -> None:
    """Give stdout and stderr the ASCII stand-in error handler (idempotent)."""
    try:
        codecs.lookup_error(HANDLER)
    except LookupError:
        codecs.register_error(HANDLER, _stand_in)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and not is_utf8(stream):
            stream.reconfigure(errors=HANDLER)


def terminal_problem() -> str | None:
    """Why the full-screen app cannot draw here, or None: it needs a UTF-8 terminal."""
    if is_utf8(sys.__stdout__):
        return None
    enc = getattr(sys.__stdout__, "encoding", None) or "unknown"
    return (
        f"the terminal's encoding is {enc}, not UTF-8, and the live view draws with UTF-8 "
        "(start it with LANG=C.UTF-8 or en_US.UTF-8); record, report and sensors work as they are"
    )
