"""The tuning knobs: what each is, its keys, and the ladder of values its keys step through.

A knob is a session method (`Session.set_knob` / `Session.knob_step`), a key
in the app, a ``knob`` Event (``{name, value, previous}``) and a new segment.
Inference knobs change the worker (threads live, the others by a reload);
device knobs change the machine and are undone when the session ends (see
`anubis_tui.device`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anubis_tui.inference.worker import KV_TYPES

BATCH_STEPS = (64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class KnobDef:
    name: str
    keys: str  # the app's keys: lower steps down (or cycles), upper steps up
    label: str
    group: str  # "inference" | "device"
    reload: bool  # the worker reloads the model to apply it
    help: str


KNOBS: tuple[KnobDef, ...] = (
    KnobDef("threads", "t/T", "threads", "inference", False, "llama.cpp threads, applied live"),
    KnobDef(
        "gpu_layers", "g/G", "GPU layers", "inference", True, "layers on the GPU: 0, ¼, ½, ¾, all"
    ),
    KnobDef("n_batch", "b", "batch", "inference", True, "n_batch and n_ubatch: 64 to 2048"),
    KnobDef("flash_attn", "f", "flash attn", "inference", True, "flash attention on or off"),
    KnobDef("kv_type", "k", "KV cache", "inference", True, "KV cache type: f16, q8_0, q4_0"),
    KnobDef("model", "o", "model", "inference", True, "pick a GGUF file"),
    KnobDef(
        "power_limit_w", "w/W", "GPU power", "device", False, "GPU power limit, within NVML's range"
    ),
    KnobDef("cpu_max_mhz", "c/C", "CPU max", "device", False, "cpufreq scaling_max_freq"),
    KnobDef("nvpmodel", "n", "nvpmodel", "device", False, "Jetson power mode"),
)
KNOB_BY_NAME = {k.name: k for k in KNOBS}


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


def parse_knob_value(name: str, text: str) -> Any:
    """A knob value from text (plans, the agent): ValueError with one line if it is not one."""
    if name not in KNOB_BY_NAME:
        raise ValueError(f"unknown knob {name!r}; knobs: {', '.join(KNOB_BY_NAME)}")
    t = text.strip()
    if name == "flash_attn":
        if t.lower() in ("on", "1", "true", "yes"):
            return True
        if t.lower() in ("off", "0", "false", "no"):
            return False
        raise ValueError(f"flash_attn is on or off, not {text!r}")
    if name == "kv_type":
        if t not in KV_TYPES:
            raise ValueError(f"kv_type is one of {', '.join(KV_TYPES)}")
        return t
    if name == "model":
        if not t:
            raise ValueError("model needs a path")
        return t
    if name == "gpu_layers" and t == "all":
        return -1
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"{name} needs a number, not {text!r}") from None
    if name == "power_limit_w":
        if not 1 <= v <= 5000:
            raise ValueError("power_limit_w must be within 1-5000 W")
        return v
    if v != int(v):
        raise ValueError(f"{name} needs a whole number, not {text!r}")
    n = int(v)
    if name == "gpu_layers":
        if n < -1 or n > 100_000:
            raise ValueError("gpu_layers is -1 (all), 0 or a layer count")
        return n
    if n <= 0 or n > 1_000_000:
        raise ValueError(f"{name} must be a positive number")
    return n
