"""Device settings anubis may change for a tuning session, and the journal that undoes them."""

from __future__ import annotations

import threading
from typing import Any

from anubis_tui.device.controls import Control, ControlError, close_controls, discover_controls
from anubis_tui.device.state import Journal, JournalError

__all__ = ["Control", "ControlError", "DeviceSettings", "Journal", "JournalError", "restore"]


class DeviceSettings:
    """The device controls of one session: every change is journalled first, undone at the end."""

    def __init__(self, controls: list[Control], journal: Journal | None = None) -> None:
        self.controls = {c.knob: c for c in controls}
        self.journal = journal or Journal()
        self.lock = threading.Lock()
        self.changed: set[str] = set()

    @classmethod
    def discover(cls) -> DeviceSettings:
        """The settings of this machine's controls (`discover_controls`), journalled in the
        default file.
        """
        return cls(discover_controls())

    def blocked_by(self) -> str | None:
        """Why device knobs may not change now (one line), or None when they may.

        Another live anubis owning the journal, or a journal file not trusted (not a
        regular file, owned by another user, writable by others), blocks them.
        """
        owner = self.journal.owner()
        if owner:
            return f"another anubis (pid {owner}) holds device changes"
        if self.journal.refusal:  # read by owner(): a file others could have written
            return f"journal not trusted ({self.journal.refusal})"
        return None

    def set(self, knob: str, value: Any) -> Any:
        """Set `knob` to `value`; returns the previous value. ControlError/JournalError if not."""
        ctl = self.controls.get(knob)
        if ctl is None:
            raise ControlError(f"no device knob {knob!r}")
        if not ctl.writable:
            raise ControlError(f"{knob}: {ctl.reason}")
        with self.lock:
            previous = ctl.value()
            self.journal.remember(ctl.key, ctl.knob, ctl.original())
            self.changed.add(ctl.key)
            ctl.set(value)
            return previous

    def restore_all(self) -> list[str]:
        """Put back what this session changed; one line per setting."""
        with self.lock:
            out = restore(self.journal, list(self.controls.values()), only=self.changed)
            self.changed.clear()
            return out

    def close(self) -> None:
        """Release the controls' handles (NVML shutdown); values are not restored here."""
        close_controls(list(self.controls.values()))


def restore(journal: Journal, controls: list[Control], only: set[str] | None = None) -> list[str]:
    """Restore the journal's original values (all, or the keys in `only`); one line each.

    A setting put back in full is one line, "restored to <original>", and
    leaves the journal. Otherwise each part written is a "wrote …" line and
    each part refused (not a whole number, outside the device's range, a
    policy or GPU this machine lacks) a "not restored: …" line; those parts
    stay in the journal for a later try.
    """
    by_key = {c.key: c for c in controls}
    lines = []
    for key, entry in journal.changes().items():
        if only is not None and key not in only:
            continue
        ctl = by_key.get(key)
        if ctl is None:
            lines.append(f"{key}: no such setting on this machine now; left in {journal.path}")
            continue
        try:
            done = ctl.restore(entry.get("original"))
        except ControlError as e:
            lines.append(f"{key}: not restored: {e}; left in {journal.path}")
            continue
        if done.left is None:  # every part written: the original as the journal had it
            lines.append(f"{key}: restored to {entry.get('original')}")
            journal.forget(key)
            continue
        lines += [f"{key}: wrote {w}" for w in done.wrote]
        lines += [f"{key}: not restored: {f}; left in {journal.path}" for f in done.failed]
        journal.keep(key, done.left)
    return lines
