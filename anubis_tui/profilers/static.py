"""Static analysis: the zero-overhead end of the spectrum.

Decoding one token reads every weight once (the token-embedding lookup reads
a row, but small models like Gemma tie it to the output projection, which
is read whole), so bytes per token ≈ the model's tensor data, the GGUF file
size less its header. With the machine's memory bandwidth — measured once
by a copy benchmark and cached — that bounds decode tok/s from above:
ceiling = bandwidth / bytes per token. Measured tok/s as a share of it says
how close to memory-bound inference runs. Nothing runs during inference.
With layers offloaded to a GPU, the GPU's share of the weights streams at
the GPU's peak memory bandwidth (NVML: bus width × max memory clock × 2)
and the rest at the CPU's: the ceiling is one token's time through both.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

COPY_BYTES = 256 << 20


@dataclass(frozen=True)
class Bandwidth:
    """A memory bandwidth figure: `bytes_per_s` (read + written), how it was measured, and
    when (UTC ISO 8601).
    """

    bytes_per_s: float
    method: str
    measured_utc: str


def cache_file() -> Path:
    """``$XDG_CACHE_HOME/anubis/bandwidth.json`` (default ``~/.cache``), where `bandwidth`
    keeps its figure.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anubis" / "bandwidth.json"


def measure_bandwidth(nbytes: int = COPY_BYTES, repeats: int = 5) -> Bandwidth:
    """Memory bandwidth in bytes/s: the fastest of `repeats` numpy copies of `nbytes`.

    Counts bytes read plus bytes written (2 × `nbytes`), as STREAM's copy does.
    Allocates 2 × `nbytes`; takes about a second with the default 256 MiB.
    """
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return Bandwidth(
        2 * nbytes / best,
        f"numpy copy {nbytes >> 20} MiB, best of {repeats}",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def bandwidth(refresh: bool = False) -> Bandwidth:
    """The cached measurement, measuring once (about a second) if there is none."""
    f = cache_file()
    if not refresh:
        try:
            d = json.loads(f.read_text())
            return Bandwidth(float(d["bytes_per_s"]), str(d["method"]), str(d["measured_utc"]))
        except (OSError, ValueError, KeyError):
            pass
    bw = measure_bandwidth()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(asdict(bw)))
    except OSError:
        pass
    return bw


@dataclass(frozen=True)
class StaticEstimate:
    """The memory-bound decode ceiling of one model on this machine (`estimate`).

    `bytes_per_token` (bytes read per decoded token, ≈ the GGUF tensor data),
    `bandwidth_bytes_per_s` (the effective bandwidth behind the ceiling) and
    `ceiling_tps` = bandwidth / bytes per token (tok/s); `source` says which
    bandwidth (CPU copy, NVML's GPU peak, or both).
    """

    bytes_per_token: int
    bandwidth_bytes_per_s: float  # the effective bandwidth behind the ceiling
    ceiling_tps: float
    gpu_offload: bool
    source: str = "CPU copy"  # which bandwidth figure the ceiling uses

    def share(self, measured_tps: float | None) -> float | None:
        """`measured_tps` as a fraction of `ceiling_tps` (1.0 = memory-bound); None when
        not measured.
        """
        return None if measured_tps is None else measured_tps / self.ceiling_tps

    def short(self, measured_tps: float | None) -> str:
        """For a narrow panel: the ceiling and the share of it reached."""
        s = self.share(measured_tps)
        return f"ceiling {self.ceiling_tps:.0f} tok/s" + (f" {s:.0%}" if s is not None else "")

    def line(self, measured_tps: float | None) -> str:
        """One line for the report: MiB per token, the ceiling, its source and the share reached."""
        s = self.share(measured_tps)
        return (
            f"static {self.bytes_per_token / 2**20:.0f} MiB/tok, ceiling "
            f"{self.ceiling_tps:.0f} tok/s ({self.source}"
            f"{f', {self.bandwidth_bytes_per_s / 1e9:.0f} GB/s'})"
            + (f": {s:.0%} of it" if s is not None else "")
        )


def estimate(
    file_size: int,
    header_bytes: int = 0,
    gpu_layers: int = 0,
    bw: Bandwidth | None = None,
    layers: int | None = None,
    gpu_bw: tuple[float, str] | None = None,
) -> StaticEstimate:
    """The memory-bound decode ceiling: CPU copy bandwidth, and the GPU's where layers run there.

    Bytes per token B = `file_size` − `header_bytes` (bytes). CPU only:
    ceiling = bw / B (tok/s). With a fraction f = `gpu_layers` / `layers` of the
    layers offloaded (1 for -1 or unknown `layers`), one token takes
    f·B / gpu_bw + (1 − f)·B / bw seconds, and the ceiling is its inverse.
    `gpu_bw` (bytes/s, how) defaults to NVML's figure for GPU 0 when layers
    are offloaded (`sources.nvml.gpu_memory_bandwidth`: bus width × max memory
    clock × 2); without one, the CPU figure is used and `source` says so.
    `bw` defaults to `bandwidth()`, which may measure for about a second.
    """
    per_token = max(1, file_size - header_bytes)
    offload = gpu_layers != 0
    if offload and gpu_bw is None:
        from anubis_tui.sources.nvml import gpu_memory_bandwidth

        found = gpu_memory_bandwidth()
        gpu_bw = (found[0], f"{found[2]} {found[1]}") if found else None
    if offload and gpu_bw is not None:
        frac = 1.0 if gpu_layers < 0 or not layers else min(1.0, gpu_layers / layers)
        cpu_bytes = per_token * (1 - frac)
        seconds = per_token * frac / gpu_bw[0]
        how = f"GPU {gpu_bw[1]}"
        if cpu_bytes > 0:
            bw = bw or bandwidth()
            seconds += cpu_bytes / bw.bytes_per_s
            how += f" + CPU copy for {1 - frac:.0%}"
        return StaticEstimate(per_token, per_token / seconds, 1 / seconds, True, how)
    bw = bw or bandwidth()
    source = "CPU copy" + (" (no GPU bandwidth known: CPU model only)" if offload else "")
    return StaticEstimate(per_token, bw.bytes_per_s, bw.bytes_per_s / per_token, offload, source)
