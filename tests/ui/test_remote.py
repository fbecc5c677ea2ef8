"""`anubis run --remote` end to end: a real sshd on loopback, the app in tmux, keys acting there."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event, Footer
from tests.conftest import FIXTURES, cli_env
from tests.ui.test_tmux_e2e import quit_and_wait, tmux, wait_screen

pytestmark = pytest.mark.slow
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path: Path):
    """sshd on a free loopback port with a throwaway host key and a throwaway user key."""
    assert os.path.exists(SSHD), "openssh-server is installed by .ci/run"
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    auth = keys / "authorized_keys"
    auth.write_text((keys / "user.pub").read_text())
    auth.chmod(0o600)
    port = free_port()
    cfg = tmp_path / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {auth}\nPidFile {tmp_path / 'sshd.pid'}\nStrictModes no\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    client = tmp_path / "ssh_config"
    client.write_text(
        f"Host localhost\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {keys / 'user'}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
    )
    yield client
    proc.terminate()
    proc.wait(10)


def test_run_remote_over_a_real_sshd(tmp_path: Path, sshd: Path):
    local = tmp_path / "local.msgpack"
    remote_env = (
        f"ANUBIS_SYSFS_ROOT={FIXTURES / 'empty_container'} ANUBIS_NVML_MODULE=absent_nvml_module "
        f"ANUBIS_STATE_DIR={tmp_path / 'state'} ANUBIS_CONFIG=/nonexistent.toml"
    )
    remote_cmd = f"env {remote_env} {sys.executable} -m anubis_tui agent --threads 2"
    name = f"anubis-remote-{int(time.time())}"
    env = cli_env("empty_container")
    env["TERM"] = "xterm-256color"
    cmd = (
        f"{sys.executable} -m anubis_tui run --remote localhost --ssh 'ssh -F {sshd}' "
        f"--remote-cmd '{remote_cmd}' --record {local}"
    )
    tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd, env=env, check=True)
    try:
        wait_screen(
            name,
            lambda s: (
                "REMOTE localhost" in s
                and "decode" in s
                and not s.split("decode", 1)[1].lstrip().startswith("—")
            ),
            90,
        )
        tmux("send-keys", "-t", name, "p", check=True)
        wait_screen(name, lambda s: "py-spy@100," in s and "key→ack" in s, 60)
        # the link goes silent (ssh stopped, as a frozen network would): shown within 2 s
        ssh = [
            p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0] == "ssh" and "localhost" in p.info["cmdline"]
        ]  # fmt: skip
        assert ssh
        for p in ssh:
            p.send_signal(signal.SIGSTOP)
        try:
            wait_screen(name, lambda s: "stalled" in s, 15)
        finally:
            for p in ssh:
                p.send_signal(signal.SIGCONT)
        wait_screen(name, lambda s: "stalled" not in s, 30)
        # the connection drops: the agent there is killed
        agents = [  # the agent itself: python -m anubis_tui agent (not a shell naming it)
            p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[1:4] == ["-m", "anubis_tui", "agent"]
        ]  # fmt: skip
        assert agents
        for p in agents:
            p.send_signal(signal.SIGKILL)
        wait_screen(name, lambda s: "disconnected" in s and "r reconnects" in s, 30)
        first, rec1 = read_all(local)
        assert not rec1.truncated, rec1.reason  # closed with a Footer: still a valid recording
        assert isinstance(first[-1], Footer)
        assert "connection lost" in first[-1].totals["stopped_by"]
        assert any(
            isinstance(r, Event) and r.kind == "profiler_on" and r.payload["profiler"] == "py-spy"
            for r in first
        )
        tmux("send-keys", "-t", name, "r", check=True)
        wait_screen(name, lambda s: "disconnected" not in s and "REMOTE" in s, 60)
        second = tmp_path / "local-2.msgpack"
        end = time.monotonic() + 60
        while time.monotonic() < end and not (second.exists() and second.stat().st_size > 2000):
            time.sleep(0.5)
        quit_and_wait(name)
    finally:
        tmux("kill-server", capture_output=True)
    again, rec2 = read_all(second)
    assert not rec2.truncated, rec2.reason
    assert isinstance(again[-1], Footer) and again[-1].totals["stopped_by"] == "quit"
    assert shutil.which("ssh")
