"""`RemoteSession` against what a link can bring, through a stand-in ssh (no sshd needed).

The stand-in is a real process on real pipes: it takes ssh's command line
(options, ``--``, host, remote command) and runs the remote command, a small
agent that writes records in the recording format and answers commands. The
real ssh and the real agent are tested together in tests/ui/test_remote.py.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from anubis_tui.cli import main
from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event, Footer
from anubis_tui.session.remote import RemoteSession, host_problem

SSH = textwrap.dedent(
    """
    import os, sys
    args = sys.argv[1:]
    if "--" not in args:
        sys.exit("stand-in ssh: no -- before the host")
    host, cmd = args[args.index("--") + 1:]
    if host.startswith("-"):
        sys.exit("stand-in ssh: host is an option")
    os.execvp("sh", ["sh", "-c", cmd])
    """
)

AGENT = textwrap.dedent(
    """
    import os, sys, threading, time
    import msgpack
    from anubis_tui.recording.format import make_header, pack
    from anubis_tui.records import Event
    mode = sys.argv[1]
    out = sys.stdout.buffer
    lock = threading.Lock()
    def send(rec):
        with lock:
            out.write(pack(rec)); out.flush()
    if mode != "energy":
        send(make_header([], time.monotonic_ns()))
    if mode == "stderr":
        sys.stderr.write("x" * 200_000 + "\\n"); sys.stderr.flush()  # ssh's banner, say
    if mode == "bad":
        send(Event(1, "ack", {"id": [1, 2], "cmd": "marker", "ok": True, "message": "?"}))
        send(Event(2, "ack", {"id": {"a": 1}, "cmd": "marker", "ok": True}))
        out.write(msgpack.packb([99, "not a record"])); out.flush()
        send(Event(3, "rate", {"sampler_hz": "fast"}))
    if mode == "energy":  # a counter that starts at 0 with each agent, as the sampler's do
        from anubis_tui.records import Channel, Sample
        chans = [Channel(id=f"x.{k}", label=k, source="x", kind=k, unit=u, scope="system",
                         method=m, update_period_s=0.05)
                 for k, u, m in (("energy", "J", "counter"), ("power", "W", "instant"))]
        send(make_header(chans, time.monotonic_ns()))
        def samples():
            for i in range(1, 10_000):
                send(Sample(i * 50_000_000, [i * 5.0, 40.0]))
                time.sleep(0.05)
        threading.Thread(target=samples, daemon=True).start()
    u = msgpack.Unpacker()
    t = 10
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        u.feed(data)
        for msg in u:
            t += 1
            if mode == "stall" and msg.get("cmd") == "marker":
                time.sleep(3.5)  # the link goes quiet: nothing, not even a heartbeat
            if msg.get("cmd") == "stop":
                send(Event(t, "ack", {"id": msg["id"], "cmd": "stop", "ok": True}))
                sys.exit(0)
            send(Event(t, "ack", {"id": msg.get("id"), "cmd": msg.get("cmd"), "ok": True,
                                  "message": "done"}))
    """
)


@pytest.fixture
def link(tmp_path: Path):
    (tmp_path / "ssh.py").write_text(SSH)
    (tmp_path / "agent.py").write_text(AGENT)
    made: list[RemoteSession] = []

    def make(mode: str, **kw) -> tuple[RemoteSession, list]:
        seen: list = []
        r = RemoteSession(
            "somehost",
            remote_cmd=f"{shlex.quote(sys.executable)} {tmp_path / 'agent.py'} {mode}",
            ssh=f"{shlex.quote(sys.executable)} {tmp_path / 'ssh.py'} -oBatchMode=yes",
            sinks=[seen.append],
            **kw,
        )
        r.start()
        made.append(r)
        return r, seen

    yield make
    for r in made:
        r.stop()


def test_malformed_records_and_an_ack_with_a_list_id_do_not_kill_the_reader(link, tmp_path):
    local = tmp_path / "local.msgpack"
    r, seen = link("bad", record_path=str(local))
    out = r.command("marker", label="x")  # the reader is still alive to deliver its ack
    assert out.ok and out.message == "done"
    assert r.connected and r.bad_records >= 1
    errors = [e for e in seen if isinstance(e, Event) and e.kind == "remote_error"]
    assert errors and "record skipped" in errors[0].payload["reason"]
    r.stop("quit")
    records, rec = read_all(local)
    assert not rec.truncated and isinstance(records[-1], Footer)
    assert records[-1].totals["clean"] and records[-1].totals["stopped_by"] == "quit"


def test_ssh_stderr_is_read_as_it_comes(link):
    r, _ = link("stderr")
    t = time.monotonic()
    out = r.command("marker", label="x")  # deadlocked at t=0 when stderr was read at the end
    assert out.ok, out.message
    assert time.monotonic() - t < 30


def test_a_silent_link_is_shown_stalled(link):
    r, _ = link("stall")
    assert r.command("rate_step", direction=1).ok
    assert r.stalled_s is None
    threading.Thread(target=r.command, args=("marker",), kwargs={"label": "x"}).start()
    end = time.monotonic() + 3
    while r.stalled_s is None and time.monotonic() < end:
        time.sleep(0.1)
    assert r.stalled_s is not None and r.stalled_s >= 2.0
    end = time.monotonic() + 5
    while r.stalled_s is not None and time.monotonic() < end:
        time.sleep(0.1)
    assert r.stalled_s is None  # talking again


def test_a_host_that_looks_like_an_option_never_reaches_ssh(tmp_path: Path, capsys):
    for host in ("-oProxyCommand=touch pwned", "-p22", "", "a b", "x\ny"):
        assert host_problem(host)
        with pytest.raises(ValueError):
            RemoteSession(host)
    assert host_problem("user@host.example") is None
    assert main(["run", "--remote", f"-oProxyCommand=touch {tmp_path / 'pwned'}"]) == 2
    assert "may not start with '-'" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_a_failed_connect_says_why(tmp_path: Path):
    (tmp_path / "ssh.py").write_text(SSH)
    seen: list = []
    r = RemoteSession(
        "somehost",
        remote_cmd="echo 'sh: 1: anubis: not found' >&2; exit 127",
        ssh=f"{shlex.quote(sys.executable)} {tmp_path / 'ssh.py'}",
        sinks=[seen.append],
    )
    r.start()
    end = time.monotonic() + 10
    while r.connected and time.monotonic() < end:
        time.sleep(0.05)
    assert not r.connected and r.lost == "sh: 1: anubis: not found"
    lost = [e for e in seen if isinstance(e, Event) and e.kind == "connection_lost"]
    assert lost and lost[0].payload["reason"] == "sh: 1: anubis: not found"
    assert not r.command("marker").ok


def test_after_a_reconnect_the_view_goes_on_clock_and_energy_and_no_row_twice(link, tmp_path):
    """Issue 21: after r, the clock froze, J/token went negative, the CPU power row doubled."""
    local = tmp_path / "l.msgpack"
    r, seen = link("energy", record_path=str(local))
    time.sleep(1.5)
    assert r.command("marker", label="one").ok
    os.killpg(r._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]  # the link drops
    end = time.monotonic() + 10
    while r.connected and time.monotonic() < end:
        time.sleep(0.05)
    assert not r.connected
    assert r.reconnect().ok
    time.sleep(1.5)
    assert r.command("marker", label="two").ok
    r.stop("quit")
    from anubis_tui.records import Header, Sample

    assert sum(isinstance(x, Header) for x in seen) == 1  # one set of rows
    samples = [x for x in seen if isinstance(x, Sample)]
    ts = [x.t for x in samples]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)  # the clock goes on
    energy = [x.values[0] for x in samples]
    assert all(b >= a for a, b in itertools.pairwise(energy))  # never backwards
    acks = [x.t for x in seen if isinstance(x, Event) and x.kind == "remote_ack"]
    assert len(acks) == 2 and acks[1] > acks[0]
    # each local file keeps its own agent's stamps and is a recording by itself
    for path in (local, tmp_path / "l-2.msgpack"):
        records, rec = read_all(path)
        assert not rec.truncated and isinstance(records[-1], Footer)
        first = next(x for x in records if isinstance(x, Sample))
        assert first.values[0] < 50  # the agent's own counter, from 0
