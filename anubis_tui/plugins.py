"""Loading built-ins and third-party plugins through one entry-point mechanism.

Built-ins are listed by the same ``module:attr`` targets their entry points
name, so they load exactly as a plugin would. A plugin that fails to import,
or is not the kind of class its group expects, is reported through `warn`
and skipped: it never stops the monitor.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import queue
import sys
import threading
import time
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError
from anubis_tui.records import Header, Record

CLOSE_S = 5.0  # the longest wait for a sink plugin's close
SINK_QUEUE = 10_000  # records a queued sink may fall behind before it is dropped
SINK_LAG_S = 5.0  # seconds a queued sink may take, on one record or behind, before it is dropped

# Entry points of plugin folders named by --plugins: group → name → (folder, "module:attr").
_DIR_ENTRY_POINTS: dict[str, dict[str, tuple[Path, str]]] = {}


class PluginError(AnubisError):
    """A plugin folder or sink cannot be used; the message is one line for the user."""


def add_plugin_dirs(dirs: list[str]) -> None:
    """Make the plugins in `dirs` loadable without installing them.

    A folder is a plugin distribution (its ``pyproject.toml`` names ``anubis.*``
    entry points, its package beside it) or holds such distributions one level
    down. Their entry points join the installed ones. Nothing goes on
    ``sys.path``: an entry point's module is imported from its distribution's
    folder by `_import_from` when it is loaded, and no other file there ever runs
    (a ``platform.py`` beside it cannot shadow the standard library).
    """
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise PluginError(f"--plugins {d}: not a directory")
        found = (
            [root]
            if (root / "pyproject.toml").is_file()
            else sorted(p for p in root.iterdir() if (p / "pyproject.toml").is_file())
        )
        n = 0
        for dist in found:
            try:
                meta = tomllib.loads((dist / "pyproject.toml").read_text())
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                raise PluginError(f"--plugins {dist}: unreadable pyproject.toml ({e})") from None
            project = meta.get("project", {})
            eps = project.get("entry-points", {}) if isinstance(project, dict) else {}
            for group, targets in eps.items() if isinstance(eps, dict) else []:
                if group.startswith("anubis.") and isinstance(targets, dict):
                    for name, target in targets.items():
                        if isinstance(name, str) and isinstance(target, str):
                            _DIR_ENTRY_POINTS.setdefault(group, {})[name] = (dist.resolve(), target)
                            n += 1
        if not n:
            raise PluginError(f"--plugins {d}: no anubis.* entry points in a pyproject.toml")


def _import_from(folder: Path, module: str) -> Any:
    """Import `module` (``pkg`` or ``pkg.sub``) from `folder` alone, sys.path untouched.

    The top-level name is looked up in `folder` and in ``folder/src`` only
    (importlib's PathFinder with an explicit path); a name that is already
    imported or importable from sys.path (``platform``, ``numpy``) is refused
    rather than shadowed. Submodules then import through the package's own
    ``__path__``. Raises ImportError.
    """
    top, _, rest = module.partition(".")
    if not top.isidentifier():
        raise ImportError(f"{module!r} is not a module name")
    loaded = sys.modules.get(top)
    origin = str(getattr(loaded, "__file__", "") or "")
    if loaded is not None and not origin.startswith(str(folder) + os.sep):
        raise ImportError(f"{top!r} is already a module here: a plugin may not shadow it")
    if loaded is None:
        if top in sys.stdlib_module_names:
            raise ImportError(f"{top!r} is already a module here: a plugin may not shadow it")
        there = importlib.util.find_spec(top)
        if there is not None:
            if str(there.origin or "").startswith(str(folder) + os.sep):
                return importlib.import_module(module)  # installed from this very folder
            raise ImportError(f"{top!r} is already a module here: a plugin may not shadow it")
        spec = importlib.machinery.PathFinder.find_spec(top, [str(folder), str(folder / "src")])
        if spec is None or spec.loader is None:
            raise ImportError(f"no module {top!r} in {folder}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[top] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    return importlib.import_module(module) if rest else sys.modules[top]


class ExportSink(ABC):
    """An ``anubis.sinks`` plugin: gets every record of a session (from the bus thread).

    Made with the text after ``--export NAME:`` and the session's Header; closed
    when the session ends. `__call__` must be cheap and must not block.
    """

    def __init__(self, options: str, header: Header) -> None:
        self.options = options
        self.header = header

    @abstractmethod
    def __call__(self, rec: Record) -> None: ...

    def close(self) -> None:  # noqa: B027 - a sink without resources needs no close
        """Release what the sink holds (a server socket)."""


def stderr_warn(msg: str) -> None:
    """Print `msg` on stderr: the default way `load_plugins` reports a plugin it skips."""
    print(msg, file=sys.stderr)


def load_plugins(
    group: str,
    builtins: dict[str, str],
    base: Any,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Name → class for the built-ins and every ``group`` entry point that loads.

    `base` is usually an ABC, which mypy will not take as ``type[T]``: callers
    annotate what they get back.
    """
    warn = warn or stderr_warn
    kind = group.rsplit(".", 1)[-1].rstrip("s")
    targets: dict[str, tuple[Path | None, str]] = {n: (None, t) for n, t in builtins.items()}
    try:
        for ep in entry_points(group=group):
            targets[ep.name] = (None, ep.value)
    except Exception as e:  # a broken distribution's metadata must not stop us
        warn(f"anubis: cannot read {kind} plugins: {e}")
    targets.update(_DIR_ENTRY_POINTS.get(group, {}))
    out: dict[str, Any] = {}
    for name, (folder, target) in targets.items():
        mod, _, attr = target.partition(":")
        try:
            module = importlib.import_module(mod) if folder is None else _import_from(folder, mod)
            cls = getattr(module, attr)
        except Exception as e:
            warn(f"anubis: {kind} plugin {name!r} skipped: {type(e).__name__}: {e}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, base)):
            warn(f"anubis: {kind} plugin {name!r} skipped: {target} is not a {base.__name__}")
            continue
        out[name] = cls
    return out


class QueuedSink:
    """Runs `sink` on its own thread behind a bounded queue; drops it when it falls behind.

    `__call__` never blocks (the bus thread calls it). The sink is dropped, for
    good, when its queue holds `max_queue` records, or when it has been on one
    record, or holds one unhandled, for more than `max_lag_s` seconds (a stuck
    or slow sink); `on_drop` then gets one line, once. `close` stops the thread
    (waiting at most `timeout` s for what is queued) and closes nothing else.
    """

    def __init__(
        self,
        sink: Callable[[Record], None],
        name: str,
        on_drop: Callable[[str], None],
        max_queue: int = SINK_QUEUE,
        max_lag_s: float = SINK_LAG_S,
    ) -> None:
        self.sink = sink
        self.name = name
        self.on_drop = on_drop
        self.max_lag_s = max_lag_s
        self.queue: queue.Queue[tuple[float, Record] | None] = queue.Queue(max_queue)
        self.dropped: str | None = None
        self.errors = 0
        self._busy_since: float | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self._thread.start()

    def __call__(self, rec: Record) -> None:
        if self.dropped is not None:
            return
        now = time.monotonic()
        busy = self._busy_since
        if busy is not None and now - busy > self.max_lag_s:
            self._drop(f"stuck for over {self.max_lag_s:g} s on one record")
            return
        try:
            self.queue.put_nowait((now, rec))
        except queue.Full:
            self._drop(f"fell {self.queue.maxsize} records behind")

    def _drop(self, why: str) -> None:
        with self._lock:
            if self.dropped is not None:
                return
            self.dropped = why
        self.on_drop(f"sink {self.name} dropped: {why}")

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None or self.dropped is not None:
                return
            queued, rec = item
            start = time.monotonic()
            if start - queued > self.max_lag_s:
                self._drop(f"over {self.max_lag_s:g} s behind")
                return
            self._busy_since = start
            try:
                self.sink(rec)
            except Exception:  # counted; a failing sink is not a stuck one
                self.errors += 1
            self._busy_since = None

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread after what is queued, waiting at most `timeout` s (per step) for it.

        A sink that cannot take the stop marker within `timeout` is marked dropped
        ("closed while behind"); never raises.
        """
        if self.dropped is None:
            try:
                self.queue.put(None, timeout=timeout)
            except queue.Full:
                self.dropped = "closed while behind"
        else:
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
        self._thread.join(timeout)


class QueuedExport:
    """An `ExportSink` behind a `QueuedSink`: its own thread and a bounded queue.

    The bus calls this (never blocks); a slow or stuck plugin is dropped and
    `on_drop` gets one line. `close` stops the queue, then closes the plugin.
    """

    def __init__(self, sink: ExportSink, name: str, on_drop: Callable[[str], None]) -> None:
        self.sink = sink
        self.name = name
        self.queued = QueuedSink(sink, name, on_drop)

    def __call__(self, rec: Record) -> None:
        self.queued(rec)

    @property
    def dropped(self) -> str | None:
        """Why the plugin was dropped (one line), or None while it keeps up."""
        return self.queued.dropped

    def close(self, timeout: float = CLOSE_S) -> None:
        """Stop feeding the plugin, then close it, waiting at most `timeout` s for it."""
        self.queued.close()
        said: list[str] = []

        def close() -> None:
            try:
                self.sink.close()
            except Exception as e:  # a plugin's close must not end the session's own
                said.append(f"close failed: {type(e).__name__}: {e}")

        t = threading.Thread(target=close, name=f"close-{self.name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            said.append(f"close took over {timeout:g} s; left behind")
        for msg in said:
            stderr_warn(f"anubis: sink {self.name}: {msg}")


def export_sinks(
    specs: list[str], header: Header, on_drop: Callable[[str], None] | None = None
) -> list[QueuedExport]:
    """The ``--export NAME[:OPTIONS]`` sinks, made and queued (`QueuedExport`).

    `on_drop` (default: stderr) hears of a sink dropped for being slow or stuck.
    PluginError (one line) for an unknown or failing one.
    """
    if not specs:
        return []
    found: dict[str, type[ExportSink]] = load_plugins("anubis.sinks", {}, ExportSink)
    sinks: list[QueuedExport] = []
    for spec in specs:
        name, _, options = spec.partition(":")
        cls = found.get(name)
        if cls is None:
            known = ", ".join(sorted(found)) or (
                "none installed (pip install ./plugins/anubis-prometheus in anubis's source "
                "tree, or --plugins DIR)"
            )
            raise PluginError(f"--export {name}: no such sink plugin; sinks: {known}")
        try:
            sinks.append(QueuedExport(cls(options, header), name, on_drop or stderr_warn))
        except Exception as e:  # a plugin's constructor: anything, one line
            for made in sinks:
                made.close()
            why = str(e) if isinstance(e, OSError | ValueError) else f"{type(e).__name__}: {e}"
            raise PluginError(f"--export {spec}: {why}") from None
    return sinks
