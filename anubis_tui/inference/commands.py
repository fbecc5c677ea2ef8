"""CLI commands that run the model (filled in by the inference work)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

HANDLERS: dict[str, Callable[[argparse.Namespace, Any], int]] = {}


def add_parsers(sub: Any, positive_int: Any, positive_float: Any) -> None:
    return None
