"""The scripted workload: prompts from a file or the built-in set, and token statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anubis_tui.config import read_regular
from anubis_tui.errors import AnubisError
from anubis_tui.records import Event, Record

MAX_PROMPT_FILE = 64 << 20


class WorkloadError(AnubisError):
    """A bad prompt file; the message is one line for the user."""


def load_prompts(path: str | None) -> list[str]:
    """One prompt a line, or JSONL with a "prompt" key; blank lines are skipped."""
    if path is None:
        return []
    try:
        text = read_regular(Path(path), MAX_PROMPT_FILE, "a prompt file").decode()
    except OSError as e:
        raise WorkloadError(f"cannot read prompt file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"prompt file {path} is not UTF-8 text") from None
    prompts: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{path}:{n}: bad JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise WorkloadError(f'{path}:{n}: a JSONL line needs a "prompt" string')
            prompts.append(obj["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise WorkloadError(f"prompt file {path} has no prompts")
    return prompts


@dataclass
class TokenStats:
    """Totals over whole requests, from the worker's own stamps and llama.cpp's timers."""

    requests: int = 0
    generated: int = 0
    prompt_tokens: int = 0
    decode_intervals: int = 0
    decode_ns: int = 0
    ttft_ns: list[int] = field(default_factory=list)
    llama_n_eval: int = 0
    llama_t_eval_ms: float = 0.0
    llama_n_p_eval: int = 0
    llama_t_p_eval_ms: float = 0.0

    def add(self, rec: Record) -> None:
        """Fold one record: only ``request_end`` Events count, others are ignored.

        Reads the payload's ``generated``, ``prompt_tokens``, ``ttft_ns``,
        ``decode_ns`` and llama.cpp's timer map ``llama`` (``n_eval``, ``t_eval_ms``,
        ``n_p_eval``, ``t_p_eval_ms``, from ``llama_perf_context``); missing keys count 0.
        """
        if not (isinstance(rec, Event) and rec.kind == "request_end"):
            return
        p = rec.payload
        self.requests += 1
        self.generated += int(p.get("generated") or 0)
        self.prompt_tokens += int(p.get("prompt_tokens") or 0)
        if p.get("ttft_ns") is not None:
            self.ttft_ns.append(int(p["ttft_ns"]))
        if p.get("decode_ns"):
            self.decode_ns += int(p["decode_ns"])
            self.decode_intervals += int(p["generated"]) - 1
        ll: dict[str, Any] = p.get("llama") or {}
        self.llama_n_eval += int(ll.get("n_eval") or 0)
        self.llama_t_eval_ms += float(ll.get("t_eval_ms") or 0)
        self.llama_n_p_eval += int(ll.get("n_p_eval") or 0)
        self.llama_t_p_eval_ms += float(ll.get("t_p_eval_ms") or 0)

    @property
    def decode_tps(self) -> float | None:
        """Decode tokens/s: Σ(generated − 1) / Σ decode time (first to last token); None
        before any.
        """
        return self.decode_intervals / (self.decode_ns / 1e9) if self.decode_ns else None

    @property
    def prompt_tps(self) -> float | None:
        """Prompt tokens/s: Σ prompt tokens / Σ time to first token; None before any."""
        t = sum(self.ttft_ns)
        return self.prompt_tokens / (t / 1e9) if t else None

    @property
    def ttft_s(self) -> float | None:
        """Median time to first token in seconds (upper median for an even count); None
        before any.
        """
        if not self.ttft_ns:
            return None
        s = sorted(self.ttft_ns)
        return s[len(s) // 2] / 1e9

    @property
    def llama_decode_tps(self) -> float | None:
        """Decode tokens/s by llama.cpp's own timers: Σ n_eval / Σ t_eval; None without them."""
        t = self.llama_t_eval_ms
        return self.llama_n_eval / (t / 1e3) if t else None

    @property
    def llama_prompt_tps(self) -> float | None:
        """Prompt tokens/s by llama.cpp's own timers: Σ n_p_eval / Σ t_p_eval; None without them."""
        t = self.llama_t_p_eval_ms
        return self.llama_n_p_eval / (t / 1e3) if t else None
