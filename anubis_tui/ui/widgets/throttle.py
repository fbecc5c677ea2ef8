"""Throttle flags: lit now (reversed), or their share of readings so far."""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot
from anubis_tui.ui.widgets.labels import short_label
from anubis_tui.ui.widgets.panel import Panel


class ThrottlePanel(Panel):
    """Throttle flags per channel: a flag lit now in reverse video, else its share of
    readings so far (%); ``boot:`` lists flags that occurred since boot."""

    TITLE = "throttle"

    def text(self, s: Snapshot) -> str:
        """One line per throttle channel (as many as fit); ``ok`` where no flag was ever lit."""
        if not s.throttle:
            return "no throttle flags"
        lines = []
        for v in s.throttle[: max(1, self.content_region.height or 4)]:
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
            lines.append(f"{short_label(v.channel, 10)} " + (" ".join(lit) or "ok") + occurred)
        return "\n".join(lines)
