"""The real worker on the real default model (small token counts to keep CI fast)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anubis_tui.inference.client import WorkerClient
from anubis_tui.inference.models import default_model
from anubis_tui.inference.worker import Spec
from anubis_tui.inference.workload import TokenStats
from anubis_tui.records import Event, Tokens
from tests.conftest import ANUBIS, cli_env, errors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> str:
    return str(default_model())


class Collector:
    def __init__(self) -> None:
        self.records: list = []
        self.cond = threading.Condition()

    def __call__(self, rec) -> None:
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 60.0):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if pred(r):
                        return r
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; last records: {self.records[-5:]}")
                self.cond.wait(left)

    def events(self, kind: str) -> list[Event]:
        with self.cond:
            return [r for r in self.records if isinstance(r, Event) and r.kind == kind]


def start(model: str, tmp_path: Path, **kw) -> tuple[WorkerClient, Collector]:
    c = Collector()
    spec = Spec(model=model, t0_ns=time.monotonic_ns(), threads=2, **kw)
    client = WorkerClient(spec, c, tmp_path / "worker.log")
    client.start()
    return client, c


def test_token_counts_and_stamps_are_consistent_with_llama_timers(model, tmp_path):
    client, c = start(model, tmp_path, max_tokens=48, max_requests=3)
    c.wait_for(lambda r: isinstance(r, Event) and r.kind == "worker_stopped", 120)
    client.stop()
    toks = [r for r in c.records if isinstance(r, Tokens)]
    stamps = [r.t for r in c.records if hasattr(r, "t")]
    assert stamps == sorted(stamps), "records arrive in time order"
    ends = c.events("request_end")
    assert len(ends) == 3
    for e in ends:
        rid = e.payload["request"]
        decode = sum(t.count for t in toks if t.request == rid and t.phase == "decode")
        prompt = [t for t in toks if t.request == rid and t.phase == "prompt"]
        assert decode == e.payload["generated"] > 1
        assert len(prompt) == 1 and prompt[0].count == e.payload["prompt_tokens"]
        assert all(t.t_first <= t.t for t in toks)
        # llama.cpp evaluates every generated token but the last
        assert e.payload["llama"]["n_eval"] == e.payload["generated"] - 1
    stats = TokenStats()
    for r in c.records:
        stats.add(r)
    assert stats.decode_tps is not None and stats.llama_decode_tps is not None
    # Our stamps are wall-clock between tokens; llama.cpp's timer counts only its eval calls.
    # Ours can come out slower (the Python loop, a loaded runner), never faster beyond the
    # timers' granularity. How close they are is a speed figure, kept in
    # bench/worker_vs_llamacpp.py (0.98 on the VM): beside a model on 2 cores it fell under 0.95.
    assert stats.decode_tps <= stats.llama_decode_tps * 1.02
    assert stats.decode_tps >= stats.llama_decode_tps * 0.7  # a gross stamping error only
    # batching: at most one decode record per batch_s of decode time (plus each request's
    # first and last), whatever the token rate, never one record per token at high rates
    decode = [t for t in toks if t.phase == "decode"]
    windows = stats.decode_ns / 1e9 / Spec(model="", t0_ns=0).batch_s
    assert len(decode) <= windows + 2 * len(ends)
    assert sum(t.count for t in decode) == stats.generated
    assert not Path(tmp_path / "worker.log").read_text().count("Traceback")


def test_sigkill_is_detected_within_a_second(model, tmp_path):
    client, c = start(model, tmp_path, max_tokens=64)
    c.wait_for(lambda r: isinstance(r, Tokens))
    t = time.monotonic()
    os.kill(client.proc.pid, signal.SIGKILL)
    died = c.wait_for(lambda r: isinstance(r, Event) and r.kind == "worker_died", 5)
    assert time.monotonic() - t < 1.0
    assert died.payload["signal"] == "SIGKILL" and died.payload["returncode"] == -9
    client.stop()


def test_pause_stops_tokens_and_resume_restarts_them(model, tmp_path):
    client, c = start(model, tmp_path, max_tokens=64)
    c.wait_for(lambda r: isinstance(r, Tokens) and r.phase == "decode")
    assert client.pause()
    c.wait_for(lambda r: isinstance(r, Event) and r.kind == "paused", 30)
    n = len(c.records)
    time.sleep(1.0)
    assert not [r for r in c.records[n:] if isinstance(r, Tokens)]
    assert client.resume()
    resumed = c.wait_for(lambda r: isinstance(r, Event) and r.kind == "resumed", 10)
    c.wait_for(lambda r: isinstance(r, Tokens) and r.t > resumed.t, 30)
    assert client.set_threads(1)
    c.wait_for(lambda r: isinstance(r, Event) and r.kind == "threads" and r.payload["n"] == 1)
    assert client.stop() == 0
    assert c.events("worker_died") == []


def test_bench_json(model):
    p = subprocess.run(
        [*ANUBIS, "bench", "--duration", "4", "--json", "--threads", "1", "--max-tokens", "32"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for k in ("decode_tps", "prompt_tps", "ttft_s", "tokens_generated", "threads", "model"):
        assert k in d
    # Behaviour, not speed (speed lives in bench/): tokens came, both timers saw them.
    assert d["tokens_generated"] > 1 and d["decode_tps"] > 0 and d["threads"] == 1
    assert d["model"]["quantization"] == "Q4_K_M"
    assert d["llama"]["decode_tps"] > 0
    assert d["sampling"] == "argmax" and d["n_batch"] > 0 and d["n_ubatch"] > 0  # CPU default
    assert d["llama"]["ratio"] == pytest.approx(d["decode_tps"] / d["llama"]["decode_tps"])


GREEDY_SCRIPT = """
import json, sys
from anubis_tui.inference.worker import BUILTIN_PROMPTS, DecodeLoop, chat
from anubis_tui.inference.worker import quiet_llama, use_extra_bufts
import llama_cpp
quiet_llama(llama_cpp)
use_extra_bufts(None)
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, verbose=False)
out = {"reference": []}
for prompt in BUILTIN_PROMPTS[:3]:
    toks = llm.tokenize(chat(prompt).encode(), add_bos=True, special=True)
    ref = []
    for t in llm.generate(toks, temp=0.0, reset=True):
        ref.append(t)
        if t == llm.token_eos() or len(ref) >= 48:
            break
    out["reference"].append(ref)
out["modes"] = {}
for mode in ("argmax", "chain", "backend"):  # backend last: it stays on the context
    loop = DecodeLoop(llm, llama_cpp, mode)
    got = []
    for prompt in BUILTIN_PROMPTS[:3]:
        toks = llm.tokenize(chat(prompt).encode(), add_bos=True, special=True)
        nat = []
        for t in loop.generate(toks):
            nat.append(t)
            if loop.is_end(t) or len(nat) >= 48:
                break
        got.append(nat)
    out["modes"][loop.sampling.mode] = got
print(json.dumps(out))
"""


def test_native_loop_gives_the_same_greedy_tokens_as_llama_generate(model):
    p = subprocess.run(
        [sys.executable, "-c", GREEDY_SCRIPT, model],
        capture_output=True,
        text=True,
        timeout=280,  # four decodes of 3 prompts on a loaded 2-core runner
        check=False,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(out["modes"]) == ["argmax", "backend", "chain"]
    assert all(len(r) >= 8 for r in out["reference"])
    for mode, tokens in out["modes"].items():
        assert tokens == out["reference"], mode


def test_out_of_memory_at_load_is_one_line():
    import resource

    def limit() -> None:  # 700 MB of address space: python runs, the model's context does not
        resource.setrlimit(resource.RLIMIT_AS, (700_000_000, 700_000_000))

    p = subprocess.run(
        [*ANUBIS, "bench", "--duration", "2"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
        preexec_fn=limit,
    )
    assert p.returncode == 2
    err = errors(p.stderr)
    assert err.startswith("anubis: model failed to load") and err.count("\n") == 1
