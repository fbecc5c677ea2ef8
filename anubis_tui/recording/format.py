"""The recording format: a msgpack stream of records (see docs/recording-format.md).

A file is the plain forms of `anubis_tui.records` one after another: a
Header first, then Sample, Tokens, Event and ChannelsAdded records in time
order, then a Footer on clean close. No framing beyond msgpack's own, so a
file cut anywhere still yields every record before the cut.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgpack

from anubis_tui import __version__
from anubis_tui.errors import AnubisError
from anubis_tui.records import Channel, Header, Record

FORMAT_NAME = "anubis-recording"
SCHEMA = (1, 0)
"""Major bumps break readers; minor bumps only add fields or record kinds readers may skip."""

# Bounds, the same for the writer and the reader (docs/recording-format.md):
MAX_CHANNELS = 100_000  # a channel table (the Header plus every ChannelsAdded)
MAX_STR = 1 << 20  # one string or bin
MAX_ARRAY = 1 << 17  # one array: a Sample holds one value per channel
MAX_MAP = 1 << 14  # one map (a payload, a channel's meta)
MAX_BUFFER = 64 << 20  # one record, as packed (a Header of MAX_CHANNELS channels fits)


def packer() -> msgpack.Packer:
    """A msgpack Packer for records, bin type on so bytes stay bytes (as the reader expects)."""
    return msgpack.Packer(use_bin_type=True)


def pack(rec: Record) -> bytes:
    """One record's msgpack bytes (its `to_plain` form); TypeError if msgpack cannot pack one."""
    return bytes(packer().pack(rec.to_plain()))


UNKNOWN = "unknown"  # a fact this machine or this recording does not give


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` (x86) or ``Hardware``/``Model`` (Arm) line of /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return UNKNOWN
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in ("model name", "Hardware", "Model") and key not in found:
            found[key] = " ".join(value.split())
    return found.get("model name") or found.get("Model") or found.get("Hardware") or UNKNOWN


def llama_cpp_version() -> str:
    """llama-cpp-python's installed version, without importing it (no library load)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def host_facts() -> dict[str, Any]:
    """The Header's ``host`` map: hostname, uname system/release/machine, Python version, CPU count,
    CPU model (/proc/cpuinfo) and llama-cpp-python's version (package metadata).
    """
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "system": uname.system,
        "release": uname.release,
        "machine": uname.machine,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # identity (analysis/identity.py): what to compare recordings by
        "cpu_model": cpu_model(),
        "llama_cpp": llama_cpp_version(),
    }


class FormatError(AnubisError, ValueError):
    """A session that would make a recording no reader takes."""


def make_header(
    channels: list[Channel],
    t0_monotonic_ns: int,
    model: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra_host: dict[str, Any] | None = None,
) -> Header:
    """A Header for a recording starting at `t0_monotonic_ns` (CLOCK_MONOTONIC, ns) with `channels`.

    `created_utc` is now in UTC; `host` is `host_facts()` updated with
    `extra_host`. Raises FormatError when there are more than `MAX_CHANNELS`
    channels (readers refuse such a file).
    """
    if len(channels) > MAX_CHANNELS:
        raise FormatError(
            f"{len(channels)} channels: a recording holds at most {MAX_CHANNELS} "
            "(readers refuse more)"
        )
    return Header(
        format=FORMAT_NAME,
        schema=SCHEMA,
        created_utc=datetime.now(UTC).isoformat(timespec="milliseconds"),
        t0_monotonic_ns=t0_monotonic_ns,
        host={**host_facts(), **(extra_host or {})},
        app_version=__version__,
        channels=list(channels),
        model=dict(model or {}),
        config=dict(config or {}),
    )


def default_path(directory: str) -> str:
    """``<directory>/<UTC YYYYmmddTHHMMSSZ>-<short hostname>.msgpack``; the directory is not
    created.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    host = socket.gethostname().split(".")[0] or "host"
    return os.path.join(directory, f"{stamp}-{host}.msgpack")
