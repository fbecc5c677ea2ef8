"""Stand-ins for servers this machine cannot run: Ollama's native API and llama-server's
OpenAI stream with its /metrics (standard library only; tests/integration/test_attach.py).

They speak exactly the documented formats, so the attach client meets them as it would
the real servers:

* ``ollama``: ``GET /api/tags`` → ``{"models": [{"name": ...}]}``; ``POST /api/generate``
  with ``"stream": true`` → one JSON object a line, ``{"model", "created_at", "response",
  "done": false}`` a token, then ``{"done": true, "done_reason", "total_duration",
  "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
  "eval_duration"}`` (durations in ns): https://github.com/ollama/ollama/blob/main/docs/api.md
* ``llama-server``: ``GET /v1/models``; ``POST /v1/completions`` with ``"stream": true`` →
  Server-Sent Events ``data: {"choices": [{"text", "index", "finish_reason"}], ...}``, a
  last chunk with ``finish_reason`` and, with ``stream_options.include_usage``, a chunk
  with ``usage`` and empty ``choices``, then ``data: [DONE]``; ``GET /metrics`` in the
  Prometheus text format with ``llamacpp:prompt_tokens_total`` and
  ``llamacpp:tokens_predicted_total`` (llama.cpp tools/server/README.md, "GET /metrics").

``python -m tests.fakes.llm_servers KIND [--tokens N] [--token-s S] [--drop-after R]
[--lie N] [--fail-after R]`` prints ``port N`` and serves on 127.0.0.1 until killed.
``--drop-after R`` closes the connection mid-stream from request R on; ``--fail-after R``
answers HTTP 500 from request R on; ``--lie N`` reports N more generated tokens than sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gemma3:270m"


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.requests = 0
        self.prompt_total = 0
        self.predicted_total = 0


def make_handler(kind: str, st: State) -> type[BaseHTTPRequestHandler]:
    a = st.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if kind == "ollama" and self.path == "/api/tags":
                self._json(200, {"models": [{"name": MODEL, "model": MODEL, "size": 1}]})
            elif kind == "llama-server" and self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            elif kind == "llama-server" and self.path == "/metrics":
                text = (
                    "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
                    "# TYPE llamacpp:prompt_tokens_total counter\n"
                    f"llamacpp:prompt_tokens_total {st.prompt_total}\n"
                    "# HELP llamacpp:tokens_predicted_total Number of generation tokens "
                    "processed.\n"
                    "# TYPE llamacpp:tokens_predicted_total counter\n"
                    f"llamacpp:tokens_predicted_total {st.predicted_total}\n"
                    "llamacpp:requests_processing 0\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                self._post()
            except (BrokenPipeError, ConnectionResetError):  # the client went away: fine
                self.close_connection = True

        def _post(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            want = kind == "ollama" and self.path == "/api/generate"
            want = want or (kind == "llama-server" and self.path == "/v1/completions")
            if not want:
                self._json(404, {"error": "not found"})
                return
            if body.get("model") != MODEL:
                self._json(404, {"error": f"model '{body.get('model')}' not found"})
                return
            with st.lock:
                st.requests += 1
                r = st.requests
            if a.fail_after and r >= a.fail_after:
                self._json(500, {"error": "out of memory"})
                return
            prompt_n = len(str(body.get("prompt", "")).split()) + 2
            limit = body.get("max_tokens") or (body.get("options") or {}).get("num_predict")
            count = min(a.tokens, int(limit or a.tokens))
            self.send_response(200)
            ctype = "application/x-ndjson" if kind == "ollama" else "text/event-stream"
            self.send_header("Content-Type", ctype)
            self.send_header("Connection", "close")
            self.end_headers()
            t0 = time.monotonic_ns()
            with st.lock:
                st.prompt_total += prompt_n
            for i in range(count):
                time.sleep(a.token_s)
                if a.drop_after and r >= a.drop_after and i == count // 2:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                with st.lock:
                    st.predicted_total += 1
                if kind == "ollama":
                    self._line(
                        {
                            "model": MODEL,
                            "created_at": "2026-11-29T00:00:00Z",
                            "response": f" w{i}",
                            "done": False,
                        }
                    )
                else:
                    self._sse(
                        {
                            "id": f"cmpl-{r}",
                            "object": "text_completion",
                            "model": MODEL,
                            "choices": [
                                {
                                    "text": f" w{i}",
                                    "index": 0,
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
            ns = time.monotonic_ns() - t0
            reason = "length" if count == limit else "stop"
            if kind == "ollama":
                self._line(
                    {
                        "model": MODEL,
                        "created_at": "2026-11-29T00:00:00Z",
                        "response": "",
                        "done": True,
                        "done_reason": reason,
                        "total_duration": ns,
                        "load_duration": 1000,
                        "prompt_eval_count": prompt_n,
                        "prompt_eval_duration": 1000,
                        "eval_count": count + a.lie,
                        "eval_duration": ns,
                    }
                )
            else:
                self._sse(
                    {
                        "id": f"cmpl-{r}",
                        "object": "text_completion",
                        "model": MODEL,
                        "choices": [
                            {"text": "", "index": 0, "logprobs": None, "finish_reason": reason}
                        ],
                    }
                )
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._sse(
                        {
                            "id": f"cmpl-{r}",
                            "object": "text_completion",
                            "model": MODEL,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt_n,
                                "completion_tokens": count + a.lie,
                                "total_tokens": prompt_n + count,
                            },
                        }
                    )
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def _line(self, obj: Any) -> None:
            self.wfile.write(json.dumps(obj).encode() + b"\n")
            self.wfile.flush()

        def _sse(self, obj: Any) -> None:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("ollama", "llama-server"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--token-s", type=float, default=0.01)
    p.add_argument("--drop-after", type=int, default=0)
    p.add_argument("--fail-after", type=int, default=0)
    p.add_argument("--lie", type=int, default=0)
    args = p.parse_args(argv)
    st = State(args)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.kind, st))
    srv.daemon_threads = True
    print(f"port {srv.server_address[1]}", flush=True)
    sys.stdout.flush()
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
