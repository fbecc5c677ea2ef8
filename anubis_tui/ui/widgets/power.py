"""System power, energy and J/token with their method, and the largest power channels."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.panel import Panel


class PowerPanel(Panel):
    TITLE = "power & energy"

    def text(self, s: Snapshot) -> str:
        ch = s.system_channel
        est = " est." if ch is not None and ch.method == "estimated" else ""
        lines = [
            f"system {fmt(s.system_power, '.1f', ' W')}{est}",
            f"  from {ch.scope if ch else '—'}",
            f"energy {fmt(s.energy_j, '.1f', ' J')}{est}",
            f"J/tok  {fmt(s.jpt_recent, '.3f')}{est}",
        ]
        for v in s.power[:3]:
            m = v.channel.method
            tag = (
                ("ctr" if v.channel.meta.get("energy_channel") else "der")
                if m == "derived"
                else {"instant": "inst", "estimated": "est", "counter": "ctr"}.get(m, "avg")
            )
            name = v.channel.id.split(".")[-2] if "." in v.channel.id else v.channel.id
            lines.append(f"{name[:10]:<10}{fmt(v.value, '6.1f')} W {tag}")
        return "\n".join(lines)
