"""py-spy's live sample count, read from py-spy's own progress line on a pseudo-terminal."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from anubis_tui.profilers.pyspy import SAMPLES_RE, PySpy, pyspy_binary

pytestmark = pytest.mark.skipif(pyspy_binary() is None, reason="py-spy is not installed")

BUSY = "import time\nwhile True:\n    sum(range(100_000))\n"


def test_the_count_grows_while_py_spy_runs_and_ends_at_its_own_total(tmp_path):
    target = subprocess.Popen([sys.executable, "-c", BUSY])
    spy = PySpy()
    try:
        time.sleep(0.3)
        err = spy.start(target.pid, 50, tmp_path)
        if err and "ptrace" in err:
            pytest.skip(err)
        assert err is None
        seen = []
        end = time.monotonic() + 20
        while time.monotonic() < end and len({n for n in seen if n}) < 2:
            time.sleep(0.3)
            seen.append(spy.status().samples)
        assert spy.status().running
        live = [n for n in seen if n is not None]
        assert len(set(live)) >= 2 and live == sorted(live) and live[-1] > 0
        spy.stop()
    finally:
        target.kill()
        target.wait()
    assert spy.log is not None
    text = spy.log.read_text()
    m = SAMPLES_RE.search(text)
    # the final figure is py-spy's own "Samples: N", and the log keeps none of the progress
    assert m and spy.samples == int(m.group(1)) >= live[-1]
    assert "Collected" not in text and "\x1b[" not in text


def test_a_py_spy_that_fails_at_once_is_explained_from_its_terminal_output(tmp_path):
    fake = tmp_path / "py-spy"
    fake.write_text('#!/bin/sh\necho "Error: Permission Denied (os error 13)" >&2\nexit 1\n')
    fake.chmod(0o755)
    target = subprocess.Popen(["sleep", "30"])
    try:
        msg = PySpy(binary=str(fake)).start(target.pid, 100, tmp_path)
    finally:
        target.kill()
        target.wait()
    assert msg is not None and "CAP_SYS_PTRACE" in msg


def test_an_older_py_spy_without_capture_runs_without_a_count(tmp_path):
    fake = tmp_path / "py-spy"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--capture*) echo "error: unexpected argument \'--capture\' found" >&2;'
        " exit 2;; esac\n"
        "trap 'echo \"Wrote speedscope file to x. Samples: 7 Errors: 0\"; exit 0' INT\n"
        "while :; do sleep 0.1; done\n"
    )
    fake.chmod(0o755)
    target = subprocess.Popen(["sleep", "30"])
    spy = PySpy(binary=str(fake))
    try:
        assert spy.start(target.pid, 100, tmp_path) is None
        assert spy.status().running and spy.status().samples is None
        spy.stop()
    finally:
        target.kill()
        target.wait()
    assert spy.samples == 7
