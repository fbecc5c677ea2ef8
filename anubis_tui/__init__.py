"""anubis: watts, joules per token, degrees and throttling of local LLM inference, live."""

from __future__ import annotations

__version__ = "0.1.0"
