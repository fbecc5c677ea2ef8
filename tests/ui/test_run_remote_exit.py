"""`anubis run --remote` whose local recording fails exits non-zero, like `record` (issue 20).

The app runs in tmux (a real terminal) against the stand-in ssh and agent of
`tests/unit/test_remote_session.py` (real processes on real pipes, no sshd);
the local recording hits a real write error: the shell's file-size limit
(``ulimit -f``), which makes the kernel refuse writes past it with EFBIG
(Python ignores SIGXFSZ), as a full disk refuses them with ENOSPC.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Footer, Header, Sample
from tests.conftest import cli_env
from tests.ui.test_tmux_e2e import tmux, wait_screen
from tests.unit.test_remote_session import AGENT, SSH

LIMIT_KIB = 8  # the local recording may grow to this, then writes fail


def test_run_remote_exits_non_zero_when_its_local_recording_fails(tmp_path: Path):
    assert shutil.which("tmux"), "tmux is installed by .ci/run"
    (tmp_path / "ssh.py").write_text(SSH)
    (tmp_path / "agent.py").write_text(AGENT)
    rec = tmp_path / "local.msgpack"
    py = shlex.quote(sys.executable)
    ssh = shlex.quote(f"{sys.executable} {tmp_path / 'ssh.py'}")
    agent = shlex.quote(f"{sys.executable} {tmp_path / 'agent.py'} energy")
    run = f"{py} -m anubis_tui run --remote host --ssh {ssh} --remote-cmd {agent} --record {rec}"
    script = tmp_path / "run.sh"
    # The pane stays after the app ends, so its last lines and status can be read.
    script.write_text(f'ulimit -f {LIMIT_KIB}\n{run}\necho "rc=$?"\nsleep 120\n')
    name = f"anubis-remote-exit-{int(time.time())}"
    env = cli_env("empty_container")
    env["TERM"] = "xterm-256color"
    tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", f"bash {script}", env=env,
         check=True)  # fmt: skip
    try:
        wait_screen(name, lambda s: "REMOTE host" in s, 60)
        # samples at 20 Hz: the file reaches the limit within seconds; the app goes on
        wait_screen(name, lambda s: "too large" in s, 90)
        assert "REMOTE host" in wait_screen(name, lambda s: "REMOTE" in s, 5)
        tmux("send-keys", "-t", name, "q", check=True)
        out = wait_screen(name, lambda s: "rc=" in s, 30)
    finally:
        tmux("kill-session", "-t", name, capture_output=True)
    lines = [x for x in out.splitlines() if x.strip()]
    assert "rc=1" in lines[-1], out
    said = [x for x in lines if x.startswith("anubis: ") and "too large" in x]
    assert len(said) == 1 and str(rec) in said[0], out  # one line naming the file and why
    assert "Traceback" not in out
    # The file holds what was written before the error: a readable prefix, no Footer.
    records, recovery = read_all(rec)
    assert isinstance(records[0], Header) and any(isinstance(r, Sample) for r in records)
    assert not isinstance(records[-1], Footer)
    assert recovery.records == len(records)
    assert rec.stat().st_size <= LIMIT_KIB * 1024
