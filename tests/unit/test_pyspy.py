"""py-spy's failures explained, with a fake py-spy binary (moved from test_profilers.py)."""

from __future__ import annotations

import os
import stat
import subprocess

from anubis_tui.profilers.base import PTRACE_FIX
from anubis_tui.profilers.pyspy import PySpy


def test_permission_failure_is_reported_with_the_fix(tmp_path, monkeypatch):
    fake = tmp_path / "py-spy"
    # py-spy's real text when ptrace is refused (reference/profilers-textual.md §1.2)
    fake.write_text(
        '#!/bin/sh\necho "Permission Denied: Try running again with elevated '
        'permissions by going \'sudo env \\"PATH=\\$PATH\\" !!\'" >&2\nexit 1\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    msg = PySpy(binary=str(fake)).start(os.getpid(), 100, tmp_path / "out")
    assert msg is not None and "CAP_SYS_PTRACE" in msg and "ptrace_scope" in msg
    assert PTRACE_FIX in msg
    from anubis_tui.profilers import pyspy

    monkeypatch.setattr(pyspy, "pyspy_binary", lambda: None)
    assert "not installed" in (PySpy().start(os.getpid(), 100, tmp_path) or "")
    assert PySpy.available() == (False, "py-spy is not installed (pip install py-spy)")
    monkeypatch.undo()
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    assert "not running" in PySpy().start(p.pid, 100, tmp_path / "o2")


def test_native_with_nonblocking_is_explained():
    from anubis_tui.profilers.pyspy import explain_failure

    text = "Can't get native stack traces with the --nonblocking option."
    assert "cannot be combined" in explain_failure(text, 1)
