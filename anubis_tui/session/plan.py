"""Plans for `anubis record --plan`: steps of knob settings and profiler states, each for a time.

``off:10,py-spy@100:10,threads=1:10,power_limit_w=300+py-spy@100:10``: a step
is ``WHAT:SECONDS`` where WHAT joins with ``+`` any knob settings
(``name=value``, see `anubis_tui.session.knobs`) and at most one profiler
state (``off``, ``py-spy@RATE``, ``py-spy@RATEn``, ``scalene@RATE``). A step
with knobs only leaves the profiler as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from anubis_tui.profilerspec import ProfilerSetting
from anubis_tui.session.knobs import parse_knob_value


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan: `seconds` (s) with `knobs` set (name → checked value) and the profiler
    in `profiler` (None: left as it is).
    """

    seconds: float
    profiler: ProfilerSetting | None = None  # None: the profiler stays as it is
    knobs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The step's WHAT as a plan writes it (``threads=1+py-spy@100``), without the seconds."""
        parts = [f"{k}={v}" for k, v in self.knobs.items()]
        if self.profiler is not None:
            parts.append(self.profiler.format())
        return "+".join(parts)


def plan_seconds(part: str, secs: str) -> float:
    """A plan step's seconds: a finite number in (0, 86400]; ValueError naming the step."""
    try:
        seconds = float(secs)
    except ValueError:
        raise ValueError(f"plan step {part!r}: {secs!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise ValueError(f"plan step {part!r}: seconds must be in (0, 86400]")
    return seconds


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
        profiler: ProfilerSetting | None = None
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
            try:
                profiler = ProfilerSetting.parse(token)
            except ValueError as e:
                raise ValueError(f"plan step {part!r}: {e}") from None
        steps.append(PlanStep(seconds, profiler, knobs))
    if not steps:
        raise ValueError("empty plan")
    return steps
