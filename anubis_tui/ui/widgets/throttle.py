"""Throttle flags: lit now (reversed), or their share of readings so far."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot
from anubis_tui.ui.widgets.panel import Panel


class ThrottlePanel(Panel):
    TITLE = "throttle"

    def text(self, s: Snapshot) -> str:
        if not s.throttle:
            return "no throttle flags on this machine"
        lines = []
        for v in s.throttle[:4]:
            names = list(dict.fromkeys(v.channel.meta.get("flags", {}).values()))
            lit = []
            for n in names:
                if n == "idle":
                    continue
                on = n in v.active
                share = v.share.get(n, 0.0)
                if on or share > 0:
                    lit.append(f"[reverse]{n}[/]" if on else f"{n} {share:.0%}")
            occurred = f" boot:{','.join(v.occurred)}" if v.occurred else ""
            lines.append(f"{v.channel.id[:12]:<12} " + (" ".join(lit) or "ok") + occurred)
        return "\n".join(lines)
