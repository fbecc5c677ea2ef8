"""The tuning knobs as objects: what each is, its keys, range, step, how it applies, and why not.

A knob is a session method (`Session.set_knob` / `Session.knob_step`), a key
in the app, a ``knob`` Event (``{name, value, previous}``) and a new segment.
Each knob is one `Knob` subclass: its name and keys (`KnobDef`, the bottom
layer's table), its range (`Knob.range`), its step (`Knob.step`, `Knob.next`),
how it applies (`Knob.applies`: ``live``, ``reload`` or ``device``) and why it
cannot change here (`Knob.read`). Values are checked by the one validator,
`anubis_tui.knobspec.check_knob_value` (`Knob.check`). A knob reads its
session only through a `KnobContext`, a snapshot the session builds; the
session applies a change by `Knob.applies` and never branches over names.
Inference knobs change the worker (threads live, the others by a reload);
device knobs change the machine and are undone when the session ends (see
`anubis_tui.device`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from anubis_tui.device import ControlError, DeviceSettings
from anubis_tui.errors import AnubisError
from anubis_tui.inference.models import ModelError, read_gguf
from anubis_tui.inference.worker import Spec
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
    "DEVICE",
    "KNOBS",
    "KNOB_BY_NAME",
    "KNOB_CLASSES",
    "KV_TYPES",
    "LIVE",
    "RELOAD",
    "Knob",
    "KnobContext",
    "KnobDef",
    "KnobRefused",
    "KnobValueError",
    "LiveKnob",
    "check_knob_value",
    "knob_table",
    "layer_steps",
    "model_files",
    "parse_knob_value",
    "step_in",
]

LIVE = "live"  # the running worker takes it at once (no reload, no segment gap)
RELOAD = "reload"  # the worker restarts with a new Spec and reloads the model
DEVICE = "device"  # the machine changes (NVML, sysfs, nvpmodel); put back at exit

BATCH_STEPS = (64, 128, 256, 512, 1024, 2048)


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


class KnobRefused(AnubisError):
    """A checked value this knob cannot take here and now; the message is one line."""


class _Threads(Protocol):
    def set_threads(self, n: int) -> bool: ...


@dataclass(frozen=True)
class KnobContext:
    """What a knob reads of its session, at one moment (built by `Session`).

    `spec` is the worker's Spec (None: no model in this session); `attached_model`
    is the attached server's model name when an attached server runs inference
    (its inference knobs are the server's); `gpu_offload` is the loaded
    llama.cpp's ``llama_supports_gpu_offload()`` (None until a model loads);
    `model_layers` the GGUF's block count; `model_choices` lists the GGUF files
    the model knob offers; `cpu_count` is ``os.cpu_count()``.
    """

    spec: Spec | None
    device: DeviceSettings | None = None
    attached: bool = False
    attached_model: str | None = None
    gpu_offload: bool | None = None
    model_layers: int | None = None
    model_choices: Callable[[], list[Path]] = list
    cpu_count: int = 1


class Knob:
    """One knob. Subclasses set `name` (a `KnobDef` name), `applies` and `step`.

    The value, its reason not to change, its next step and the Spec fields a
    reload sets are methods of a `KnobContext`; nothing here changes a session.
    """

    name: ClassVar[str]
    applies: ClassVar[str]  # LIVE | RELOAD | DEVICE
    step: ClassVar[str]  # how one key press moves it, for the user

    @property
    def define(self) -> KnobDef:
        """This knob's row of the bottom layer's table (`knobspec.KNOB_BY_NAME`): kind, keys, label,
        range.
        """
        return KNOB_BY_NAME[self.name]

    @property
    def keys(self) -> str:
        """The app's keys: lower steps down (or cycles), upper steps up (``t/T``)."""
        return self.define.keys

    @property
    def label(self) -> str:
        """The short name the app's knob panel and help show (`KnobDef.label`)."""
        return self.define.label

    @property
    def range(self) -> tuple[float, float] | tuple[str, ...]:
        """(lo, hi) inclusive for numbers, the choices for a choice; () for bools and paths."""
        d = self.define
        if d.kind in ("int", "float"):
            return (d.lo, d.hi)
        return d.choices

    def check(self, value: Any) -> Any:
        """`value` typed and in range (`check_knob_value`); KnobValueError (one line) if not."""
        return check_knob_value(self.name, value)

    def read(self, ctx: KnobContext) -> tuple[Any, str]:
        """The value now, and why it cannot be changed here ("" when it can)."""
        raise NotImplementedError

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The value one key press moves `value` to (`direction` 1 up, -1 down)."""
        raise NotImplementedError

    def refusal(self, value: Any, ctx: KnobContext) -> str:
        """Why `value` cannot be set here ("" when it can): by default `read`'s reason."""
        return self.read(ctx)[1]


class InferenceKnob(Knob):
    """A field of the worker's `Spec`; a change reloads the model unless it applies live."""

    applies = RELOAD

    def read(self, ctx: KnobContext) -> tuple[Any, str]:
        """The Spec field's value; None with "no model" (no Spec) or "set by the server" (attached),
        else `why_not`'s reason.
        """
        if ctx.spec is None:
            return None, "no model"
        if ctx.attached:  # inference knobs belong to the attached server
            return None, "set by the server"
        return getattr(ctx.spec, self.name), self.why_not(ctx)

    def why_not(self, ctx: KnobContext) -> str:
        """Why a running worker cannot take this knob here ("" when it can)."""
        return ""

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """The Spec fields a change to `value` sets; KnobRefused (one line) if it cannot."""
        return {self.name: value}


class LiveKnob(InferenceKnob):
    """An inference knob the running worker takes at once: no reload, no load time."""

    applies = LIVE

    def apply_live(self, worker: _Threads, value: Any) -> bool:
        """Send `value` to the running worker; False if it did not take it."""
        raise NotImplementedError

    def live_extra(self, value: Any) -> dict[str, Any]:
        """What the ``knob`` Event carries besides name, value and previous."""
        return {}


class Threads(LiveKnob):
    """llama.cpp's thread count (``n_threads``, ``n_threads_batch``), set live in the running
    worker.
    """

    name = "threads"
    step = "one thread up or down, 1 to the CPU count"

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """One thread up or down, clamped to 1..`KnobContext.cpu_count`."""
        return max(1, min(ctx.cpu_count, int(value or 1) + (1 if direction > 0 else -1)))

    def apply_live(self, worker: _Threads, value: Any) -> bool:
        """llama.cpp's ``llama_set_n_threads`` in the worker (client.py's ``threads`` command)."""
        return worker.set_threads(int(value))

    def live_extra(self, value: Any) -> dict[str, Any]:
        """The worker sets threads_batch to the same count."""
        return {"threads_batch": int(value)}


class GpuLayers(InferenceKnob):
    """llama.cpp's ``n_gpu_layers`` (-1: all); a change reloads the model."""

    name = "gpu_layers"
    step = "0, ¼, ½, ¾, all (-1) of the model's layers; stops at the ends"

    def why_not(self, ctx: KnobContext) -> str:
        """Refuses with "CPU-only build" when ``llama_supports_gpu_offload()`` said False."""
        return "CPU-only build" if ctx.gpu_offload is False else ""

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The next of `layer_steps` (0, ¼, ½, ¾, all) of the GGUF's blocks; stops at the ends."""
        return step_in(layer_steps(ctx.model_layers), value, direction, wrap=False)

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """KnobRefused for any value but 0 on a CPU-only build."""
        if value != 0 and ctx.gpu_offload is False:
            raise KnobRefused("this llama.cpp build cannot offload layers to a GPU")
        return {self.name: value}


class NBatch(InferenceKnob):
    """llama.cpp's logical batch ``n_batch`` (tokens per decode call); a change reloads."""

    name = "n_batch"
    step = "64, 128, 256, 512, 1024, 2048, round again"

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The next of 64..2048 tokens in powers of two, round again."""
        return step_in(BATCH_STEPS, value, direction, wrap=True)

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """Sets ``n_ubatch`` (the physical batch) to ``min(n_batch, 512)`` with it."""
        return {"n_batch": value, "n_ubatch": min(int(value), 512)}


class FlashAttn(InferenceKnob):
    """llama.cpp's ``flash_attn`` switch; a change reloads the model."""

    name = "flash_attn"
    step = "on ↔ off"

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The other of on and off."""
        return not value

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """KnobRefused when turning it off while the KV cache is quantized (not f16)."""
        kv = ctx.spec.kv_type if ctx.spec is not None else "f16"
        if not value and kv != "f16":
            raise KnobRefused(f"the KV cache is {kv}: it needs flash attention")
        return {self.name: value}


class KvType(InferenceKnob):
    """llama.cpp's KV cache type (``type_k`` and ``type_v``: f16, q8_0, q4_0); a change reloads."""

    name = "kv_type"
    step = "f16 → q8_0 → q4_0 → f16 (either key)"

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The next of f16, q8_0, q4_0, round again; both keys step forward."""
        return step_in(KV_TYPES, str(value), 1, wrap=True)

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """KnobRefused for a quantized type unless flash attention is on."""
        if value != "f16" and not (ctx.spec is not None and ctx.spec.flash_attn):
            raise KnobRefused("a quantized KV cache needs flash attention: press f first")
        return {self.name: value}


class Model(InferenceKnob):
    """The GGUF file the worker loads; a change reloads the worker with the new file."""

    name = "model"
    step = "the next GGUF file of the cache and --models-dir, round again"

    def read(self, ctx: KnobContext) -> tuple[Any, str]:
        """The attached server's model name ("set by the server") when attached, else the Spec's
        path.
        """
        if ctx.spec is not None and ctx.attached:
            return ctx.attached_model, "set by the server"
        return super().read(ctx)

    def why_not(self, ctx: KnobContext) -> str:
        """Refuses with "1 GGUF file" when the cache and --models-dir offer nothing to step to."""
        return "" if len(ctx.model_choices()) > 1 else "1 GGUF file"

    def refusal(self, value: Any, ctx: KnobContext) -> str:
        """A file named outright (``--knob model=PATH``, a plan, the agent) is set even
        where `o` has nothing to step to: one GGUF file blocks the key, not the path."""
        if ctx.spec is None:
            return "no model"
        return "set by the server" if ctx.attached else ""

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The next GGUF file of `KnobContext.model_choices`, round again."""
        files = [str(p) for p in ctx.model_choices()]
        return step_in(files, str(value), direction, wrap=True)

    def change(self, value: Any, ctx: KnobContext) -> dict[str, Any]:
        """The file's GGUF header is read first (`read_gguf`): a bad file is refused unloaded."""
        try:
            facts = read_gguf(Path(str(value)))
        except ModelError as e:
            raise KnobRefused(f"model: {e}") from None
        return {"model": str(facts.path)}


class DeviceKnob(Knob):
    """A setting of the machine (`anubis_tui.device` Control); its step is the control's."""

    applies = DEVICE
    step = "the control's own ladder"

    def read(self, ctx: KnobContext) -> tuple[Any, str]:
        """The control's value now (None if reading it failed: ControlError, OSError) and its
        reason:

        the control's own (not writable here) or what blocks writes (`DeviceSettings.blocked_by`);
        "device knobs are off" with no DeviceSettings or no such control.
        """
        ctl = ctx.device.controls.get(self.name) if ctx.device is not None else None
        if ctx.device is None or ctl is None:
            return None, "device knobs are off"
        try:
            value = ctl.value()
        except (ControlError, OSError):
            value = None
        blocked = ctx.device.blocked_by() if ctl.writable else None
        return value, ctl.reason or blocked or ""

    def next(self, value: Any, direction: int, ctx: KnobContext) -> Any:
        """The control's own step (`Control.step`); needs `KnobContext.device` set."""
        assert ctx.device is not None
        return ctx.device.controls[self.name].step(value, direction)


class PowerLimit(DeviceKnob):
    """Every GPU's power limit in W, set by NVML's ``nvmlDeviceSetPowerManagementLimit`` (mW)."""

    name = "power_limit_w"
    step = "NVML's power-limit range in about ten round steps of watts; stops at the ends"


class CpuMaxFreq(DeviceKnob):
    """The CPUs' top frequency in MHz: each policy's cpufreq ``scaling_max_freq`` (sysfs, kHz)."""

    name = "cpu_max_mhz"
    step = "cpufreq's available frequencies (or tenths of its range); stops at the ends"


class Nvpmodel(DeviceKnob):
    """A Jetson's power mode, an ID of /etc/nvpmodel.conf set with ``nvpmodel -m``."""

    name = "nvpmodel"
    step = "the modes of nvpmodel.conf, round again"


KNOB_CLASSES: tuple[type[Knob], ...] = (
    Threads,
    GpuLayers,
    NBatch,
    FlashAttn,
    KvType,
    Model,
    PowerLimit,
    CpuMaxFreq,
    Nvpmodel,
)


def knob_table() -> dict[str, Knob]:
    """One object per knob, in `KNOBS` order (the panel's and the ``knobs`` Event's)."""
    by_name = {c.name: c() for c in KNOB_CLASSES}
    return {k.name: by_name[k.name] for k in KNOBS}
