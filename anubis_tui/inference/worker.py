"""The inference worker: ``python -m anubis_tui.inference.worker SPEC_JSON``.

Runs llama-cpp-python on a scripted workload until told to stop, and streams
records to the parent as msgpack over the Unix socket named in the spec (a
socket, not an inherited fd: scalene re-executes its target with
``close_fds``):
Tokens (batched every `batch_s`, never one record per token) and Events
(``model_loaded``, ``request_start``, ``request_end``, ``threads``,
``paused``, ``resumed``, ``error``, ``worker_stopped``). Stamps are
CLOCK_MONOTONIC nanoseconds minus the session start the parent passes in,
so they line up with the sampler's. Commands arrive on stdin as msgpack maps:
``{"cmd": "pause" | "resume" | "stop" | "threads", "n": int}``.

Token accounting: each request's prompt is one ``prompt`` Tokens record
stamped when the first token comes out (so TTFT = its t − request start);
every generated token, the first included, is a ``decode`` token stamped when
it is yielded. Decode tok/s is (tokens − 1) / (last − first stamp).

llama.cpp's log goes to this process's stderr, which the parent points at a
log file: nothing reaches the terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from anubis_tui.knobspec import KV_TYPES  # the one list of KV cache types
from anubis_tui.stream import Limits, StreamReader, decode

PR_SET_PTRACER = 0x59616D61
EXIT_LOAD_FAILED = 3


@dataclass
class Spec:
    """What the worker runs; the parent serialises it as JSON on argv.

    `t0_ns` is the parent's CLOCK_MONOTONIC at the session start (ns), the zero
    of every stamp; `n_ctx`, `n_batch`, `n_ubatch` and `max_tokens` are in
    tokens; `batch_s` is the decode Tokens granularity (one record per
    `batch_s` of decode within a request, s); `flush_s` is how often queued
    records are written to the socket (s: the parent's reader wakes at most
    1 / `flush_s` times a second for them); `gpu_layers` -1 offloads every
    layer.
    """

    model: str
    t0_ns: int
    socket: str = ""  # Unix socket the parent listens on (survives launchers that close fds)
    prompts: list[str] = field(default_factory=list)
    threads: int | None = None
    gpu_layers: int = 0
    n_ctx: int = 1024
    max_tokens: int = 128
    seed: int = 1
    flash_attn: bool = False
    extra_bufts: bool | None = None  # None: off where the CPU has AMX (see design.md)
    batch_s: float = 0.05
    flush_s: float = 0.2  # 5 wake-ups a second of the parent's reader (each ~150-200 µs)
    max_requests: int | None = None
    sampling: str | None = None  # "backend" | "argmax" | "chain"; None: by where layers run
    n_batch: int = 512
    n_ubatch: int = 512
    kv_type: str = "f16"  # the KV cache's type, K and V: "f16" | "q8_0" | "q4_0"


def default_sampling(gpu_layers: int) -> str:
    """In the graph on a GPU; a numpy argmax on the CPU (see `Sampling`)."""
    return "backend" if gpu_layers != 0 else "argmax"


BUILTIN_PROMPTS = [
    "Explain how a heat pump moves heat from a cold place to a warm one.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "List five ways to make a small Python program run faster, with one sentence each.",
    "What causes the seasons on Earth? Answer for a curious ten-year-old.",
    "Describe the water cycle in four steps.",
    "Write a haiku about a graphics card that runs too hot.",
    "Compare trains and planes for a 500 km trip in terms of energy use.",
    "Summarise the rules of chess in one paragraph.",
]


def chat(prompt: str) -> str:
    """Gemma's chat turn format, so the model answers instead of echoing."""
    return f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"


def cpu_has_amx() -> bool:
    """Whether /proc/cpuinfo's ``flags`` line lists ``amx_tile`` (Intel AMX); False if
    unreadable.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


class Sender:
    """Packs records onto the parent's socket.

    `send` writes at once (after anything queued, so order holds): lifecycle
    Events a UI must see now (loaded, paused, errors). `queue` is for the
    per-request stream (Tokens, request_start/request_end): a flusher thread
    writes what is queued every `flush_s` (s; 0: `queue` sends at once), so
    the parent wakes up at most 1 / `flush_s` times a second for it whatever
    the token rate (a GPU's 1,000 tok/s costs the parent what 100 tok/s
    does); a record waits at most `flush_s` (plus the write).
    """

    def __init__(self, path: str, t0_ns: int, flush_s: float = 0.2) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.t0 = t0_ns
        self.packer = msgpack.Packer()
        self.lock = threading.Lock()
        self._out = bytearray()
        self._closed = threading.Event()
        if flush_s > 0:
            threading.Thread(
                target=self._flusher, args=(flush_s,), name="flusher", daemon=True
            ).start()
        else:
            self.queue = self.send  # type: ignore[method-assign]

    def now(self) -> int:
        """Nanoseconds since the session start (CLOCK_MONOTONIC less the parent's `t0_ns`)."""
        return time.monotonic_ns() - self.t0

    def _write_locked(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self.sock.sendall(data)

    def send(self, *records: list[Any]) -> None:
        """Pack `records` (plain forms) after anything queued and write them now.

        Raises OSError (BrokenPipeError, ConnectionResetError) when the parent has
        gone; TypeError for a value msgpack cannot pack.
        """
        with self.lock:
            for r in records:
                self._out += self.packer.pack(r)
            self._write_locked()

    def queue(self, *records: list[Any]) -> None:
        """Pack `records` for the next flush (every `flush_s`); `send` itself when batching
        is off.
        """
        with self.lock:
            for r in records:
                self._out += self.packer.pack(r)

    def flush(self) -> None:
        """Write what is queued now; OSError when the parent has gone."""
        with self.lock:
            self._write_locked()

    def _flusher(self, period_s: float) -> None:
        while not self._closed.wait(period_s):
            try:
                self.flush()
            except OSError:  # the parent went away; the control thread stops the loop
                return

    def close(self) -> None:
        """Stop the flusher thread and write what is queued; a gone parent is ignored."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self.flush()

    def event(self, kind: str, **payload: Any) -> None:
        """Send an Event record (type code 3) with `kind` and `payload` now; errors as `send`."""
        self.send([3, self.now(), kind, payload])

    def queue_event(self, kind: str, **payload: Any) -> None:
        """Queue an Event record (type code 3) for the next flush."""
        self.queue([3, self.now(), kind, payload])


CONTROL_LIMITS = Limits(buffer=1 << 16, str_len=1 << 10, bin_len=0, array_len=16, map_len=16)
"""The parent's commands are small maps (``{"cmd": "threads", "n": 4}``): anything larger,
or not msgpack, is dropped and the reading starts afresh (`anubis_tui.stream`)."""


class Control:
    """Reads commands from stdin in a thread; the generation loop polls the flags.

    End of input (the parent went away) is a stop; bytes that are not a command are
    skipped: nothing here may end the thread while the parent can still send.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.threads: int | None = None
        threading.Thread(target=self._run, name="control", daemon=True).start()

    def _run(self) -> None:
        stdin = functools.partial(os.read, 0)
        for batch in decode(stdin, StreamReader(CONTROL_LIMITS, on_error="resync"), 4096):
            for msg in batch.objects:
                if isinstance(msg, dict):
                    self._command(msg)
        self.stop.set()  # the parent went away: stop
        self.resume.set()

    def _command(self, msg: dict[Any, Any]) -> None:
        cmd = msg.get("cmd")
        if cmd == "stop":
            self.stop.set()
            self.resume.set()
        elif cmd == "pause":
            self.resume.clear()
            self.paused.set()
        elif cmd == "resume":
            self.paused.clear()
            self.resume.set()
        elif cmd == "threads" and isinstance(msg.get("n"), int) and msg["n"] > 0:
            self.threads = msg["n"]


def allow_parent_ptrace() -> None:
    """Under Yama ptrace_scope=1 let the parent's descendants (py-spy) attach; EINVAL elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PTRACER, os.getppid(), 0, 0, 0)
    except (OSError, AttributeError):
        pass


_LOG_CALLBACK: list[Any] = []  # the ctypes callback must outlive every llama object
GGML_LOG_LEVEL_DEBUG = 1


def quiet_llama(llama_cpp: Any) -> Any:
    """Send llama.cpp's log (no debug lines) to stderr, which the parent points at a log file."""

    @llama_cpp.llama_log_callback
    def log(level: int, text: bytes, user_data: Any) -> None:
        if level == GGML_LOG_LEVEL_DEBUG:
            return
        with contextlib.suppress(OSError):
            os.write(2, text)

    _LOG_CALLBACK.append(log)
    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    return log


def use_extra_bufts(wanted: bool | None) -> bool:
    """Keep or turn off ggml's extra buffer types (AMX, repack) for the next model load.

    They crash in decode on AMX CPUs in some VMs (seen here), so None means off
    where /proc/cpuinfo lists AMX. llama-cpp-python does not expose the flag:
    its default model params are patched. Returns whether they stay on.
    """
    import llama_cpp
    import llama_cpp.llama as llama_mod

    extra = wanted if wanted is not None else not cpu_has_amx()
    if not extra:
        orig = llama_cpp.llama_model_default_params

        def params() -> Any:
            p = orig()
            p.use_extra_bufts = False
            return p

        llama_mod.llama_cpp.llama_model_default_params = params
    return extra


def load(spec: Spec, sender: Sender) -> Any:
    """Load `spec.model` with llama-cpp-python and send a ``model_loaded`` Event (load time,
    threads, backends).

    Raises ValueError for an unknown KV cache type, and whatever
    ``llama_cpp.Llama`` raises for a file it cannot load (`run` reports it as an
    ``error`` Event and exits with `EXIT_LOAD_FAILED`).
    """
    import llama_cpp

    quiet_llama(llama_cpp)
    extra = use_extra_bufts(spec.extra_bufts)
    kv = getattr(llama_cpp, f"GGML_TYPE_{spec.kv_type.upper()}", None)
    if spec.kv_type not in KV_TYPES or kv is None:
        raise ValueError(f"unknown KV cache type {spec.kv_type!r}")
    t = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=spec.model,
        n_ctx=spec.n_ctx,
        # Both: llama.cpp's batch threads (prompt processing) default to every core, so
        # one knob value is one setup only when it sets decode and batch threads alike.
        n_threads=spec.threads,
        n_threads_batch=spec.threads,
        n_gpu_layers=spec.gpu_layers,
        n_batch=spec.n_batch,
        n_ubatch=min(spec.n_ubatch, spec.n_batch),
        type_k=kv,
        type_v=kv,
        seed=spec.seed,
        flash_attn=spec.flash_attn,
        verbose=False,
    )
    sender.event(
        "model_loaded",
        load_s=time.perf_counter() - t,
        threads=llm.n_threads if hasattr(llm, "n_threads") else spec.threads,
        threads_batch=getattr(llm, "n_threads_batch", spec.threads),
        gpu_layers=spec.gpu_layers,
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        n_batch=spec.n_batch,
        kv_type=spec.kv_type,
        flash_attn=spec.flash_attn,
        model=os.path.basename(spec.model),
        extra_bufts=extra,
        system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        pid=os.getpid(),
        # The controller sends SIGILL/SIGBUS only when this is true (SIGILL kills plain Python).
        under_scalene="scalene.scalene_profiler" in sys.modules,
    )
    return llm


class Sampling:
    """Greedy next-token choice, where it costs least.

    * ``backend``: a greedy sampler attached to the context
      (`llama_set_sampler`) runs inside the compute graph, on the GPU when
      layers are offloaded; 4 bytes come back instead of a row of logits
      (Gemma 3: 262,144 floats, 1 MiB a token). The default with GPU layers.
    * ``argmax``: numpy's argmax over a zero-copy view of the logits row.
      The default on the CPU: there the in-graph sampler made llama.cpp's own
      eval 8-12 % slower on this project's 2-core machine (docs/design.md),
      while the argmax costs 0.1 ms and leaves the eval alone.
    * ``chain``: the C sampler chain (`llama_sampler_sample`), the fallback.

    `mode` says which one runs.
    """

    def __init__(self, llama_cpp: Any, ctx: Any, vocab: Any, want: str) -> None:
        self.ll = llama_cpp
        self.ctx = ctx
        self.chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        llama_cpp.llama_sampler_chain_add(self.chain, llama_cpp.llama_sampler_init_greedy())
        self.mode = "chain"
        self.next_token = self._chain
        if want == "backend":
            setter = getattr(llama_cpp, "llama_set_sampler", None)
            getter = getattr(llama_cpp, "llama_get_sampled_token_ith", None)
            if setter is not None and getter is not None and setter(ctx, 0, self.chain):
                self.mode, self._get = "backend", getter
                self.next_token = self._backend
                return
            want = "argmax"
        if want == "argmax":
            import numpy as np  # after llama_cpp: the other order crashed a CUDA build's load

            n = int(llama_cpp.llama_vocab_n_tokens(vocab))
            get_row = llama_cpp.llama_get_logits_ith
            as_array = np.ctypeslib.as_array

            def argmax() -> int:
                return int(as_array(get_row(ctx, -1), (n,)).argmax())

            self.mode, self.next_token = "argmax", argmax

    def _backend(self) -> int:
        return int(self._get(self.ctx, -1))

    def _chain(self) -> int:
        return int(self.ll.llama_sampler_sample(self.chain, self.ctx, -1))

    def reset(self) -> None:
        """Reset the sampler chain's state before a new prompt (``llama_sampler_reset``)."""
        self.ll.llama_sampler_reset(self.chain)


class DecodeLoop:
    """One persistent `llama_batch` and `llama_decode`: no logits copied into Python.

    `generate` yields greedy tokens for a prompt (the same tokens as
    `Llama.generate(temp=0)`), decoding each token except the last, so
    llama.cpp's ``n_eval`` is generated − 1 as before.
    """

    def __init__(self, llm: Any, llama_cpp: Any, sampling: str = "backend") -> None:
        self.ll = llama_cpp
        self.ctx = llm._ctx.ctx
        self.n_ctx = int(llm.n_ctx())
        self.n_batch = max(1, int(llm.n_batch))
        self.vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.sampling = Sampling(llama_cpp, self.ctx, self.vocab, sampling)
        self.stopped = ""  # why the last generate ended early: "ctx" or "decode error N"

    def _fill(self, tokens: list[int], pos0: int) -> None:
        b = self.batch
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 0
        b.logits[len(tokens) - 1] = 1

    def _decode(self, tokens: list[int], pos0: int) -> bool:
        self._fill(tokens, pos0)
        rc = self.ll.llama_decode(self.ctx, self.batch)
        if rc != 0:
            self.stopped = f"decode error {rc}"
            return False
        return True

    def generate(self, prompt: list[int]) -> Iterator[int]:
        """Yield greedy token ids for `prompt` (token ids) until the caller stops or it cannot go
        on.

        Clears the KV cache first. Stops early with `stopped` set to ``"ctx"`` when
        the context (`n_ctx` tokens) is full and to ``"decode error N"`` when
        ``llama_decode`` returns N ≠ 0; never raises for those.
        """
        self.stopped = ""
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        self.sampling.reset()
        if len(prompt) >= self.n_ctx:
            self.stopped = "ctx"
            return
        for i in range(0, len(prompt), self.n_batch):
            if not self._decode(prompt[i : i + self.n_batch], i):
                return
        pos = len(prompt)
        while True:
            tok = self.sampling.next_token()
            yield tok
            if pos >= self.n_ctx:
                self.stopped = "ctx"
                return
            if not self._decode([tok], pos):
                return
            pos += 1

    def is_end(self, tok: int) -> bool:
        """Whether `tok` ends generation (``llama_vocab_is_eog``: EOS, EOT and the like)."""
        return bool(self.ll.llama_vocab_is_eog(self.vocab, tok))

    def close(self) -> None:
        """Free the batch and the sampler chain (``llama_batch_free``, ``llama_sampler_free``)."""
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_sampler_free(self.sampling.chain)


def run(spec: Spec) -> int:
    """The worker's life: load, then answer commands and generate until told to stop.

    Returns the exit status: 0 after a clean stop, `EXIT_LOAD_FAILED` when the
    model does not load (the reason goes to the parent as an ``error`` Event).
    """
    allow_parent_ptrace()
    sender = Sender(spec.socket, spec.t0_ns, spec.flush_s)
    sender.event("worker_started", pid=os.getpid())
    control = Control()
    try:
        llm = load(spec, sender)
    except Exception as e:  # the parent turns this into one line for the user
        sender.event("error", stage="load", reason=f"{type(e).__name__}: {e}")
        return EXIT_LOAD_FAILED
    import llama_cpp

    ctx = llm._ctx.ctx
    loop = DecodeLoop(llm, llama_cpp, spec.sampling or default_sampling(spec.gpu_layers))
    prompts = spec.prompts or BUILTIN_PROMPTS
    request = 0
    batch = spec.batch_s * 1e9
    sender.event(
        "sampling",
        mode=loop.sampling.mode,
        n_batch=loop.n_batch,
        n_ubatch=int(llm.context_params.n_ubatch),
        flash_attn=spec.flash_attn,
    )
    while not control.stop.is_set():
        if spec.max_requests is not None and request >= spec.max_requests:
            break
        if control.paused.is_set():
            sender.event("paused")
            control.resume.wait()
            if control.stop.is_set():
                break
            sender.event("resumed")
        if control.threads is not None:
            n, control.threads = control.threads, None
            llama_cpp.llama_set_n_threads(ctx, n, n)  # decode and batch threads alike
            sender.event("threads", n=n, threads_batch=n)
        prompt = prompts[request % len(prompts)]
        request += 1
        t_start = sender.now()
        sender.queue_event("request_start", request=request)
        tokens = llm.tokenize(chat(prompt).encode(), add_bos=True, special=True)
        llama_cpp.llama_perf_context_reset(ctx)
        generated = 0
        pending = 0
        t_first_pending = 0
        t_first_token = 0
        t_last = 0
        stopped = ""
        for tok in loop.generate(tokens):
            now = sender.now()
            if generated == 0:
                t_first_token = now
                sender.queue([2, now, len(tokens), "prompt", request, t_start])
            generated += 1
            t_last = now
            if pending == 0:
                t_first_pending = now
            pending += 1
            if loop.is_end(tok):
                stopped = "eos"
            elif generated >= spec.max_tokens:
                stopped = "length"
            elif control.stop.is_set():
                stopped = "stop"
            elif control.paused.is_set():
                stopped = "pause"
            if now - t_first_pending >= batch or stopped:
                sender.queue([2, now, pending, "decode", request, t_first_pending])
                pending = 0
            if stopped:
                break
            if control.threads is not None:
                n, control.threads = control.threads, None
                llama_cpp.llama_set_n_threads(ctx, n, n)
                sender.event("threads", n=n, threads_batch=n)
        if pending:  # the loop ended on its own (context full, a decode error)
            sender.queue([2, t_last, pending, "decode", request, t_first_pending])
        failed = loop.stopped.startswith("decode error")
        if failed:
            sender.event("error", stage="decode", reason=loop.stopped)
        perf = llama_cpp.llama_perf_context(ctx)
        sender.queue_event(
            "request_end",
            request=request,
            prompt_tokens=len(tokens),
            generated=generated,
            stop=stopped or loop.stopped or "end",
            ttft_ns=(t_first_token - t_start) if generated else None,
            decode_ns=(t_last - t_first_token) if generated > 1 else None,
            llama={
                "n_p_eval": perf.n_p_eval,
                "t_p_eval_ms": perf.t_p_eval_ms,
                "n_eval": perf.n_eval,
                "t_eval_ms": perf.t_eval_ms,
            },
        )
        if failed:
            break
    loop.close()
    llm.close()  # free native state while the log callback is still alive
    sender.event("worker_stopped", requests=request)
    sender.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m anubis_tui.inference.worker SPEC_JSON``; returns the exit
    status (2 on bad usage).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m anubis_tui.inference.worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = Spec(**json.loads(argv[0]))
    # A native crash leaves the Python stack in the log (stderr is the log file).
    faulthandler.enable()
    # SIGINT belongs to the parent's terminal session; the parent stops us with a command.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return run(spec)


if __name__ == "__main__":
    raise SystemExit(main())
