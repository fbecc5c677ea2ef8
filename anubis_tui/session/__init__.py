"""The session: the one control surface over sources, sampler, worker, profilers and sinks."""

from __future__ import annotations

from anubis_tui.session.bus import Bus, Sink, Totals
from anubis_tui.session.core import Outcome, Session

__all__ = ["Bus", "Outcome", "Session", "Sink", "Totals"]
