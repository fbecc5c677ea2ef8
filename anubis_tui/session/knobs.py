"""The tuning knobs: what each is, its keys, and the ladder of values its keys step through.

A knob is a session method (`Session.set_knob` / `Session.knob_step`), a key
in the app, a ``knob`` Event (``{name, value, previous}``) and a new segment.
Inference knobs change the worker (threads live, the others by a reload);
device knobs change the machine and are undone when the session ends (see
`anubis_tui.device`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anubis_tui.knobspec import (
    KNOB_BY_NAME,
    KNOBS,
    KV_TYPES,
    KnobDef,
    KnobValueError,
    check_knob_value,
    parse_knob_value,
)

__all__ = [
    "KNOBS",
    "KNOB_BY_NAME",
    "KV_TYPES",
    "KnobDef",
    "KnobValueError",
    "check_knob_value",
    "kv_next",
    "layer_steps",
    "model_files",
    "parse_knob_value",
    "step_in",
]

BATCH_STEPS = (64, 128, 256, 512, 1024, 2048)


def default_threads() -> int:
    """llama-cpp-python's own default: half the CPUs, at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


def layer_steps(layers: int | None) -> list[int]:
    """0, ¼, ½, ¾ and all (-1) of the model's layers."""
    if not layers:
        return [0, -1]
    return [*sorted({0, layers // 4, layers // 2, 3 * layers // 4}), -1]


def step_in(ladder: list[Any] | tuple[Any, ...], value: Any, direction: int, wrap: bool) -> Any:
    """The next value of `ladder` from `value` (which may be off the ladder)."""
    items = list(ladder)
    if value in items:
        i = items.index(value)
    else:  # off the ladder: start from the nearest number, or the start
        nums = [x for x in items if isinstance(x, int | float) and x >= 0]
        if isinstance(value, int | float) and nums:
            i = items.index(min(nums, key=lambda x: abs(x - value)))
        else:
            i = -1 if direction > 0 else 0
    j = i + (1 if direction > 0 else -1)
    if wrap:
        return items[j % len(items)]
    return items[max(0, min(len(items) - 1, j))]


def kv_next(value: str) -> str:
    return step_in(KV_TYPES, value, 1, wrap=True)


def model_files(dirs: list[Path]) -> list[Path]:
    """GGUF files in `dirs` (not descending), sorted by name, each once."""
    seen: set[Path] = set()
    out = []
    for d in dirs:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.suffix.lower() == ".gguf" and p.is_file():
                real = p.resolve()
                if real not in seen:
                    seen.add(real)
                    out.append(p)
    return out
