"""scalene: the worker relaunched under ``scalene run --off --cpu-only``, toggled by signal.

scalene cannot attach to a running process: it has to launch its target.
Pressing the key restarts the worker under scalene with profiling off,
then sends SIGILL (start) and SIGBUS (stop) to the process scalene really
profiles — the pid the worker reports about itself, and only when the
worker says it runs under scalene (SIGILL kills a plain Python process).
``SCALENE_ALLOCATION_SAMPLING_WINDOW`` is set so a CPU-only run does not
re-exec (which would also close the worker's record pipe).
``--cpu-sampling-rate`` is seconds between samples and is fixed for a
launch: a rate change restarts the worker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError
from anubis_tui.profilers.base import Profiler, ProfilerStatus

SCALENE_ENV = {"SCALENE_ALLOCATION_SAMPLING_WINDOW": "1048576"}


def llama_libraries() -> list[str]:
    """llama.cpp's own shared libraries (llama_cpp/lib), found without importing llama_cpp."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    out: list[str] = []
    for d in spec.submodule_search_locations:
        lib = Path(d) / "lib"
        if lib.is_dir():
            out += sorted(str(p) for p in lib.glob("lib*.so"))
    return out


def scalene_env() -> dict[str, str]:
    """The worker's environment under scalene.

    scalene imports numpy, torch and jax at start-up where they are installed. On
    the H100 host their CUDA runtime, cuBLAS and libgomp were then loaded before
    llama.cpp's CUDA build, and loading the model crashed (SIGSEGV in
    llama_model_load_from_file, with and without GPU layers). Preloading
    llama.cpp's own libraries makes them resolve first: the same model then loads
    and decodes under scalene (docs/design.md).
    """
    env = dict(SCALENE_ENV)
    libs = llama_libraries()
    if libs:
        pre = os.environ.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = " ".join([*libs, *pre.split()])
    return env


def interval_s(rate_hz: float) -> float:
    """Seconds between samples (scalene's ``--cpu-sampling-rate``) at `rate_hz` Hz."""
    return 1.0 / rate_hz


def scalene_command(rate_hz: float, artifact: Path) -> list[str]:
    """The prefix that launches the worker script under scalene, profiling off."""
    return [
        sys.executable,
        "-P",  # nothing from the current directory: not even a scalene.py
        "-m",
        "scalene",
        "run",
        "--off",
        "--cpu-only",
        "--cpu-sampling-rate",
        f"{interval_s(rate_hz):g}",
        "-o",
        str(artifact),
    ]


class NotUnderScalene(AnubisError):
    """Refusing to signal a process that scalene does not run."""


class Scalene(Profiler):
    """scalene driving a worker it launched (see the module): `rate_hz` is CPU samples per
    second, given to scalene as the interval ``--cpu-sampling-rate`` 1/`rate_hz` s and fixed
    per launch.
    """

    name = "scalene"

    def __init__(self) -> None:
        self.pid: int | None = None
        self.under_scalene = False
        self.on = False
        self.rate_hz: float | None = None
        self.artifact: Path | None = None
        self.started_ns: int | None = None
        self.launches = 0

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the ``scalene`` module can be imported (found by importlib, not imported)."""
        if importlib.util.find_spec("scalene") is None:
            return False, "scalene is not installed (pip install scalene)"
        return True, ""

    def attach(self, pid: int | None, under_scalene: bool, rate_hz: float, artifact: Path) -> None:
        """The worker (re)started: remember what it said about itself."""
        self.pid, self.under_scalene = pid, under_scalene
        self.rate_hz, self.artifact, self.on = rate_hz, artifact, False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.under_scalene or self.pid is None:
            raise NotUnderScalene("the worker is not running under scalene")
        os.kill(self.pid, sig)

    def start(self, target_pid: int, rate_hz: float, out_dir: Path) -> str | None:
        """Send SIGILL (scalene's "start profiling") to the worker scalene launched; `rate_hz`
        and `out_dir` were fixed at launch (`attach`). A message for another pid, a worker not
        under scalene, or one that is gone.
        """
        if target_pid != self.pid:
            return "scalene: that pid is not the worker scalene launched"
        try:
            self._signal(signal.SIGILL)
        except NotUnderScalene as e:
            return f"scalene: {e}"
        except ProcessLookupError:
            return "scalene: the worker is gone"
        self.on = True
        return None

    def stop(self) -> Path | None:
        """Send SIGBUS (scalene's "stop profiling"), on which scalene writes its JSON profile;
        the artifact's path (written when scalene gets to it). When off: the artifact if it
        exists, else None.
        """
        if not self.on:
            return self.artifact if self.artifact and self.artifact.exists() else None
        with contextlib.suppress(NotUnderScalene, ProcessLookupError):
            self._signal(signal.SIGBUS)  # scalene writes its profile on stop
        self.on = False
        return self.artifact

    def status(self) -> ProfilerStatus:
        """On or off, the launch's rate (Hz) and artifact; scalene's own pid, sample count and
        start time are not known here (None).
        """
        return ProfilerStatus(self.on, None, self.rate_hz, None, self.artifact, self.started_ns)


def scalene_lines(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Per-file line records of a scalene JSON profile."""
    d = json.loads(path.read_text())
    return {f: v.get("lines", []) for f, v in d.get("files", {}).items()}


def scalene_hot_lines(
    path: Path, top: int = 5, wait_s: float = 0.0
) -> tuple[list[dict[str, Any]], int] | None:
    """The lines scalene found hottest (Python + native CPU share) and its sample count.

    scalene writes its profile after the stop signal: wait up to `wait_s` for it.
    None when there is no readable profile.
    """
    end = time.monotonic() + wait_s
    while True:
        try:
            d = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() >= end:
                return None
            time.sleep(0.2)
    if not isinstance(d, dict):
        return None
    samples = 0
    for st in d.get("stacks") or []:
        if isinstance(st, list) and len(st) == 2 and isinstance(st[1], dict):
            c = st[1].get("count")
            if isinstance(c, int):
                samples += c
    rows = []
    for fname, fv in (d.get("files") or {}).items():
        if not isinstance(fv, dict):
            continue
        funcs = {
            f.get("lineno"): f.get("line") for f in fv.get("functions") or [] if isinstance(f, dict)
        }
        for ln in fv.get("lines") or []:
            if not isinstance(ln, dict):
                continue
            share = float(ln.get("n_cpu_percent_python") or 0) + float(
                ln.get("n_cpu_percent_c") or 0
            )
            if share > 0:
                func = funcs.get(ln.get("start_function_line")) or "?"
                where = f"{Path(fname).name}:{ln.get('lineno')}"
                rows.append({"function": func, "where": where, "share": share / 100})
    rows.sort(key=lambda r: -float(r["share"]))
    return rows[:top], samples
