"""What a value of each knob may be: the one check every knob value passes.

The knobs themselves (their keys, ladders and how they apply) are
`anubis_tui.session.knobs`; this table of types and ranges sits at the bottom
of the layers so the config file, flags, plans, the agent and the session
all check values with the same code before anything acts on them.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import Any

from anubis_tui.errors import AnubisError

KV_TYPES = ("f16", "q8_0", "q4_0")
"""llama.cpp KV cache types a knob may pick (ggml type names); quantized V needs flash attention."""

MAX_PATH = 4096  # PATH_MAX on Linux: a longer model path cannot name a file


@dataclass(frozen=True)
class KnobDef:
    """One knob: its keys and label, and the type and range every value of it must have.

    `kind` is ``int``, ``float``, ``bool``, ``choice`` (one of `choices`) or
    ``path`` (a regular file); `lo`/`hi` bound ``int`` and ``float`` values
    (inclusive, in the knob's unit). `check_knob_value` applies them to every
    value from every input (agent, plan, ``sweep --knob``, keys).
    """

    name: str
    keys: str  # the app's keys: lower steps down (or cycles), upper steps up
    label: str
    group: str  # "inference" | "device"
    reload: bool  # the worker reloads the model to apply it
    help: str
    kind: str = "int"
    lo: float = 0
    hi: float = 0
    choices: tuple[str, ...] = ()


KNOBS: tuple[KnobDef, ...] = (
    # Ranges: what llama.cpp and the devices can take, wide enough for any real machine,
    # narrow enough that int() and the C side never overflow (1e308 threads, inf MHz).
    KnobDef(
        "threads",
        "t/T",
        "threads",
        "inference",
        False,
        "llama.cpp threads, applied live",
        "int",
        1,
        4096,
    ),
    KnobDef(
        "gpu_layers",
        "g/G",
        "GPU layers",
        "inference",
        True,
        "layers on the GPU: 0, ¼, ½, ¾, all",
        "int",
        -1,
        100_000,
    ),
    KnobDef(
        "n_batch",
        "b",
        "batch",
        "inference",
        True,
        "n_batch and n_ubatch: 64 to 2048",
        "int",
        1,
        1 << 16,
    ),
    KnobDef(
        "flash_attn", "f", "flash attn", "inference", True, "flash attention on or off", "bool"
    ),
    KnobDef(
        "kv_type",
        "k",
        "KV cache",
        "inference",
        True,
        "KV cache type: f16, q8_0, q4_0",
        "choice",
        choices=tuple(KV_TYPES),
    ),
    KnobDef("model", "o", "model", "inference", True, "pick a GGUF file", "path"),
    KnobDef(
        "power_limit_w",
        "w/W",
        "GPU power",
        "device",
        False,
        "GPU power limit, within NVML's range",
        "float",
        1,
        5000,
    ),
    KnobDef(
        "cpu_max_mhz",
        "c/C",
        "CPU max",
        "device",
        False,
        "cpufreq scaling_max_freq",
        "int",
        1,
        100_000,
    ),
    KnobDef("nvpmodel", "n", "nvpmodel", "device", False, "Jetson power mode", "int", 0, 1000),
)
KNOB_BY_NAME = {k.name: k for k in KNOBS}


class KnobValueError(AnubisError, ValueError):
    """A knob value of the wrong type or out of range; the message is one line."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_knob_value(name: str, value: Any) -> Any:
    """`value` checked against knob `name`'s type and range, normalised; KnobValueError if not.

    The one check every knob value passes before anything acts on it. Numbers
    must be finite and within `KnobDef.lo`..`hi`; ``int`` knobs take whole
    floats (4.0) but never bools or strings; ``bool`` knobs take only bools;
    a ``path`` must name a regular file (checked with ``stat``, which never
    blocks on a FIFO; `anubis_tui.inference.models.read_gguf` opens it
    without blocking too).
    """
    k = KNOB_BY_NAME.get(name) if isinstance(name, str) else None
    if k is None:
        raise KnobValueError(f"unknown knob {_show(name)}; knobs: {', '.join(KNOB_BY_NAME)}")
    if k.kind == "bool":
        if not isinstance(value, bool):
            raise KnobValueError(f"{name} is on or off (true/false), not {_show(value)}")
        return value
    if k.kind == "choice":
        if not isinstance(value, str) or value not in k.choices:
            raise KnobValueError(f"{name} is one of {', '.join(k.choices)}, not {_show(value)}")
        return value
    if k.kind == "path":
        return _check_path(name, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KnobValueError(f"{name} needs a number, not {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise KnobValueError(f"{name} needs a finite number, not {value}")
    if not k.lo <= value <= k.hi:
        span = f"a positive number up to {k.hi:g}" if k.lo == 1 else f"within {k.lo:g} to {k.hi:g}"
        raise KnobValueError(f"{name} must be {span}, not {_show(value)}")
    if k.kind == "float":
        return float(value)
    if value != int(value):
        raise KnobValueError(f"{name} needs a whole number, not {_show(value)}")
    return int(value)


def _check_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KnobValueError(f"{name} needs a path, not {_show(value)}")
    if "\0" in value or len(value) > MAX_PATH:
        raise KnobValueError(f"{name}: not a usable path ({_show(value)})")
    try:
        st = os.stat(os.path.expanduser(value))
    except OSError as e:
        raise KnobValueError(f"{name}: {value}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KnobValueError(f"{name}: {value} is not a regular file")
    return value


def parse_knob_value(name: str, text: str) -> Any:
    """A knob value from text (plans, ``sweep --knob``), checked by `check_knob_value`.

    KnobValueError (a ValueError) with one line if it is not one.
    """
    k = KNOB_BY_NAME.get(name)
    if k is None:
        raise KnobValueError(f"unknown knob {name!r}; knobs: {', '.join(KNOB_BY_NAME)}")
    t = text.strip()
    value: Any = t
    if k.kind == "bool":
        if t.lower() in ("on", "1", "true", "yes"):
            value = True
        elif t.lower() in ("off", "0", "false", "no"):
            value = False
        else:
            raise KnobValueError(f"{name} is on or off, not {text!r}")
    elif k.kind in ("int", "float"):
        if name == "gpu_layers" and t == "all":
            value = -1
        else:
            try:
                value = int(t)
            except ValueError:
                try:
                    value = float(t)
                except ValueError:
                    raise KnobValueError(f"{name} needs a number, not {text!r}") from None
    return check_knob_value(name, value)
