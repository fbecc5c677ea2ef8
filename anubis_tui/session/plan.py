"""Plans for `anubis record --plan`: steps of knob settings and profiler states, each for a time.

``off:10,py-spy@100:10,threads=1:10,power_limit_w=300+py-spy@100:10``: a step
is ``WHAT:SECONDS`` where WHAT joins with ``+`` any knob settings
(``name=value``, see `anubis_tui.session.knobs`) and at most one profiler
state (``off``, ``py-spy@RATE``, ``py-spy@RATEn``, ``scalene@RATE``). A step
with knobs only leaves the profiler as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anubis_tui.profilers.controller import Step, plan_seconds, profiler_state
from anubis_tui.session.knobs import parse_knob_value


@dataclass(frozen=True)
class PlanStep:
    seconds: float
    profiler: Step | None = None  # None: the profiler stays as it is
    knobs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.knobs.items()]
        if self.profiler is not None:
            p = self.profiler
            parts.append(
                "off"
                if p.profiler is None
                else f"{p.profiler}@{p.rate_hz:g}{'n' if p.native else ''}"
            )
        return "+".join(parts)


def parse_plan(text: str) -> list[PlanStep]:
    """Steps of a plan; ValueError with one line for the user if it is not one."""
    steps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        what, sep, secs = part.rpartition(":")
        if not sep or not what:
            raise ValueError(f"plan step {part!r} needs WHAT:SECONDS")
        seconds = plan_seconds(part, secs)
        knobs: dict[str, Any] = {}
        profiler: Step | None = None
        for token in what.split("+"):
            token = token.strip()
            name, eq, value = token.partition("=")
            if eq:
                if name in knobs:
                    raise ValueError(f"plan step {part!r} sets {name} twice")
                try:
                    knobs[name] = parse_knob_value(name, value)
                except ValueError as e:
                    raise ValueError(f"plan step {part!r}: {e}") from None
                continue
            if profiler is not None:
                raise ValueError(f"plan step {part!r} names two profiler states")
            profiler = profiler_state(part, token, seconds)
        steps.append(PlanStep(seconds, profiler, knobs))
    if not steps:
        raise ValueError("empty plan")
    return steps
