"""One launcher for the llama.cpp jobs anubis runs in a child process (issue 22).

The quantizer (`anubis_tui.inference.variants`) and the perplexity pass
(`anubis_tui.inference.quality`) each run ``python -m MODULE SPEC_JSON`` so
that llama.cpp's log and any native crash stay out of the monitor. A child
answers on stdout, says what went wrong on stderr (its own lines start with
``anubis:``) and exits non-zero on failure; `run_module` turns a timeout or a
failure into the caller's one-line error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

OURS = "anubis:"
ERROR_WORDS = ("error", "failed", "invalid", "unsupported")


def reason(stderr: str, rc: int, *, llama_first: bool = False) -> str:
    """Why a child failed, in one line (at most 200 characters).

    The child's own last ``anubis:`` line, else llama.cpp's last error line
    (one with error, failed, invalid or unsupported in it, cut to start at
    ``llama_model_quantize…:`` where llama.cpp's unterminated progress line
    precedes it), else the last line, else how the child ended (a signal or
    its exit status). `llama_first`: llama.cpp's error line before the
    child's own (the quantizer's own line only repeats llama.cpp's status).
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [ln.removeprefix(OURS).strip() for ln in lines if ln.startswith(OURS)]
    theirs = [ln for ln in lines if not ln.startswith(OURS)]
    llama = None
    for ln in reversed(theirs):
        if any(w in ln.lower() for w in ERROR_WORDS):
            cut = max(ln.rfind("llama_model_quantize:"), ln.rfind("llama_model_quantize_impl:"))
            llama = ln[cut if cut >= 0 else 0 :][:200]
            break
    for found in (llama, ours[-1][:200] if ours else None)[:: 1 if llama_first else -1]:
        if found:
            return found
    if rc < 0:
        return f"killed by signal {-rc}"
    return theirs[-1][:200] if theirs else f"exit status {rc}"


def run_module(
    module: str,
    spec: dict[str, Any],
    *,
    what: str,
    error: type[Exception],
    timeout_s: float,
    llama_first: bool = False,
    hint: Callable[[], str] | None = None,
) -> str:
    """Run ``python -m MODULE SPEC_JSON`` (this interpreter) and return its stdout.

    Raises `error` with one line: "{what} took more than {timeout_s} s" when it
    runs past `timeout_s` (seconds; the child is killed), or "{what}: {reason}"
    (`reason`, plus `hint()`'s text) when it exits non-zero.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise error(f"{what} took more than {timeout_s:g} s") from None
    if proc.returncode != 0:
        why = reason(proc.stderr, proc.returncode, llama_first=llama_first)
        raise error(f"{what}: {why}{hint() if hint else ''}")
    return proc.stdout
