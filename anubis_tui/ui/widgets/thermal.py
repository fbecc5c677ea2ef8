"""The hottest temperature channels, with their limits."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.labels import short_label
from anubis_tui.ui.widgets.panel import Panel


class ThermalPanel(Panel):
    """The hottest temperature channels (°C), as many as fit, each with its limit in °C
    (critical, trip or max)."""

    TITLE = "thermal"

    def text(self, s: Snapshot) -> str:
        """One line per channel, hottest first: short label, °C now, /limit in °C."""
        if not s.temps:
            return "no temperature sensor"
        width = max(16, self.content_region.width or 22)
        label_w = max(4, width - 12)
        rows = max(1, self.content_region.height or 5)
        lines = []
        for v in sorted(s.temps, key=lambda v: -(v.value or -1e9))[:rows]:
            m = v.channel.meta
            lim = m.get("critical_c") or m.get("trip_c") or m.get("max_c")
            label = short_label(v.channel, label_w)
            lines.append(
                f"{label:<{label_w}}{fmt(v.value, '5.1f')}°C" + (f"/{lim:.0f}" if lim else "")
            )
        return "\n".join(lines)
