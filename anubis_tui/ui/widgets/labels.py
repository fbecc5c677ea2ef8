"""Short channel labels for narrow panels: shortened by words, never cut mid-word."""

from __future__ import annotations

import re

from anubis_tui.records import Channel

# Words the panel's own title or unit already says, and the method tag after the value.
_DROP = {
    "power",
    "temperature",
    "energy",
    "throttling",
    "reasons",
    "clocks-event",
    "discharge",
}
_ABBREV = (
    (re.compile(r"\bpackage[- ]?(\d+)"), r"pkg\1"),
    (re.compile(r"\bPackage id (\d+)"), r"pkg\1"),
    (re.compile(r"\bmemory\b"), "mem"),
    (re.compile(r"\bmax-frequency\b"), "max-freq"),
    (re.compile(r"^RAPL "), ""),
)


def short_label(c: Channel, width: int) -> str:
    """`c`'s label in at most `width` cells: parentheses and words the panel says are dropped,
    long words abbreviated, then words dropped from the right; a lone word too long ends in …"""
    text = re.sub(r"\s*\([^)]*\)", "", c.label)
    chip = c.meta.get("chip")
    if isinstance(chip, str) and text.startswith(f"{chip} ") and len(text) > len(chip) + 1:
        text = text[len(chip) + 1 :]
    for pat, rep in _ABBREV:
        text = pat.sub(rep, text)
    words = [w for w in text.replace("/", " ").split() if w.lower() not in _DROP] or [c.id]
    out = ""
    for w in words:
        cand = f"{out} {w}" if out else w
        if len(cand) > width:
            break
        out = cand
    if not out:
        out = words[0][: max(1, width - 1)] + "…"
    return out
