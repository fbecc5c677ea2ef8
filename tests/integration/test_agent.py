"""`anubis agent` over a real pipe, with a real session on the default model."""

from __future__ import annotations

import subprocess
import threading
import time

import msgpack
import pytest

from anubis_tui.recording.reader import RecordStream, read_all
from anubis_tui.records import Event, Footer, Header, Tokens
from tests.conftest import ANUBIS, cli_env

pytestmark = pytest.mark.slow


class Consumer:
    """Reads the agent's stdout as a recording stream, in a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stream = RecordStream()
        self.records: list = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                data = self.proc.stdout.read1(65536)
            except (OSError, ValueError):
                return
            if not data:
                return
            recs = self.stream.feed(data)
            with self.lock:
                self.records += recs

    def send(self, **cmd) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(msgpack.packb(cmd))
        self.proc.stdin.flush()

    def wait(self, pred, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(list(self.records)):
                    return
            time.sleep(0.05)
        raise AssertionError("timed out")

    def acks(self) -> dict:
        with self.lock:
            return {
                r.payload["id"]: r for r in self.records if isinstance(r, Event) and r.kind == "ack"
            }


def start(tmp_path, *extra: str) -> tuple[subprocess.Popen[bytes], Consumer]:
    p = subprocess.Popen(
        [*ANUBIS, "agent", "--threads", "2", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env("empty_container"),
    )
    return p, Consumer(p)


def test_records_in_order_commands_acknowledged_and_a_disconnect_stops_it(tmp_path):
    local = tmp_path / "local.msgpack"
    p, c = start(tmp_path, "--record", str(local))
    try:
        c.wait(lambda rs: sum(r.count for r in rs if isinstance(r, Tokens)) > 50)
        c.send(id=1, cmd="marker", label="hello")
        c.send(id=2, cmd="knob", name="threads", value=1)
        c.send(id=3, cmd="bogus")
        c.send(id=4, cmd="rate", hz="fast")
        c.send(id=5, cmd="profiler", name="py-spy")
        c.wait(lambda rs: len([r for r in rs if isinstance(r, Event) and r.kind == "ack"]) >= 5)
        acks = c.acks()
        assert acks[1].payload["ok"] and acks[1].payload["message"] == "marker"
        assert acks[2].payload["ok"] and acks[2].payload["message"] == "threads 2 → 1"
        assert not acks[3].payload["ok"] and "unknown command 'bogus'" in acks[3].payload["message"]
        assert (
            not acks[4].payload["ok"] and acks[4].payload["message"] == "rate: hz must be a number"
        )
        assert acks[5].payload["ok"], acks[5].payload
        with c.lock:
            recs = list(c.records)
        assert isinstance(recs[0], Header)
        stamps = [
            r.t for r in recs[1:] if hasattr(r, "t") and getattr(r, "kind", "") != "heartbeat"
        ]
        # Time order, but for the little an ack's immediate flush lets a late record
        # (a token batch stamped before it) trail by; readers order by stamp.
        assert all(t >= max(stamps[:i] or [0]) - 300_000_000 for i, t in enumerate(stamps))
        kinds = [(r.kind, r.payload.get("id")) for r in recs if isinstance(r, Event)]
        # each command's own Event comes before its acknowledgement
        assert kinds.index(("marker", None)) < kinds.index(("ack", 1))
        assert kinds.index(("knob", None)) < kinds.index(("ack", 2))
        assert kinds.index(("profiler_on", None)) < kinds.index(("ack", 5))
        # the consumer goes away: the agent stops cleanly
        assert p.stdout is not None
        p.stdout.close()
        rc = p.wait(timeout=60)
        err = p.stderr.read().decode() if p.stderr else ""
        assert rc == 0 and "the consumer went away" in err, err
        assert "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()
    records, recovery = read_all(local)
    assert not recovery.truncated, recovery.reason  # the local copy has its footer
    assert any(isinstance(r, Event) and r.kind == "marker" for r in records)
    assert isinstance(records[-1], Footer)


def test_stop_command_and_closed_stdin_end_the_stream_with_a_footer(tmp_path):
    p, c = start(tmp_path, "--no-model")
    try:
        c.wait(lambda rs: len(rs) > 5, 30)
        c.send(id="s", cmd="stop")
        rc = p.wait(timeout=30)
        assert rc == 0
        c.wait(lambda rs: isinstance(rs[-1], Footer), 10)
        assert c.acks()["s"].payload["message"] == "stopping"
    finally:
        if p.poll() is None:
            p.kill()
    p, c = start(tmp_path, "--no-model")
    try:
        c.wait(lambda rs: len(rs) > 5, 30)
        assert p.stdin is not None
        p.stdin.write(b"\xc1 garbage")  # never a msgpack object: answered, not fatal
        p.stdin.flush()
        c.wait(lambda rs: any(isinstance(r, Event) and r.kind == "ack" for r in rs), 10)
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        c.wait(lambda rs: isinstance(rs[-1], Footer), 10)
        assert c.records[-1].totals["stopped_by"] == "agent: stdin closed"
    finally:
        if p.poll() is None:
            p.kill()
