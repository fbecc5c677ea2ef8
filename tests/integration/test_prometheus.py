"""The Prometheus exporter plugin, scraped by a real Prometheus server (Debian's, from .ci/run)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ANUBIS, ROOT, cli_env

pytestmark = pytest.mark.slow
PLUGINS = ROOT / "plugins"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]
    except OSError:
        return []


def value(port: int, expr: str) -> float | None:
    res = query(port, expr)
    return float(res[0]["value"][1]) if res else None


def test_a_real_prometheus_scrapes_a_live_session(tmp_path):
    prom = shutil.which("prometheus")
    assert prom, "the prometheus server is installed by .ci/run (Debian package prometheus)"
    port, pport = free_port(), free_port()
    anubis = subprocess.Popen(
        [*ANUBIS, "--plugins", str(PLUGINS), "record", "--threads", "1", "--duration", "90",
         "-o", str(tmp_path / "s.msgpack"), "--export", f"prometheus:127.0.0.1:{port}"],
        env=cli_env("empty_container"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: anubis\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    server = subprocess.Popen(
        [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 90
        tps = None
        while time.monotonic() < end:
            tps = value(pport, "anubis_decode_tokens_per_second")
            if tps and tps == tps:  # NaN: no tokens in the window yet (the panel's "—")
                break
            assert anubis.poll() is None, anubis.stderr.read() if anubis.stderr else ""
            time.sleep(1)
        assert tps and tps > 0, "Prometheus never saw tokens/s"
        tok1 = value(pport, 'anubis_tokens_total{phase="decode"}')
        joules1 = value(pport, 'anubis_energy_joules_total{source="anubis"}')
        time.sleep(4)
        tok2 = value(pport, 'anubis_tokens_total{phase="decode"}')
        joules2 = value(pport, 'anubis_energy_joules_total{source="anubis"}')
        assert tok1 is not None and tok2 is not None and tok2 > tok1
        assert joules1 is not None and joules2 is not None and joules2 > joules1
        power = query(pport, "anubis_power_watts")
        assert power and {"host", "source", "scope", "label", "method"} <= set(power[0]["metric"])
        knob = value(pport, 'anubis_knob{name="threads"}')
        assert knob == 1.0  # the --threads it was started with
    finally:
        anubis.terminate()
        server.terminate()
        anubis.wait(30)
        server.wait(30)


def test_idle_connections_cost_a_bounded_number_of_threads_and_no_gap(tmp_path):
    """1,000 idle connections made 1,000 threads and a 4.3 s gap in the recording."""
    import psutil

    from anubis_tui.recording.reader import load

    port = free_port()
    rec = tmp_path / "c.msgpack"
    anubis = subprocess.Popen(
        [*ANUBIS, "--plugins", str(PLUGINS), "record", "--no-model", "--duration", "25",
         "-o", str(rec), "--export", f"prometheus:127.0.0.1:{port}"],
        env=cli_env("empty_container"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    socks: list[socket.socket] = []
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        proc = psutil.Process(anubis.pid)
        base = proc.num_threads()
        for _ in range(300):
            s = socket.socket()
            s.settimeout(0.2)
            socks.append(s)
            with contextlib.suppress(OSError):  # a full accept queue makes the kernel wait
                s.connect(("127.0.0.1", port))  # then idle
        time.sleep(1)
        most = proc.num_threads()
        assert most <= base + 8 + 2, (base, most)  # MAX_CONNECTIONS, not one per connection
        for s in socks:
            s.close()
        socks.clear()
        end = time.monotonic() + 15  # idle ones are closed after IDLE_S; then scrapes work
        body = b""
        while time.monotonic() < end and b"anubis_power_watts" not in body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read()
            except OSError:
                time.sleep(0.5)
        assert b"anubis_power_watts" in body or b"anubis_tokens_total" in body
        assert anubis.wait(60) == 0, anubis.stderr.read() if anubis.stderr else ""
    finally:
        for s in socks:
            s.close()
        if anubis.poll() is None:
            anubis.kill()
    t = load(rec).t
    gaps = (t[1:] - t[:-1]) / 1e9
    assert len(t) > 50 and gaps.max() < 1.0, gaps.max()  # 10 Hz throughout
