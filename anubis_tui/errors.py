"""The one error type commands raise for what a user can fix: printed as one line, exit 2."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: the CLI prints it as one line and exits with status 2."""
