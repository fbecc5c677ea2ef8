"""Loading built-ins and third-party plugins through one entry-point mechanism.

Built-ins are listed by the same ``module:attr`` targets their entry points
name, so they load exactly as a plugin would. A plugin that fails to import,
or is not the kind of class its group expects, is reported through `warn`
and skipped: it never stops the monitor.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


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
