"""Attach: drive an inference server people already run, and record it like the worker.

`AttachClient` has the interface the session uses of `WorkerClient` (start,
pause, resume, stop, set_threads, pid, loaded, exited, loaded_info,
log_tail) but runs no model: it sends anubis's workload (the worker's prompt
set, greedy, `max_tokens` each) to a server over its streaming HTTP API, one
request at a time per ``--concurrency`` slot, and emits the worker's records:
``request_start``, a ``prompt`` Tokens record (stamped at the first token),
``decode`` Tokens batched every `batch_s`, and ``request_end``.

APIs (``--api``; detected by default, `probe`):

* ``openai``: ``POST /v1/completions`` with ``"stream": true`` (Server-Sent
  Events, ``data: {json}`` lines, ``data: [DONE]``), as llama_cpp.server,
  llama.cpp's llama-server, vLLM and Ollama's ``/v1`` serve it
  (https://platform.openai.com/docs/api-reference/completions). Models from
  ``GET /v1/models``.
* ``ollama``: Ollama's native ``POST /api/generate`` (one JSON object a line;
  the last has ``done: true``, ``eval_count``, ``eval_duration`` in ns and
  ``prompt_eval_count``: https://github.com/ollama/ollama/blob/main/docs/api.md).
  Models from ``GET /api/tags``.

Token counts: every stream chunk that carries generated text (the final
chunk with only a ``finish_reason`` excluded) is a token; llama_cpp.server
and llama-server send one chunk a token (llama_cpp.server may join the bytes
of one multi-byte character), Ollama one line a token. The count is checked
against what the server says, where it says it: the stream's ``usage``
(``stream_options.include_usage``), Ollama's ``eval_count``, the delta of a
``/metrics`` counter over the request (llama-server
``llamacpp:tokens_predicted_total``, vLLM ``vllm:generation_tokens_total``;
one request at a time only), or ``max_tokens`` for a request that stopped on
length. A difference is a ``token_mismatch`` Event; the record keeps both.

A server that does not answer, drops a stream or fails three requests in a
row ends the run with a ``worker_died`` Event whose payload names the server
and the reason, so the recording stays valid and says why it ended.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil

from anubis_tui.errors import AnubisError
from anubis_tui.inference.worker import BUILTIN_PROMPTS, Spec, chat
from anubis_tui.records import Event, Record, Tokens

MAX_LINE = 1 << 20  # one SSE or NDJSON line; a longer one is a broken stream
MAX_EVENT = 4 << 20  # one SSE event (several data: lines joined)
MAX_BODY = 8 << 20  # a non-streamed answer (models list, metrics)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # between two chunks of a stream (a long prompt's first token)
FAILURES_TO_GIVE_UP = 3
METRIC_COUNTERS = {  # generated-token counters of servers that have /metrics
    "llamacpp:tokens_predicted_total": "llama-server",
    "vllm:generation_tokens_total": "vLLM",
}


class AttachError(AnubisError):
    """The server cannot be attached to; the message is one line for the user."""


@dataclass
class AttachSpec:
    """What to attach to and how to drive it (`--attach`, `--api`, `--concurrency`, …)."""

    url: str
    api: str | None = None  # "openai" | "ollama"; None: detect
    model: str | None = None  # the server's model name; None: its first
    concurrency: int = 1
    observe: bool = False
    pid: int | None = None  # --attach-pid; None: the process listening on the URL's port
    host: str = ""
    port: int = 0
    base: str = ""  # a path prefix in the URL (a proxy), without the trailing slash
    https: bool = False
    server: dict[str, Any] = field(default_factory=dict)  # what `probe` found

    def plain(self) -> dict[str, Any]:
        """The fields as a dict (`dataclasses.asdict`), for a Header or an Event."""
        return asdict(self)


def parse_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, path prefix, https) of an http(s) URL; AttachError for anything else."""
    try:
        u = urlsplit(url if "://" in url else "http://" + url)
        port = u.port
    except ValueError as e:
        raise AttachError(f"bad --attach URL {url!r}: {e}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise AttachError(f"bad --attach URL {url!r}: an http://HOST:PORT URL is needed")
    https = u.scheme == "https"
    return u.hostname, port or (443 if https else 80), u.path.rstrip("/"), https


def is_local(host: str) -> bool:
    """Whether `host` names this machine (loopback or one of its addresses)."""
    try:
        addrs = {str(ai[4][0]) for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address.split("%")[0] for al in psutil.net_if_addrs().values() for a in al}
    for a in addrs:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(a.split("%")[0]).is_loopback or a in mine:
                return True
    return False


def listen_owner(port: int) -> tuple[int | None, int | None]:
    """(pid, uid) of the TCP socket listening on `port` here; pid None if it is not ours.

    The uid comes from /proc/net/tcp and /proc/net/tcp6 (column ``uid``, state
    0A = LISTEN: proc(5)); the pid from psutil.net_connections, which sees only
    the sockets of processes we may read.
    """
    uid = None
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if (
                        len(cols) > 7
                        and cols[3] == "0A"
                        and int(cols[1].rsplit(":", 1)[1], 16) == port
                    ):
                        uid = int(cols[7])
                        break
        except (OSError, ValueError):
            continue
        if uid is not None:
            break
    pid = None
    with contextlib.suppress(psutil.Error, OSError):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pid = c.pid
                break
    return pid, uid


def describe_process(pid: int) -> dict[str, Any]:
    """Name, command line, user and whether it runs Python (py-spy can read it), from psutil."""
    p = psutil.Process(pid)
    with p.oneshot():
        cmd = p.cmdline()
        exe = ""
        with contextlib.suppress(psutil.Error):
            exe = p.exe()
        name = p.name()
        uid = p.uids().real
    words = [os.path.basename(exe), name, os.path.basename(cmd[0]) if cmd else ""]
    python = any(w.startswith("python") for w in words)
    return {"pid": pid, "name": name, "cmdline": " ".join(cmd)[:300], "uid": uid, "python": python}


# -- HTTP --------------------------------------------------------------------------------------


def _connection(a: AttachSpec, timeout: float) -> http.client.HTTPConnection:
    cls = http.client.HTTPSConnection if a.https else http.client.HTTPConnection
    return cls(a.host, a.port, timeout=timeout)


def http_json(a: AttachSpec, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, parsed JSON or None) of one small request; OSError if it cannot connect."""
    status, raw = http_raw(a, method, path, body)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def http_raw(a: AttachSpec, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """(status, body bytes) of one request under the URL's path prefix, JSON `body` if any.

    OSError if it cannot connect (`CONNECT_TIMEOUT_S`), on an HTTP protocol error, or for a
    body over `MAX_BODY` (8 MiB).
    """
    conn = _connection(a, CONNECT_TIMEOUT_S)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, a.base + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise OSError(f"{path}: answer over {MAX_BODY >> 20} MiB")
        return resp.status, raw
    except http.client.HTTPException as e:
        raise OSError(f"{path}: {type(e).__name__} {e}".strip()) from None
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition: ``name{labels} value`` lines, summed over labels per name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else line.partition(" ")
        value = rest.rsplit("}", 1)[-1].split()
        if not value:
            continue
        try:
            v = float(value[0])
        except ValueError:
            continue
        out[name.strip()] = out.get(name.strip(), 0.0) + v
    return out


def read_metrics(a: AttachSpec) -> dict[str, float] | None:
    """The server's /metrics counters, or None if it has none."""
    try:
        status, raw = http_raw(a, "GET", "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    m = parse_metrics(raw.decode(errors="replace"))
    return m if any(k in m for k in METRIC_COUNTERS) else None


def generated_counter(m: dict[str, float] | None) -> float | None:
    """The server's generated-token count from parsed /metrics
    (``llamacpp:tokens_predicted_total`` or ``vllm:generation_tokens_total``, whichever is
    there), in tokens; None when neither is.
    """
    if not m:
        return None
    return next((m[k] for k in METRIC_COUNTERS if k in m), None)


def probe(a: AttachSpec, prompts: list[str]) -> AttachSpec:
    """Check the server and fill in `a` (api, model, pid, server facts); AttachError if not.

    Raises AttachError (one line) for: a bad URL, a server not on this machine,
    one that does not answer, an API it does not speak, a model it does not
    have, and a listening port (or --attach-pid) owned by another user.
    """
    a.host, a.port, a.base, a.https = parse_url(a.url)
    if not is_local(a.host):
        raise AttachError(
            f"{a.url} is not on this machine: anubis measures this machine's power and heat"
        )
    pid = _port_owner(a)
    try:
        models = _list_models(a)
    except OSError as e:
        why = e.strerror or str(e)
        raise AttachError(f"{a.url} does not answer: {why}") from None
    a.model = _pick_model(a, models)
    server: dict[str, Any] = {"api": a.api, "models": models[:20]}
    pid = a.pid or pid
    if pid is not None:
        server["process"] = _server_process(pid)
    a.pid = pid
    metrics = read_metrics(a)
    server["metrics"] = (
        next(METRIC_COUNTERS[k] for k in METRIC_COUNTERS if k in metrics) if metrics else None
    )
    server["prompt_tokens"] = _tokenize_all(a, prompts)
    if a.api == "ollama":
        server.update(_ollama_details(a))
    a.server = server
    return a


def _port_owner(a: AttachSpec) -> int | None:
    """The pid listening on `a.port` (None if not ours to see); AttachError when another
    user's process serves it and no --attach-pid says which process to watch."""
    pid, uid = listen_owner(a.port)
    me = os.getuid()
    if a.pid is None and uid is not None and uid != me and me != 0:
        raise AttachError(
            f"port {a.port} is served by another user's process (uid {uid}): anubis cannot "
            "watch or profile it; run anubis as that user or pass --attach-pid"
        )
    return pid


def _models_in(body: Any, key: str, name: str) -> list[str] | None:
    """The model names of a models-list answer (``{key: [{name: ...}, ...]}``), or None."""
    if isinstance(body, dict) and isinstance(body.get(key), list):
        return [str(m.get(name)) for m in body[key] if isinstance(m, dict)]
    return None


def _list_models(a: AttachSpec) -> list[str]:
    """The server's models, setting `a.api` where it was not given: ``GET /v1/models``
    (OpenAI), else ``GET /api/tags`` (Ollama). AttachError for a server that speaks
    neither; OSError when it does not answer."""
    models: list[str] = []
    status, body = http_json(a, "GET", "/v1/models") if a.api != "ollama" else (0, None)
    found = _models_in(body, "data", "id") if status == 200 else None
    if found is not None:
        models = found
        a.api = a.api or "openai"
    elif a.api != "openai":
        status, body = http_json(a, "GET", "/api/tags")
        found = _models_in(body, "models", "name") if status == 200 else None
        if found is not None:
            models = found
            a.api = a.api or "ollama"
    if a.api is None or (status != 200 and not models):
        raise AttachError(
            f"{a.url} answers but speaks neither the OpenAI API (/v1/models) nor Ollama's "
            f"(/api/tags): HTTP {status}"
        )
    return models


def _pick_model(a: AttachSpec, models: list[str]) -> str:
    """--attach-model if the server has it, else its first model; AttachError otherwise."""
    if a.model is None:
        if not models:
            raise AttachError(f"{a.url} lists no model")
        return models[0]
    if a.model not in models:
        raise AttachError(
            f"the server at {a.url} has no model {a.model!r} (it has: {', '.join(models[:5])})"
        )
    return a.model


def _server_process(pid: int) -> dict[str, Any]:
    """`describe_process` of the server; AttachError when it is gone or another user's."""
    try:
        proc = describe_process(pid)
    except psutil.NoSuchProcess:
        raise AttachError(f"--attach-pid {pid}: no such process") from None
    except psutil.AccessDenied:
        raise AttachError(
            f"process {pid} belongs to another user: anubis cannot watch it"
        ) from None
    me = os.getuid()
    if proc["uid"] != me and me != 0:
        raise AttachError(
            f"process {pid} belongs to another user (uid {proc['uid']}): "
            "anubis cannot watch or profile it"
        )
    return proc


def _ollama_details(a: AttachSpec) -> dict[str, Any]:
    """``{"model_details": ...}``: the model's family, parameter size and quantization from
    Ollama's ``POST /api/show``, or nothing where it does not say."""
    with contextlib.suppress(OSError):
        st, body = http_json(a, "POST", "/api/show", {"model": a.model})
        if st == 200 and isinstance(body, dict) and isinstance(body.get("details"), dict):
            details = body["details"]
            return {
                "model_details": {
                    k: v for k, v in details.items() if isinstance(v, str | int | float)
                }
            }
    return {}


def _tokenize_all(a: AttachSpec, prompts: list[str]) -> dict[str, int]:
    """Prompt token counts from llama_cpp.server's /extras/tokenize/count or llama-server's
    /tokenize, where there is one (so the prompt record comes at the first token)."""
    out: dict[str, int] = {}
    for p in prompts[:64]:
        text = prompt_text(a, p)
        try:
            st, body = http_json(a, "POST", "/extras/tokenize/count", {"input": text})
            if st == 200 and isinstance(body, dict) and isinstance(body.get("count"), int):
                out[p] = body["count"]
                continue
            st, body = http_json(a, "POST", "/tokenize", {"content": text, "add_special": True})
            if st == 200 and isinstance(body, dict) and isinstance(body.get("tokens"), list):
                out[p] = len(body["tokens"])
                continue
        except OSError:
            pass
        break
    return out


def prompt_text(a: AttachSpec, prompt: str) -> str:
    """The text sent: Gemma's chat turn, as the worker sends it, for a Gemma model through the
    completions API; the prompt as is otherwise (Ollama applies the model's template itself)."""
    if a.api == "openai" and "gemma" in (a.model or "").lower():
        return chat(prompt)
    return prompt


# -- streams -----------------------------------------------------------------------------------


class StreamError(AnubisError):
    """A stream that broke: dropped, over a bound, or not the format it should be."""


def read_line(resp: http.client.HTTPResponse) -> bytes:
    """One line of a stream (b"" at EOF); StreamError past `MAX_LINE` (1 MiB)."""
    line = resp.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise StreamError(f"a stream line over {MAX_LINE >> 20} MiB")
    return line


def sse_events(resp: http.client.HTTPResponse) -> Iterator[str]:
    """The data of each Server-Sent Event (its ``data:`` lines joined), bounded in size.

    Comments (``:``) and other fields (``event:``, ``id:``) are skipped; the
    stream ends at EOF. StreamError for a line or event over its bound.
    """
    data: list[str] = []
    size = 0
    while True:
        line = read_line(resp)
        if not line:
            if data:
                yield "\n".join(data)
            return
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
            data, size = [], 0
            continue
        if text.startswith("data:"):
            v = text[5:]
            v = v[1:] if v.startswith(" ") else v
            size += len(v)
            if size > MAX_EVENT:
                raise StreamError(f"an event over {MAX_EVENT >> 20} MiB")
            data.append(v)


def ndjson_lines(resp: http.client.HTTPResponse) -> Iterator[str]:
    """The non-blank lines of a newline-delimited JSON stream (Ollama's), stripped, to EOF."""
    while line := read_line(resp):
        text = line.decode("utf-8", errors="replace").strip()
        if text:
            yield text


@dataclass
class Chunk:
    """One piece of a stream: `tokens` generated (0 for a closing message) and what the
    server said about the request where it said it."""

    tokens: int
    finish: str | None = None
    usage_generated: int | None = None
    usage_prompt: int | None = None
    eval_ns: int | None = None


def openai_chunks(resp: http.client.HTTPResponse) -> Iterator[Chunk]:
    """Chunks of an OpenAI ``/v1/completions`` SSE stream, up to ``[DONE]`` or EOF.

    A choice's text counts as one token (llama-server and vLLM stream a token an event);
    ``usage`` gives the server's own ``completion_tokens`` and ``prompt_tokens`` where sent.
    StreamError for an event that is not a JSON object, or an ``error`` one.
    """
    for data in sse_events(resp):
        if data.strip() == "[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"not JSON in the stream: {data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise StreamError("a stream event that is not a JSON object")
        if "error" in obj:
            raise StreamError(f"the server sent an error: {str(obj['error'])[:200]}")
        c = Chunk(0)
        choices = obj.get("choices") or []
        ch = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(ch, dict):
            text = ch.get("text")
            c.finish = ch.get("finish_reason") if isinstance(ch.get("finish_reason"), str) else None
            if isinstance(text, str) and (text or c.finish is None):
                c.tokens = 1
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                c.usage_generated = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                c.usage_prompt = usage["prompt_tokens"]
        yield c


def ollama_chunks(resp: http.client.HTTPResponse) -> Iterator[Chunk]:
    """Chunks of an Ollama ``/api/generate`` NDJSON stream, one token a line, up to ``done``.

    The ``done`` line carries ``eval_count`` and ``prompt_eval_count`` (tokens) and
    ``eval_duration`` (ns). StreamError for a line that is not a JSON object, or an ``error``
    one.
    """
    for line in ndjson_lines(resp):
        try:
            obj = json.loads(line)
        except ValueError:
            raise StreamError(f"not JSON in the stream: {line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise StreamError("a stream line that is not a JSON object")
        if obj.get("error"):
            raise StreamError(f"the server sent an error: {str(obj['error'])[:200]}")
        if obj.get("done"):
            c = Chunk(1 if obj.get("response") else 0, finish=str(obj.get("done_reason") or "stop"))
            if isinstance(obj.get("eval_count"), int):
                c.usage_generated = obj["eval_count"]
            if isinstance(obj.get("prompt_eval_count"), int):
                c.usage_prompt = obj["prompt_eval_count"]
            if isinstance(obj.get("eval_duration"), int):
                c.eval_ns = obj["eval_duration"]
            yield c
            return
        yield Chunk(1 if isinstance(obj.get("response"), str) else 0)


# -- the client --------------------------------------------------------------------------------


@dataclass
class _Progress:
    """One request as its stream comes in: token counts, times (ns since the session's
    start) and what the server said; `stop` and `failed` say how it ended."""

    n: int
    t_start: int
    prompt_n: int | None
    batch_ns: float
    generated: int = 0
    pending: int = 0  # decode tokens not yet in a Tokens record
    t_first: int = 0
    t_last: int = 0
    t_pending: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    stop: str = ""
    failed: str = ""

    def take(self, c: Chunk, now: int) -> list[Tokens]:
        """Count chunk `c`, received at `now`; the Tokens records it makes due: the prompt's
        at the first token (when its size is known), a decode batch every `batch_ns`."""
        self._server_says(c)
        if not c.tokens:
            return []
        out: list[Tokens] = []
        if self.generated == 0:
            self.t_first = now
            if self.prompt_n is not None:
                out.append(Tokens(now, self.prompt_n, "prompt", self.n, self.t_start))
        self.generated += c.tokens
        self.t_last = now
        if self.pending == 0:
            self.t_pending = now
        self.pending += c.tokens
        if now - self.t_pending >= self.batch_ns:
            out.append(Tokens(now, self.pending, "decode", self.n, self.t_pending))
            self.pending = 0
        return out

    def _server_says(self, c: Chunk) -> None:
        if c.usage_generated is not None:
            self.server["generated"] = c.usage_generated
        if c.usage_prompt is not None:
            self.server["prompt_tokens"] = c.usage_prompt
        if c.eval_ns is not None:
            self.server["eval_ns"] = c.eval_ns
        if c.finish:  # the worker's words: "eos" for an end of generation
            self.stop = "eos" if c.finish == "stop" else c.finish

    def end_payload(self) -> dict[str, Any]:
        """The ``request_end`` Event's payload."""
        return {
            "request": self.n,
            "prompt_tokens": self.prompt_n,
            "generated": self.generated,
            "stop": self.stop or ("error" if self.failed else "end"),
            "ttft_ns": (self.t_first - self.t_start) if self.generated else None,
            "decode_ns": (self.t_last - self.t_first) if self.generated > 1 else None,
            "server": self.server,
        }


class ServerLost(AnubisError):
    """The server is gone (or fails every request): the run ends."""


class AttachClient:
    """Drives a server with the workload; the `WorkerClient` interface the session uses."""

    def __init__(self, spec: Spec, attach: AttachSpec, emit: Callable[[Record], None]) -> None:
        self.spec = spec
        self.attach = attach
        self.emit = emit
        self.proc = None  # no child process: the server is not ours
        self.pid: int | None = attach.pid
        self.exited = threading.Event()
        self.loaded = threading.Event()
        self.loaded_info: dict[str, Any] = {}
        self.load_error: str | None = None
        self.returncode: int | None = None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._lock = threading.Lock()
        self._next = 0
        self._in_flight = 0
        self._conns: set[http.client.HTTPConnection] = set()
        self._threads: list[threading.Thread] = []
        self._failures = 0
        self._lost = False
        self._log: list[str] = []
        self._prompt_tokens: dict[str, int] = dict(attach.server.get("prompt_tokens") or {})
        self.requests = 0

    # -- the WorkerClient interface ---------------------------------------------------------

    def start(self) -> None:
        """Emit ``attached`` and ``model_loaded`` at once (the server has the model), then start
        the driving threads (`AttachSpec.concurrency` of them) or, with --observe, one reading
        /metrics.
        """
        a = self.attach
        proc = a.server.get("process") or {}
        self.loaded_info = {
            "load_s": 0.0,
            "model": a.model or "",
            "pid": self.pid,
            "attach": a.url,
            "api": a.api,
            "server": proc.get("name"),
        }
        self.emit(
            Event(
                self._now(),
                "attached",
                {
                    "url": a.url,
                    "api": a.api,
                    "model": a.model,
                    "pid": self.pid,
                    "process": proc.get("cmdline"),
                    "python": proc.get("python"),
                    "metrics": a.server.get("metrics"),
                    "concurrency": a.concurrency,
                    "observe": a.observe,
                },
            )
        )
        self.emit(
            Event(
                self._now(),
                "model_loaded",
                {k: v for k, v in self.loaded_info.items() if v is not None},
            )
        )
        self.loaded.set()
        if a.observe:
            target, n = self._observe, 1
        else:
            target, n = self._drive, max(1, a.concurrency)
        for i in range(n):
            t = threading.Thread(
                target=self._run_safely, args=(target,), name=f"attach-{i}", daemon=True
            )
            self._threads.append(t)
            t.start()
        threading.Thread(target=self._reap, name="attach-reap", daemon=True).start()

    def pause(self) -> bool:
        """Hold new requests; waits up to 5 s for those in flight to end, then emits ``paused``.

        False once the client has exited.
        """
        if self.exited.is_set():
            return False
        self._resume.clear()
        end = time.monotonic() + 5.0
        while self._in_flight and time.monotonic() < end:
            time.sleep(0.02)
        self.emit(Event(self._now(), "paused", {}))
        return True

    def resume(self) -> bool:
        """Emit ``resumed`` and let requests go again; False once the client has exited."""
        if self.exited.is_set():
            return False
        self.emit(Event(self._now(), "resumed", {}))
        self._resume.set()
        return True

    def set_threads(self, n: int) -> bool:
        """Refused: the server's threads are set by the server."""
        return False

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the threads, cutting any open stream (its socket is shut down); its return code
        (0, 1 when the server was lost; None if the threads outlast `timeout` s).
        """
        self._stop.set()
        self._resume.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # a stream waiting on the server ends now
            with contextlib.suppress(OSError, AttributeError):
                if c.sock is not None:
                    c.sock.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout)
        self.exited.wait(timeout)
        return self.returncode

    def log_tail(self, lines: int = 10) -> list[str]:
        """The last `lines` notes of this client (failed requests, the server lost), kept up to
        50, each at most 300 characters.
        """
        return self._log[-lines:]

    # -- internals ----------------------------------------------------------------------------

    def _now(self) -> int:
        return time.monotonic_ns() - self.spec.t0_ns

    def _note(self, line: str) -> None:
        self._log.append(line[:300])
        del self._log[:-50]

    def _reap(self) -> None:
        for t in self._threads:
            t.join()
        if not self._lost:
            self.emit(Event(self._now(), "worker_stopped", {"requests": self.requests}))
        self.returncode = 0 if not self._lost else 1
        self.exited.set()

    def _run_safely(self, target: Callable[[], None]) -> None:
        try:
            target()
        except ServerLost as e:
            self._lose(str(e))
        except Exception as e:  # a bug here must not leave the session waiting
            self._lose(f"attach client: {e!r}"[:300])

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._lost or self._stop.is_set():
                return
            self._lost = True
        self._stop.set()
        self._resume.set()
        self._note(reason)
        self.emit(
            Event(
                self._now(),
                "worker_died",
                {"server": self.attach.url, "reason": reason, "log_tail": self.log_tail()},
            )
        )

    def _server_alive(self) -> bool | None:
        if self.pid is None:
            return None
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _gone(self, what: str) -> ServerLost:
        alive = self._server_alive()
        for _ in range(10):  # a killed process closes its sockets a moment before it is reaped
            if alive is not True:
                break
            time.sleep(0.05)
            alive = self._server_alive()
        if alive is False:
            return ServerLost(f"the server process {self.pid} exited ({what})")
        return ServerLost(what)

    def _observe(self) -> None:
        """--observe: no requests; generated tokens from /metrics deltas every second."""
        a = self.attach
        if not a.server.get("metrics"):
            self.emit(
                Event(
                    self._now(),
                    "attach_observe",
                    {
                        "tokens": False,
                        "reason": "the server has no /metrics endpoint: no token counts",
                    },
                )
            )
            while not self._stop.wait(1.0):
                if self._server_alive() is False:
                    raise ServerLost(f"the server process {self.pid} exited")
            return
        self.emit(
            Event(self._now(), "attach_observe", {"tokens": True, "source": a.server["metrics"]})
        )
        last_t = self._now()
        last = generated_counter(read_metrics(a))
        while not self._stop.wait(1.0):
            m = read_metrics(a)
            now = self._now()
            cur = generated_counter(m)
            if cur is None:
                if self._server_alive() is False:
                    raise ServerLost(f"the server process {self.pid} exited")
                continue
            if last is not None and cur > last:
                self.emit(Tokens(now, int(cur - last), "decode", 0, last_t))
            last, last_t = cur, now

    def _drive(self) -> None:
        prompts = self.spec.prompts or BUILTIN_PROMPTS
        while not self._stop.is_set():
            if not self._resume.is_set():
                self._resume.wait()
                continue
            with self._lock:
                if self.spec.max_requests is not None and self._next >= self.spec.max_requests:
                    return
                self._next += 1
                n = self._next
                self._in_flight += 1
            try:
                ok = self._request(n, prompts[(n - 1) % len(prompts)])
            finally:
                with self._lock:
                    self._in_flight -= 1
            if ok:
                self._failures = 0
                continue
            self._failures += 1
            if self._failures >= FAILURES_TO_GIVE_UP:
                raise self._gone(f"{self._failures} requests in a row failed: {self._log[-1]}")
            self._stop.wait(0.5)

    def _body(self, text: str) -> tuple[str, dict[str, Any]]:
        a, s = self.attach, self.spec
        if a.api == "ollama":
            return "/api/generate", {
                "model": a.model,
                "prompt": text,
                "stream": True,
                "options": {"temperature": 0, "seed": s.seed, "num_predict": s.max_tokens},
            }
        return "/v1/completions", {
            "model": a.model,
            "prompt": text,
            "max_tokens": s.max_tokens,
            "temperature": 0,
            "seed": s.seed,
            "repeat_penalty": 1.0,  # llama_cpp.server's default 1.1 is not greedy
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def _request(self, n: int, prompt: str) -> bool:
        """One streamed request and its records; False if it failed (an Event says why).

        ServerLost when the server is gone: it refuses connections, its process
        exited, it dropped the stream, or it no longer has the model.
        """
        a = self.attach
        path, body = self._body(prompt_text(a, prompt))
        before = (
            generated_counter(read_metrics(a))
            if a.server.get("metrics") and a.concurrency == 1
            else None
        )
        conn = _connection(a, CONNECT_TIMEOUT_S)
        with self._lock:
            self._conns.add(conn)  # before the request: `stop` can cut it from here on
        t_start = self._now()
        self.emit(Event(t_start, "request_start", {"request": n}))
        r = _Progress(
            n=n,
            t_start=t_start,
            prompt_n=self._prompt_tokens.get(prompt),
            batch_ns=self.spec.batch_s * 1e9,
        )
        self._exchange(conn, path, body, r)
        self._close_request(r, prompt, before)
        return self._judge(r)

    def _exchange(
        self, conn: http.client.HTTPConnection, path: str, body: dict[str, Any], r: _Progress
    ) -> None:
        """Send the request on `conn` and read its answer into `r` (`r.stop`, `r.failed` say
        how it ended); `conn` is closed at the end. ServerLost for a model gone."""
        try:
            conn.request(
                "POST",
                self.attach.base + path,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )
            if conn.sock is not None:
                conn.sock.settimeout(READ_TIMEOUT_S)
            resp = conn.getresponse()
            if resp.status != 200:
                self._refused(resp, path, r)
            else:
                self._read_stream(resp, r)
        except ServerLost:
            raise
        except (OSError, http.client.HTTPException, StreamError) as e:
            if self._stop.is_set():
                r.stop = "stop"
            else:
                r.failed = f"{type(e).__name__}: {e}".strip().rstrip(":")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _refused(self, resp: http.client.HTTPResponse, path: str, r: _Progress) -> None:
        """A non-200 answer: `r.failed` says it; ServerLost when the model is gone (404)."""
        detail = resp.read(2000).decode(errors="replace").strip().replace("\n", " ")
        r.failed = f"HTTP {resp.status} from {path}: {detail[:200]}"
        if resp.status == 404 and "model" in detail.lower():
            raise ServerLost(
                f"the server no longer has model {self.attach.model!r}: {detail[:200]}"
            )

    def _read_stream(self, resp: http.client.HTTPResponse, r: _Progress) -> None:
        """The stream's chunks into `r`, its Tokens records emitted as they fall due; a
        stop or a pause ends the request early, a stream without a finish reason is dropped."""
        chunks = ollama_chunks(resp) if self.attach.api == "ollama" else openai_chunks(resp)
        for c in chunks:
            for rec in r.take(c, self._now()):
                self.emit(rec)
            if self._stop.is_set() or not self._resume.is_set():
                r.stop = "stop" if self._stop.is_set() else "pause"
                return
        if self._stop.is_set():
            r.stop = r.stop or "stop"
        elif not r.stop:
            r.failed = "the stream ended without a finish reason (dropped)"

    def _close_request(self, r: _Progress, prompt: str, before: float | None) -> None:
        """The request's last records: the pending decode batch, the prompt's Tokens where
        only the stream's usage gave its size, and ``request_end`` with the server's counts."""
        n = r.n
        if r.pending:
            self.emit(Tokens(r.t_last, r.pending, "decode", n, r.t_pending))
        if r.prompt_n is None and r.generated and isinstance(r.server.get("prompt_tokens"), int):
            r.prompt_n = r.server["prompt_tokens"]
            self._prompt_tokens[prompt] = r.prompt_n
            self.emit(Tokens(r.t_first, r.prompt_n, "prompt", n, r.t_start))  # the reader orders it
        if before is not None and not r.failed and r.stop not in ("stop", "pause"):
            after = generated_counter(read_metrics(self.attach))
            if after is not None:
                r.server["metrics_generated"] = int(after - before)
        self.emit(Event(self._now(), "request_end", r.end_payload()))
        self.requests += 1
        self._cross_check(n, r.generated, r.stop, r.server)

    def _judge(self, r: _Progress) -> bool:
        """True for a request that went through; for a failed one an ``error`` Event and
        False, or ServerLost where the failure says the server is gone."""
        failed = r.failed
        if not failed:
            return True
        self._note(failed)
        self.emit(
            Event(self._now(), "error", {"stage": "request", "request": r.n, "reason": failed})
        )
        if self._server_alive() is False or "refused" in failed.lower():
            raise self._gone(failed)
        if "dropped" in failed or "RemoteDisconnected" in failed or "IncompleteRead" in failed:
            raise self._gone(f"the server dropped request {r.n} mid-stream: {failed}")
        return False

    def _cross_check(self, n: int, counted: int, stop: str, server: dict[str, Any]) -> None:
        """A ``token_mismatch`` Event where the server's own count differs from the stream's."""
        checks = [
            (src, server.get(key))
            for src, key in (("usage", "generated"), ("metrics", "metrics_generated"))
        ]
        if stop == "length":
            checks.append(("max_tokens", self.spec.max_tokens))
        for src, value in checks:
            if isinstance(value, int) and value != counted:
                self.emit(
                    Event(
                        self._now(),
                        "token_mismatch",
                        {"request": n, "counted": counted, "server": value, "source": src},
                    )
                )
