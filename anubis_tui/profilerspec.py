"""A profiler setting (``off``, ``py-spy@100``, ``py-spy@1000n``, ``scalene@100``) as a type.

One parser (`ProfilerSetting.parse`) and one formatter (`ProfilerSetting.format`)
for every place that writes or reads the string: ``record --plan`` steps,
sweep treatments, their analysis (`anubis_tui.analysis.sweep`) and the
segments' profiler names. It sits at the bottom of the layers (beside
`anubis_tui.knobspec`) because the analysis and the session both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from anubis_tui.errors import AnubisError

RATES_HZ = (1, 10, 50, 100, 250, 500, 1000)
"""The sampling rates (Hz) a profiler may run at: the ladder `[` and `]` step through."""

PROFILERS = ("py-spy", "scalene")
"""The profilers a setting may name (the built-ins; `anubis_tui.profilers.base.BUILTINS`)."""

NATIVE_SUFFIX = "n"  # py-spy@1000n: py-spy --native (C frames too; it stops the worker to sample)


class ProfilerSettingError(AnubisError, ValueError):
    """A profiler setting string that is not one; the message is one line naming it."""


def _show(text: object) -> str:
    s = repr(text)
    return s if len(s) <= 40 else s[:37] + "..."


@dataclass(frozen=True)
class ProfilerSetting:
    """Which profiler runs (None: off), at what rate (Hz), and py-spy's native mode.

    `rate_hz` is samples per second (py-spy's ``--rate``; scalene's sampling
    interval is its inverse); it is 0 when off. `native` is py-spy's
    ``--native`` (unwind C frames). The text form is ``off``,
    ``PROFILER@RATE`` or ``py-spy@RATEn``; ``parse(s.format()) == s`` for
    every setting `parse` accepts.
    """

    profiler: str | None = None
    rate_hz: float = 0.0
    native: bool = False

    OFF: ClassVar[ProfilerSetting]

    @classmethod
    def parse(cls, text: str) -> ProfilerSetting:
        """``off``, ``py-spy@100``, ``py-spy@1000n``, ``scalene@100`` → a setting.

        The rate is one of `RATES_HZ` (default 100 when left out, ``py-spy@``);
        ``n`` (native) is py-spy's only. Raises ProfilerSettingError, one line
        naming the text, for anything else.
        """
        if not isinstance(text, str):
            raise ProfilerSettingError(f"profiler setting {_show(text)} is not text")
        t = text.strip()
        if t == "off":
            return cls.OFF
        name, _, rate = t.partition("@")
        if name not in PROFILERS:
            raise ProfilerSettingError(
                f"profiler setting {_show(text)}: the profiler is one of "
                f"{', '.join(PROFILERS)} (or off)"
            )
        native = rate.endswith(NATIVE_SUFFIX)
        if native and name != "py-spy":
            raise ProfilerSettingError(
                f"profiler setting {_show(text)}: native mode (n) is py-spy's only"
            )
        digits = rate[: -len(NATIVE_SUFFIX)] if native else rate
        try:
            rate_hz = float(digits) if digits else 100.0
        except ValueError:
            raise ProfilerSettingError(
                f"profiler setting {_show(text)}: {_show(digits)} is not a rate in Hz"
            ) from None
        if not math.isfinite(rate_hz) or rate_hz not in RATES_HZ:
            raise ProfilerSettingError(
                f"profiler setting {_show(text)}: the rate is one of "
                f"{', '.join(map(str, RATES_HZ))} Hz"
            )
        return cls(name, rate_hz, native)

    def format(self) -> str:
        """The text form: ``off``, ``py-spy@100``, ``py-spy@1000n``, ``scalene@100``."""
        if self.profiler is None:
            return "off"
        return f"{self.profiler}@{self.rate_hz:g}" + (NATIVE_SUFFIX if self.native else "")

    def __str__(self) -> str:
        return self.format()

    @property
    def off(self) -> bool:
        """Whether this setting runs no profiler (``off``)."""
        return self.profiler is None

    @property
    def segment_profiler(self) -> str | None:
        """The profiler as segments name it: ``py-spy --native`` apart from ``py-spy``."""
        if self.profiler is None:
            return None
        return self.profiler + (" --native" if self.native else "")


ProfilerSetting.OFF = ProfilerSetting()


def segment_label(profiler: str | None, rate_hz: float | None) -> str | None:
    """A segment's profiler part: ``py-spy@100``, ``py-spy --native@1000``, ``scalene-off``.

    `profiler` is the segment's profiler name (`ProfilerSetting.segment_profiler`,
    or a state such as ``scalene-off``), `rate_hz` its rate (None or 0: no
    rate shown). None when no profiler runs.
    """
    if profiler is None:
        return None
    return f"{profiler}@{rate_hz:g}" if rate_hz else profiler
