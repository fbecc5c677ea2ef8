"""A recording's identity: what must match for two recordings to be compared.

Six groups, each a dict of fields (a field no recording of that age holds is
the string ``"unknown"``, never a guess):

* ``hardware``: CPU model (``/proc/cpuinfo`` "model name"), logical CPUs
  (``os.cpu_count``), GPU names (the ``device`` meta of NVML channels, from
  ``nvmlDeviceGetName``), GPU power limit in W and Jetson nvpmodel mode (the
  ``knobs`` Event at the start, else the first ``*.power_limit`` sample).
* ``runtime``: anubis version, llama-cpp-python version
  (``importlib.metadata``), llama.cpp backends (the names before `` : `` in
  ``llama_print_system_info``, from the worker's ``model_loaded`` Event).
* ``model``: the GGUF file's sha256, and name/quantisation/size from its header.
* ``workload``: sha256 of the prompt set (the prompts joined by newlines, the
  built-in set when no prompt file), max tokens, context length, seed.
* ``setting``: the knobs at the start (threads, GPU layers, batch, flash
  attention, KV type, CPU max clock).
* ``measurement``: system power's channels, tier and method (measured or
  estimated), from the Header's ``config.system_power``.

`identity` reads the Header and, when given, the records up to the first
token or knob change (the worker reports its backends and the resolved knobs
only once it runs). `differences` names each field two identities disagree
on, one line each; a field unknown on one side is not a difference but is
listed by `unchecked`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from anubis_tui.recording.format import UNKNOWN, cpu_model, llama_cpp_version
from anubis_tui.records import Event, Header, Record, Sample, Tokens

__all__ = ["UNKNOWN", "cpu_model", "differences", "identity", "llama_cpp_version", "unchecked"]
GROUPS = ("hardware", "runtime", "model", "workload", "setting", "measurement")
SETTING_KNOBS = ("threads", "gpu_layers", "n_batch", "flash_attn", "kv_type", "cpu_max_mhz")
HASH_CACHE_MAX_BYTES = 1 << 30  # hash models up to this size at session start; larger: cached only
_SCAN_LIMIT = 200_000  # records read for start-of-run facts before giving up


# -- facts gathered when recording ------------------------------------------------------------


def prompts_sha256(prompts: list[str]) -> str:
    """sha256 of the prompts joined by newlines (UTF-8): the workload's prompt set."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def model_sha256(path: str, cache: Path, hash_limit: int = HASH_CACHE_MAX_BYTES) -> str:
    """The GGUF file's sha256, from a marker keyed by (path, size, mtime) or hashed now.

    The default model's ``.gguf.verified`` marker (written when it was
    assembled and checked) is used as is. Files over `hash_limit` bytes with
    no marker give "unknown" rather than delay the start.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return UNKNOWN
    for marker in (p.with_suffix(".gguf.verified"), _marker(cache, p)):
        try:
            m = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(m, dict)
            and m.get("size") == st.st_size
            and m.get("mtime_ns") == st.st_mtime_ns
            and isinstance(m.get("sha256"), str)
        ):
            return str(m["sha256"])
    if st.st_size > hash_limit:
        return UNKNOWN
    digest = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError:
        return UNKNOWN
    sha = digest.hexdigest()
    try:
        marker = _marker(cache, p)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        os.replace(tmp, marker)
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return sha


def _marker(cache: Path, p: Path) -> Path:
    key = hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:32]
    return cache / "sha256" / f"{key}.json"


# -- identity of a recording ------------------------------------------------------------------


def backends(system_info: str) -> list[str]:
    """Backend names from llama.cpp's system info ("CUDA : ARCHS = 900 | CPU : SSE3 = 1 |")."""
    names = []
    for part in system_info.split("|"):
        name, sep, _ = part.partition(" : ")
        name = name.strip()
        if sep and name and name not in names:
            names.append(name)
    return names


def _start_facts(records: Iterable[Record]) -> dict[str, Any]:
    """Resolved knobs, backends and power limit from the records at the start of a run."""
    knobs: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    limit_w: float | None = None
    limit_idx: list[int] = []
    channels: list[str] = []
    for n, r in enumerate(records):
        if n > _SCAN_LIMIT or isinstance(r, Tokens):
            break
        if isinstance(r, Header):
            channels = [c.id for c in r.channels]
            limit_idx = [i for i, c in enumerate(channels) if c.endswith(".power_limit")]
        elif isinstance(r, Event):
            if r.kind == "knobs" and isinstance(r.payload.get("values"), dict):
                # later knobs Events at the start fill what was not known yet (device knobs)
                for k, v in r.payload["values"].items():
                    if v is not None or k not in knobs:
                        knobs[k] = v
            elif r.kind == "model_loaded" and not loaded:
                loaded = dict(r.payload)
            elif r.kind in ("knob", "sweep_step"):
                break
        elif isinstance(r, Sample) and limit_w is None and limit_idx:
            vals = [r.values[i] for i in limit_idx if i < len(r.values)]
            if vals and all(isinstance(v, int | float) for v in vals):
                limit_w = float(sum(v for v in vals if v is not None))
    return {"knobs": knobs, "loaded": loaded, "limit_w": limit_w}


def _known(*values: Any) -> Any:
    for v in values:
        if v is not None and v != UNKNOWN:
            return v
    return UNKNOWN


def identity(header: Header, records: Iterable[Record] | None = None) -> dict[str, dict[str, Any]]:
    """The recording's identity, grouped (see the module doc); "unknown" where not recorded.

    `records`, when given, are the recording's records (the Header first or
    not); only those before the first token or knob change are read. Without
    them, the knobs come from the Header's ``config.knobs`` (written when the
    recording opened) and the backends are unknown.
    """
    host, model, config = header.host or {}, header.model or {}, header.config or {}
    start = _start_facts(records) if records is not None else {}
    raw_knobs = config.get("knobs")
    head_knobs: dict[str, Any] = raw_knobs if isinstance(raw_knobs, dict) else {}
    knobs: dict[str, Any] = {
        **head_knobs,
        **{k: v for k, v in start.get("knobs", {}).items() if v is not None},
    }
    loaded: dict[str, Any] = start.get("loaded", {})
    gpus = sorted(
        {
            str(c.meta["device"])
            for c in header.channels
            if c.meta.get("device") and c.id[:3] == "gpu"
        }
    )
    sysinfo = loaded.get("system_info")
    raw_sp = config.get("system_power")
    sp: dict[str, Any] = raw_sp if isinstance(raw_sp, dict) else {}
    file_desc = (
        f"{model.get('name')} {model.get('quantization')}, {model.get('file_size')} bytes"
        if model.get("file_size")
        else UNKNOWN
    )

    def knob(name: str) -> Any:
        # the knobs Event (resolved values), else what the worker reported, else the config
        if name in knobs and knobs[name] is not None:
            return knobs[name]
        if name in loaded and loaded[name] is not None:
            return loaded[name]
        if name in ("cpu_max_mhz",):
            return UNKNOWN
        return _known(config.get(name))

    return {
        "hardware": {
            "cpu_model": _known(host.get("cpu_model")),
            "cpus": _known(host.get("cpus")),
            "gpus": gpus,
            "power_limit_w": _known(knobs.get("power_limit_w"), start.get("limit_w")),
            "nvpmodel": _known(knobs.get("nvpmodel")),
        },
        "runtime": {
            "anubis": _known(header.app_version),
            "llama_cpp": _known(host.get("llama_cpp")),
            "backends": backends(sysinfo) if isinstance(sysinfo, str) else UNKNOWN,
        },
        "model": {"sha256": _known(model.get("sha256")), "file": file_desc},
        "workload": {
            "prompts_sha256": _known(config.get("prompts_sha256")),
            "max_tokens": _known(config.get("max_tokens")),
            "n_ctx": _known(config.get("n_ctx")),
            "seed": _known(config.get("seed")),
        },
        "setting": {k: knob(k) for k in SETTING_KNOBS},
        "measurement": {
            "system_power": f"{sp.get('tier')}: {', '.join(sp.get('channels') or [])}"
            if sp
            else UNKNOWN,
            "method": _known(sp.get("method")),
        },
    }


def flat(ident: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"group.field": value}`` of an identity."""
    return {f"{g}.{k}": v for g in GROUPS for k, v in (ident.get(g) or {}).items()}


def _show(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v)) if v else "none"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]  # a sha256: its first 12 hex digits name it
    return str(v)


def allowed(field: str, allow: Iterable[str]) -> bool:
    """Whether `field` ("group.name") is allowed to differ by a name in `allow` (field or group)."""
    return any(field == a or field.split(".", 1)[0] == a for a in allow)


def differences(
    a: Mapping[str, Mapping[str, Any]],
    b: Mapping[str, Mapping[str, Any]],
    allow: Iterable[str] = (),
) -> list[str]:
    """One line per field known on both sides that differs (not counting `allow`ed ones)."""
    fa, fb = flat(a), flat(b)
    allow = list(allow)
    out = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        va, vb = fa.get(key, UNKNOWN), fb.get(key, UNKNOWN)
        if UNKNOWN in (va, vb) or va == vb or allowed(key, allow):
            continue
        out.append(f"{key}: {_show(va)} (A) vs {_show(vb)} (B)")
    return out


def unchecked(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Fields unknown on at least one side ("group.field (A)"): not compared, only named."""
    fa, fb = flat(a), flat(b)
    out = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        sides = [s for s, f in (("A", fa), ("B", fb)) if f.get(key, UNKNOWN) == UNKNOWN]
        if sides:
            out.append(f"{key} ({'/'.join(sides)})")
    return out
