"""Quantized variants of a model, made with llama.cpp's own quantizer.

`quantize` runs ``llama_model_quantize`` (llama-cpp-python's binding of
llama.cpp's ``src/llama-quant.cpp``) in a child process, writing to a hidden
temporary name in the target folder and renaming it only when llama.cpp
returned 0 and the result parses as a GGUF of the type asked for. A failure
(a corrupt source, a type llama.cpp refuses, a full disk, a crash) leaves
nothing behind but a one-line `VariantError`.

Each variant gets a sidecar ``<file>.anubis.json`` naming its source (file,
sha256, quantization) and whether it was *requantized*: made from a source
that was already quantized, which understates the quality a quantization
from the original weights would have. `variant_label` is the text every view
shows for it, e.g. ``requantized from Q4_K_M``; the file name says it too
(``gemma-3-270m-q4_k_m-to-q8_0.gguf``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError
from anubis_tui.inference.child import run_module

# --types names → llama.cpp's LLAMA_FTYPE_MOSTLY_* (llama.h, enum llama_ftype)
TYPES: dict[str, str] = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    # llama.cpp refuses these without an importance matrix (which anubis does not make)
    "iq2_xxs": "LLAMA_FTYPE_MOSTLY_IQ2_XXS",
    "iq2_xs": "LLAMA_FTYPE_MOSTLY_IQ2_XS",
}
UNQUANTIZED = ("F32", "F16", "BF16")
SIDECAR = ".anubis.json"
QUANTIZE_TIMEOUT_S = 3600.0


class VariantError(AnubisError):
    """A variant could not be made; the message is one line for the user."""


@dataclass(frozen=True)
class Variant:
    """A quantized file `quantize` made: its `path` and `size` (bytes), the `type` asked for and
    the `quantization` its GGUF header names, and its source: file name, sha256, quantization,
    and whether that was already quantized (`requantized`).
    """

    path: Path
    type: str  # as asked, e.g. "q8_0"
    quantization: str  # as the GGUF says, e.g. "Q8_0"
    source: str
    source_sha256: str
    source_quantization: str
    requantized: bool
    size: int

    @property
    def label(self) -> str:
        """What every view shows for it (`label_for`), e.g. ``requantized from Q4_K_M``."""
        return label_for(self.requantized, self.source_quantization, self.source)


def label_for(requantized: bool, source_quantization: str, source: str) -> str:
    """``requantized from <source quantization>`` for a source that was already quantized, else
    ``quantized from <source file name>``.
    """
    if requantized:
        return f"requantized from {source_quantization}"
    return f"quantized from {source}"


def parse_types(text: str) -> list[str]:
    """'q8_0,q4_0' → ['q8_0', 'q4_0']; VariantError naming the first unknown type."""
    out: list[str] = []
    for part in text.split(","):
        t = part.strip().lower()
        if not t:
            continue
        if t not in TYPES:
            raise VariantError(
                f"unknown quantization type {part.strip()!r}; one of {', '.join(TYPES)}"
            )
        if t not in out:
            out.append(t)
    if not out:
        raise VariantError("no quantization type given")
    return out


def sidecar(path: Path) -> Path:
    """The sidecar next to a variant: ``<file>.anubis.json``."""
    return path.with_name(path.name + SIDECAR)


def variant_info(path: Path) -> dict[str, Any] | None:
    """The sidecar of a variant made by anubis, or None (not one, or unreadable)."""
    try:
        d = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def variant_label(path: Path) -> str:
    """'requantized from Q4_K_M', 'quantized from model-f16.gguf', or '' for other files."""
    d = variant_info(path)
    if not d:
        return ""
    return label_for(
        bool(d.get("requantized")),
        str(d.get("source_quantization", "?")),
        str(d.get("source", "?")),
    )


def out_name(src: Path, qtype: str, requantized: bool) -> str:
    """The variant's file name: ``<stem>-<qtype>.gguf``, or ``<stem>-to-<qtype>.gguf`` when
    requantized (the name says it was made from a quantized source).
    """
    stem = src.name[:-5] if src.name.endswith(".gguf") else src.name
    return f"{stem}-to-{qtype}.gguf" if requantized else f"{stem}-{qtype}.gguf"


def quantize(
    src: Path,
    qtype: str,
    out_dir: Path,
    *,
    threads: int | None = None,
    force: bool = False,
    timeout_s: float = QUANTIZE_TIMEOUT_S,
) -> Variant:
    """Quantize `src` to `qtype` into `out_dir`; VariantError (one line) on any failure."""
    from anubis_tui.inference.models import ModelError, read_gguf
    from anubis_tui.inference.quality import model_sha256

    if qtype not in TYPES:
        raise VariantError(f"unknown quantization type {qtype!r}; one of {', '.join(TYPES)}")
    try:
        facts = read_gguf(src)
    except ModelError as e:
        raise VariantError(str(e)) from None
    requantized = facts.quantization.upper() not in UNQUANTIZED
    target = out_dir / out_name(src, qtype, requantized)
    if target.exists() and not force:
        raise VariantError(f"{target} exists (--force to make it again)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VariantError(f"cannot create {out_dir}: {e.strerror}") from None
    tmp = out_dir / f".{target.name}.{os.getpid()}.tmp"
    spec = {"src": str(src), "dst": str(tmp), "ftype": TYPES[qtype], "threads": threads or 0}

    def disk(d: Path = out_dir, need: int = facts.file_size) -> str:
        free = _free_bytes(d)
        return (
            f" ({d} has {free / 2**20:.0f} MiB free: is the disk full?)"
            if free is not None and free < need
            else ""
        )

    try:
        run_module(
            "anubis_tui.inference.variants",
            spec,
            what=f"{src.name} → {qtype}",
            error=VariantError,
            timeout_s=timeout_s,
            llama_first=True,
            hint=disk,
        )
        try:
            got = read_gguf(tmp)
        except ModelError as e:
            raise VariantError(
                f"{src.name} → {qtype}: the result is not a whole GGUF ({e})"
            ) from None
        info = {
            "source": src.name,
            "source_path": str(src.resolve()),
            "source_sha256": model_sha256(src),
            "source_quantization": facts.quantization,
            "type": qtype,
            "quantization": got.quantization,
            "requantized": requantized,
            "quantizer": "llama_model_quantize (llama-cpp-python)",
        }
        side_tmp = out_dir / f".{target.name}{SIDECAR}.{os.getpid()}.tmp"
        try:
            side_tmp.write_text(json.dumps(info, indent=1))
            os.replace(side_tmp, sidecar(target))
            os.replace(tmp, target)
        except OSError as e:
            sidecar(target).unlink(missing_ok=True)
            raise VariantError(f"cannot write {target.name}: {e.strerror}") from None
        finally:
            side_tmp.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return Variant(
        path=target,
        type=qtype,
        quantization=got.quantization,
        source=src.name,
        source_sha256=str(info["source_sha256"]),
        source_quantization=facts.quantization,
        requantized=requantized,
        size=target.stat().st_size,
    )


def _free_bytes(d: Path) -> int | None:
    try:
        st = os.statvfs(d)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def main(argv: list[str] | None = None) -> int:
    """Child entry: SPEC_JSON {src, dst, ftype, threads}; exit 0 only when llama.cpp said 0."""
    import ctypes

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m anubis_tui.inference.variants SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    import llama_cpp

    from anubis_tui.inference.worker import quiet_llama

    quiet_llama(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, spec["ftype"])
    params.nthread = int(spec.get("threads") or 0)
    params.allow_requantize = True  # marked as such by the parent, never silently
    rc = llama_cpp.llama_model_quantize(
        spec["src"].encode(), spec["dst"].encode(), ctypes.byref(params)
    )
    if rc != 0:
        print(f"anubis: llama.cpp's quantizer failed (status {rc})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
