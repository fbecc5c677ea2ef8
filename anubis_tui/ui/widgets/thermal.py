"""The hottest temperature channels, with their limits."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.panel import Panel


class ThermalPanel(Panel):
    TITLE = "thermal"

    def text(self, s: Snapshot) -> str:
        if not s.temps:
            return "no temperature sensor"
        lines = []
        for v in sorted(s.temps, key=lambda v: -(v.value or -1e9))[:5]:
            m = v.channel.meta
            lim = m.get("critical_c") or m.get("trip_c") or m.get("max_c")
            label = v.channel.label
            chip = v.channel.meta.get("chip")
            if chip and label.startswith(f"{chip} "):
                label = label[len(chip) + 1 :]
            lines.append(
                f"{label[:11]:<11}{fmt(v.value, '5.1f')}°C" + (f"/{lim:.0f}" if lim else "")
            )
        return "\n".join(lines)
