"""`anubis record --attach URL` (issue 23).

The slow tests start a REAL ``python -m llama_cpp.server`` with the default model on a
loopback port (the test extras install llama-cpp-python's server extra) under the CPU
lock. Ollama's native API and llama-server's /metrics have no server to start here:
those tests run against tests/fakes/llm_servers.py, a small standard-library server that
speaks exactly their documented formats (see its docstring for the sources).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anubis_tui.inference.attach import (
    MAX_LINE,
    AttachError,
    AttachSpec,
    StreamError,
    openai_chunks,
    parse_metrics,
    parse_url,
    probe,
)
from anubis_tui.recording.reader import load, read_all
from anubis_tui.records import Event, Footer
from tests.conftest import ANUBIS, cli_env, errors

ROOT = Path(__file__).resolve().parents[2]
TREE = "jetson_orin_jp6"  # VDD_IN a constant 5.080 V x 1.180 A: a request's J is P x its time
P_W = 5.080 * 1.180


def run(*args, timeout=180):
    return subprocess.run(
        [*ANUBIS, *args], capture_output=True, env=cli_env(TREE), timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fake(kind: str, *opts: str):
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_servers", kind, *opts],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        yield f"http://127.0.0.1:{line.split()[1]}", p
    finally:
        p.kill()
        p.wait()


def events(path: Path, kind: str) -> list[Event]:
    return [e for e in load(path).events if e.kind == kind]


# -- the stand-in servers (fast) -------------------------------------------------------------


def test_ollama_native_counts_match_eval_count_and_each_request_has_its_joules(tmp_path):
    out = tmp_path / "o.msgpack"
    with fake("ollama", "--tokens", "20") as (url, _):
        p = run("record", "--attach", url, "--duration", "3", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    att = events(out, "attached")[0].payload
    assert att["api"] == "ollama" and att["model"] == "gemma3:270m" and att["python"] is True
    ends = events(out, "request_end")
    assert len(ends) >= 2
    for e in ends[:-1]:  # the last one may be cut by the stop
        assert e.payload["generated"] == 20 == e.payload["server"]["generated"]
    assert not events(out, "token_mismatch")
    r = json.loads(run("report", str(out), "--json").stdout)
    q = r["requests_energy"]
    assert q["method"] == "window" and len(q["requests"]) == len(ends)
    for row in q["requests"]:  # constant power: J = P x the request's own window
        assert row["joules"] == pytest.approx(P_W * (row["end_s"] - row["start_s"]), rel=0.02)
        assert row["j_per_token"] == pytest.approx(row["joules"] / row["generated"])
    assert r["model"] == "gemma3:270m"
    csv_out = tmp_path / "r.csv"
    e = run("export", str(out), "--requests-csv", str(csv_out))
    assert e.returncode == 0, errors(e.stderr)
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("request,start_s,end_s,generated,joules,j_per_token,method")
    assert len(rows) == len(ends) + 1 and rows[1].endswith(",window")


def test_llama_server_metrics_cross_check_and_a_lie_is_an_event(tmp_path):
    out = tmp_path / "m.msgpack"
    with fake("llama-server", "--tokens", "16") as (url, _):
        p = run("record", "--attach", url, "--duration", "2", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    assert events(out, "attached")[0].payload["metrics"] == "llama-server"
    full = [e for e in events(out, "request_end") if e.payload["stop"] == "eos"]
    assert full and all(e.payload["server"]["metrics_generated"] == 16 for e in full)
    assert all(e.payload["server"]["generated"] == 16 for e in full)  # stream usage
    assert not events(out, "token_mismatch")
    with fake("llama-server", "--tokens", "16", "--lie", "1") as (url, _):
        p = run("record", "--attach", url, "--duration", "2", "-o", str(tmp_path / "l.msgpack"))
    mism = events(tmp_path / "l.msgpack", "token_mismatch")
    assert mism and mism[0].payload == {
        "request": 1,
        "counted": 16,
        "server": 17,
        "source": "usage",
    }


def test_concurrency_apportions_energy_by_tokens_and_says_so(tmp_path):
    out = tmp_path / "c.msgpack"
    with fake("ollama", "--tokens", "30") as (url, _):
        p = run("record", "--attach", url, "--concurrency", "3", "--duration", "3", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    r = json.loads(run("report", str(out), "--json").stdout)
    q = r["requests_energy"]
    assert q["method"] == "apportioned by tokens"
    total = sum(x["joules"] for x in q["requests"])
    first = min(x["start_s"] for x in q["requests"])
    last = max(x["end_s"] for x in q["requests"])
    # the shares add up to the energy of the time some request was in flight (no gaps here)
    assert total == pytest.approx(P_W * (last - first), rel=0.05)
    assert "apportioned by tokens" in run("report", str(out)).stdout.decode()


def test_server_dropping_mid_stream_ends_a_valid_recording_with_the_reason(tmp_path):
    out = tmp_path / "d.msgpack"
    with fake("llama-server", "--drop-after", "2") as (url, _):
        p = run("record", "--attach", url, "--duration", "20", "-o", str(out))
    assert p.returncode == 1
    err = errors(p.stderr)
    assert "dropped request 2 mid-stream" in err and "Traceback" not in err
    records, recov = read_all(out)
    assert not recov.truncated and isinstance(records[-1], Footer)
    assert records[-1].totals["stopped_by"] == "worker"
    died = events(out, "worker_died")[0].payload
    assert died["server"] == url and "mid-stream" in died["reason"]


def test_http_500s_end_the_run_after_three_with_events(tmp_path):
    out = tmp_path / "e.msgpack"
    with fake("ollama", "--fail-after", "1") as (url, _):
        p = run("record", "--attach", url, "--duration", "20", "-o", str(out))
    assert p.returncode == 1 and "HTTP 500" in errors(p.stderr)
    errs = [e.payload for e in events(out, "error") if e.payload.get("stage") == "request"]
    assert len(errs) == 3 and "out of memory" in errs[0]["reason"]
    assert isinstance(read_all(out)[0][-1], Footer)


def test_one_line_errors_before_anything_starts(tmp_path):
    port = free_port()
    cases = [
        (["--attach", f"http://127.0.0.1:{port}"], "does not answer"),
        (["--attach", "ftp://127.0.0.1:1"], "bad --attach URL"),
        (["--attach", "http://192.0.2.1:8080"], "not on this machine"),
        (["--attach", f"http://127.0.0.1:{port}", "--threads", "2"], "set by the server"),
    ]
    with fake("ollama") as (url, _):
        cases.append((["--attach", url, "--attach-model", "nope"], "has no model 'nope'"))
        cases.append((["--attach", url, "--attach-pid", "999999999"], "no such process"))
        for args, want in cases:
            p = run("record", *args, "--duration", "1", "-o", str(tmp_path / "x.msgpack"))
            err = errors(p.stderr)
            assert p.returncode == 2, (args, err)
            assert want in err and len(err.strip().splitlines()) == 1, (args, err)
            assert not (tmp_path / "x.msgpack").exists() or args[0] != "--attach"


def test_observe_counts_tokens_from_metrics_or_says_it_cannot(tmp_path):
    out = tmp_path / "ob.msgpack"
    with fake("llama-server") as (url, _):
        p = run("record", "--attach", url, "--observe", "--duration", "2", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    assert not events(out, "request_start")  # no requests sent
    assert events(out, "attach_observe")[0].payload == {"tokens": True, "source": "llama-server"}
    with fake("ollama") as (url, _):
        p = run("record", "--attach", url, "--observe", "--duration", "2", "-o", str(out) + "2")
    ob = events(Path(str(out) + "2"), "attach_observe")[0].payload
    assert ob["tokens"] is False and "no /metrics" in ob["reason"]


# -- units of the stream parser --------------------------------------------------------------


class _Resp:
    def __init__(self, data: bytes) -> None:
        import io

        self.f = io.BytesIO(data)

    def readline(self, n: int) -> bytes:
        return self.f.readline(n)


def test_sse_parser_bounds_and_formats():
    ok = (
        b': comment\n\nevent: x\ndata: {"choices": [{"text": "a", "finish_reason": null}]}'
        b'\n\ndata: {"choices": [{"text": "", "finish_reason": null}]}\n\n'
        b'data: {"choices": [{"text": "", "finish_reason": "stop"}]}\n\n'
        b'data: {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 5}}\n\n'
        b"data: [DONE]\n\n"
    )
    chunks = list(openai_chunks(_Resp(ok)))  # type: ignore[arg-type]
    assert [c.tokens for c in chunks] == [1, 1, 0, 0]
    assert chunks[2].finish == "stop" and chunks[3].usage_generated == 2
    with pytest.raises(StreamError, match="over"):
        list(openai_chunks(_Resp(b"data: " + b"x" * (MAX_LINE + 10) + b"\n\n")))  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="not JSON"):
        list(openai_chunks(_Resp(b"data: {nope\n\n")))  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="error"):
        list(openai_chunks(_Resp(b'data: {"error": {"message": "boom"}}\n\n')))  # type: ignore[arg-type]
    m = parse_metrics('# HELP x\nvllm:generation_tokens_total{model_name="m"} 12.0\nfoo 1\n')
    assert m["vllm:generation_tokens_total"] == 12.0 and m["foo"] == 1.0
    assert parse_url("127.0.0.1:8080/proxy/") == ("127.0.0.1", 8080, "/proxy", False)
    with pytest.raises(AttachError):
        probe(AttachSpec(url="http://[::1"), [])


# -- a real llama_cpp.server -----------------------------------------------------------------


@pytest.fixture
def llama_server(tmp_path):
    """``python -m llama_cpp.server`` with the default model on a free loopback port."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] not installed")
    from anubis_tui.inference.models import default_model

    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_model()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # One thread: beside another model on a 2-core runner, two spin on one free core
            # and the server decoded 0.66 tok/s (1.5 s a token)
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--n_ctx",
            "1024",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/models")
            if c.getresponse().status == 200:
                break
        assert p.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        time.sleep(0.5)
    try:
        yield url, p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        log.close()


def completion_tokens(url: str, prompt: str, max_tokens: int) -> int:
    """The server's own count for one greedy, non-streamed completion (usage)."""
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    from anubis_tui.inference.worker import chat

    body = {"prompt": chat(prompt), "max_tokens": max_tokens, "temperature": 0, "seed": 1}
    body["repeat_penalty"] = 1.0
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    return int(json.loads(c.getresponse().read())["usage"]["completion_tokens"])


@pytest.mark.slow
def test_real_llama_cpp_server_tok_s_j_token_j_request_and_counts(tmp_path, llama_server):
    url, proc = llama_server
    out = tmp_path / "real.msgpack"
    p = run("record", "--attach", url, "--duration", "20", "--max-tokens", "48", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    att = events(out, "attached")[0].payload
    assert att["pid"] == proc.pid and att["python"] is True
    r = json.loads(run("report", str(out), "--json").stdout)
    assert r["tokens"]["decode_tps"] > 0 and r["energy"]["j_per_token"] > 0
    assert r["requests_energy"]["median_j"] > 0 and r["requests_energy"]["method"] == "window"
    # the server lists its GGUF path: the model's facts and sha256 come from that file
    hdr = load(out).header
    assert r["model"] == "Gemma 3 270m" and len(hdr.model["sha256"]) == 64
    assert hdr.config["attach"]["model"].endswith("gemma-3-270m-q4_k_m.gguf")
    from anubis_tui.inference.worker import BUILTIN_PROMPTS

    # requests the server finished (stop "stop" is ours, at the end of the run: partial)
    ends = [e for e in events(out, "request_end") if e.payload["stop"] in ("length", "eos")]
    assert ends
    for e in ends[:2]:
        n = e.payload["request"]
        prompt = BUILTIN_PROMPTS[(n - 1) % len(BUILTIN_PROMPTS)]
        assert e.payload["generated"] == completion_tokens(url, prompt, 48)
        assert e.payload["prompt_tokens"] > 0
    assert not events(out, "token_mismatch")
    knobs = events(out, "knobs")[-1].payload["state"]
    assert knobs["threads"] == "set by the server" == knobs["gpu_layers"]


@pytest.mark.slow
def test_real_server_pyspy_plan_profiles_the_server_process(tmp_path, llama_server):
    url, _ = llama_server
    out = tmp_path / "spy.msgpack"
    p = run("record", "--attach", url, "--plan", "off:8,py-spy@100:8", "-o", str(out))
    assert p.returncode == 0, errors(p.stderr)
    on = events(out, "profiler_on")
    assert on and on[0].payload["profiler"] == "py-spy"
    frames = [f for e in events(out, "profiler_frames") for f in e.payload.get("frames") or []]
    # the server's own code: llama_cpp's LlamaContext.decode (llama_cpp/_internals.py)
    assert any(f["function"].startswith("LlamaContext.") for f in frames), frames[:5]
    r = json.loads(run("report", str(out), "--json").stdout)
    seg = next(s for s in r["segments"] if s["profiler"] == "py-spy")  # the py-spy segment
    assert seg["decode_tokens"] > 0 and "LlamaContext." in json.dumps(seg["hot_frames"])


@pytest.mark.slow
def test_real_server_killed_mid_run_ends_the_recording_validly(tmp_path, llama_server):
    url, proc = llama_server
    out = tmp_path / "kill.msgpack"
    rec = subprocess.Popen(
        [*ANUBIS, "record", "--attach", url, "--duration", "60", "-o", str(out)],
        env=cli_env(TREE),
        stderr=subprocess.PIPE,
    )
    time.sleep(8)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = rec.communicate(timeout=60)
    assert rec.returncode == 1
    assert f"the server at {url} failed" in errors(err) and "Traceback" not in errors(err)
    records, recov = read_all(out)
    assert not recov.truncated and isinstance(records[-1], Footer)
    assert records[-1].totals["stopped_by"] == "worker"
    assert "exited" in events(out, "worker_died")[0].payload["reason"]


def test_client_pause_resume_stop_and_threads_refused():
    """The WorkerClient interface the session uses, on AttachClient directly."""
    from anubis_tui.inference.attach import AttachClient
    from anubis_tui.inference.worker import Spec
    from anubis_tui.records import Tokens

    got: list = []
    with fake("ollama", "--tokens", "40", "--token-s", "0.02") as (url, srv):
        a = probe(AttachSpec(url=url), [])
        assert a.api == "ollama" and a.pid == srv.pid
        c = AttachClient(Spec(model=str(a.model), t0_ns=time.monotonic_ns()), a, got.append)
        c.start()
        assert c.loaded.is_set() and c.loaded_info["pid"] == srv.pid
        time.sleep(0.5)
        assert c.pause() is True
        n = len([r for r in got if isinstance(r, Tokens)])
        time.sleep(0.5)  # paused: nothing in flight, no tokens
        assert len([r for r in got if isinstance(r, Tokens)]) == n
        assert c.resume() is True
        time.sleep(0.5)
        assert len([r for r in got if isinstance(r, Tokens)]) > n
        assert c.set_threads(2) is False
        c.stop()
    assert c.exited.is_set()
    kinds = [r.kind for r in got if isinstance(r, Event)]
    assert kinds[:2] == ["attached", "model_loaded"] and kinds[-1] == "worker_stopped"
    assert "paused" in kinds and "resumed" in kinds and "worker_died" not in kinds
    ends = [r.payload for r in got if isinstance(r, Event) and r.kind == "request_end"]
    assert {e["stop"] for e in ends} <= {"pause", "stop", "eos"}
    assert any(e["stop"] == "pause" for e in ends)


async def test_live_app_attached_pause_knobs_and_server_death(tmp_path, monkeypatch):
    """`anubis run --attach`: tokens come, space pauses, inference knobs are greyed with
    "set by the server", and the server's death is a notification naming it."""
    from anubis_tui.config import Config
    from anubis_tui.inference.worker import Spec
    from anubis_tui.ui.app import LiveOptions, make_app
    from tests.conftest import FIXTURES
    from tests.ui.test_app import APP_SIZE, until

    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / TREE))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    with fake("llama-server", "--tokens", "30", "--token-s", "0.02") as (url, srv):
        a = probe(AttachSpec(url=url), [])
        spec = Spec(model=str(a.model), t0_ns=0, max_tokens=64)
        app = make_app(Config(), live=LiveOptions(spec=spec, attach=a, log_path=tmp_path / "l"))
        async with app.run_test(size=APP_SIZE) as pilot:
            await until(pilot, lambda: app.state.tokens > 0, 30, "tokens")
            state = app.session.knob_state()
            assert state["threads"] == "set by the server" == state["model"]
            out = app.session.set_knob("threads", 2)
            assert not out.ok and "set by the server" in out.message
            await pilot.press("space")
            await until(pilot, lambda: app.state.paused, 10, "paused")
            await pilot.press("space")
            n = app.state.tokens
            await until(pilot, lambda: app.state.tokens > n, 10, "tokens after resume")
            srv.kill()
            await until(
                pilot,
                lambda: any(url in str(x.message) for x in app._notifications),
                15,
                "a notice naming the server",
            )
            await pilot.press("q")


def test_listen_owner_finds_our_own_listening_socket():
    from anubis_tui.inference.attach import listen_owner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        pid, uid = listen_owner(s.getsockname()[1])
    assert pid == os.getpid() and uid == os.getuid()
    assert listen_owner(free_port()) == (None, None)


def test_profilers_on_a_native_server_say_why(monkeypatch):
    """`p` on llama-server or Ollama (native programs): py-spy cannot read them, and says
    what can; scalene is refused for any attached server (it must start its target)."""
    from anubis_tui.config import Config
    from anubis_tui.inference.worker import Spec
    from anubis_tui.session import Session
    from tests.conftest import FIXTURES

    monkeypatch.setenv("ANUBIS_SYSFS_ROOT", str(FIXTURES / TREE))
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    proc = {"pid": 4242, "name": "llama-server", "cmdline": "llama-server", "uid": 0}
    a = AttachSpec(url="http://127.0.0.1:8080", api="openai", model="m", pid=4242)
    a.server = {"process": {**proc, "python": False}}
    s = Session(Config(), spec=Spec(model="m", t0_ns=0), attach=a)
    try:
        out = s.profiler_toggle("py-spy")
        assert not out.ok and "native program" in out.message and "perf top -p 4242" in out.message
        assert "must start the process" in s.profiler_toggle("scalene").message
        assert s.worker_pid() is None  # nothing for py-spy to attach to
        a.server = {"process": {**proc, "python": True}}
        assert s.attached_profiler_why("py-spy") is None
        a.server = {}
        assert "--attach-pid" in str(s.attached_profiler_why("py-spy"))
    finally:
        s.stop()


def test_a_port_served_by_another_user_is_refused(monkeypatch):
    """The socket's owner from /proc/net/tcp: we pretend to be uid 1000 against our own
    (root's or the runner's) server, as a second user would meet it."""
    import anubis_tui.inference.attach as attach_mod

    with fake("ollama") as (url, _):
        owner = os.getuid()
        monkeypatch.setattr(attach_mod.os, "getuid", lambda: owner + 1000)
        with pytest.raises(AttachError, match=f"another user's process \\(uid {owner}\\)"):
            probe(AttachSpec(url=url), [])
