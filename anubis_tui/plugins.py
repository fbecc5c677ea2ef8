"""Loading built-ins and third-party plugins through one entry-point mechanism.

Built-ins are listed by the same ``module:attr`` targets their entry points
name, so they load exactly as a plugin would. A plugin that fails to import,
or is not the kind of class its group expects, is reported through `warn`
and skipped: it never stops the monitor.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from anubis_tui.records import Header, Record

# Entry points of plugin folders named by --plugins: group → name → "module:attr".
_DIR_ENTRY_POINTS: dict[str, dict[str, str]] = {}


class PluginError(Exception):
    """A plugin folder or sink cannot be used; the message is one line for the user."""


def add_plugin_dirs(dirs: list[str]) -> None:
    """Make the plugins in `dirs` loadable without installing them.

    A folder is a plugin distribution (its ``pyproject.toml`` names ``anubis.*``
    entry points, its package beside it) or holds such distributions one level
    down. Their package folders go on sys.path; their entry points join the
    installed ones.
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
            eps = meta.get("project", {}).get("entry-points", {})
            for group, targets in eps.items() if isinstance(eps, dict) else []:
                if group.startswith("anubis.") and isinstance(targets, dict):
                    for name, target in targets.items():
                        if isinstance(name, str) and isinstance(target, str):
                            _DIR_ENTRY_POINTS.setdefault(group, {})[name] = target
                            n += 1
            if str(dist) not in sys.path:
                sys.path.insert(0, str(dist))
        if not n:
            raise PluginError(f"--plugins {d}: no anubis.* entry points in a pyproject.toml")


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
    targets = dict(builtins)
    try:
        for ep in entry_points(group=group):
            targets[ep.name] = ep.value
    except Exception as e:  # a broken distribution's metadata must not stop us
        warn(f"anubis: cannot read {kind} plugins: {e}")
    targets.update(_DIR_ENTRY_POINTS.get(group, {}))
    out: dict[str, Any] = {}
    for name, target in targets.items():
        mod, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except Exception as e:
            warn(f"anubis: {kind} plugin {name!r} skipped: {type(e).__name__}: {e}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, base)):
            warn(f"anubis: {kind} plugin {name!r} skipped: {target} is not a {base.__name__}")
            continue
        out[name] = cls
    return out


def export_sinks(specs: list[str], header: Header) -> list[ExportSink]:
    """The ``--export NAME[:OPTIONS]`` sinks, made; PluginError for an unknown or failing one."""
    if not specs:
        return []
    found: dict[str, type[ExportSink]] = load_plugins("anubis.sinks", {}, ExportSink)
    sinks: list[ExportSink] = []
    for spec in specs:
        name, _, options = spec.partition(":")
        cls = found.get(name)
        if cls is None:
            known = ", ".join(sorted(found)) or "none installed (pip install anubis-prometheus)"
            raise PluginError(f"--export {name}: no such sink plugin; sinks: {known}")
        try:
            sinks.append(cls(options, header))
        except (OSError, ValueError) as e:
            for made in sinks:
                made.close()
            raise PluginError(f"--export {spec}: {e}") from None
    return sinks
