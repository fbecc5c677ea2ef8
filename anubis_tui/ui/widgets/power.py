"""Power and J/token: the system's (with its method), each measured counter's, the top channels.

On a GPU server without a CPU power sensor the system figure is an
estimate; the GPU's own energy counter is measured. Both J/token figures
are shown, each with its method, so the estimate is never the only number.
"""

from __future__ import annotations

from anubis_tui.analysis.live import Snapshot, fmt
from anubis_tui.ui.widgets.labels import short_label
from anubis_tui.ui.widgets.panel import Panel, first_fit

TAGS = {"instant": "inst", "estimated": "est.", "counter": "ctr"}


def jfmt(v: float | None) -> str:
    """J/token with 3 significant digits (``0.320``, ``21.3``), ``—`` for None."""
    return "—" if v is None else f"{v:#.3g}"


class PowerPanel(Panel):
    """System power (W) and its method, J/token now (system and each measured energy
    counter, e.g. a GPU's), energy so far (J), what system power leaves out, then
    the other power channels (W) with their method tags."""

    TITLE = "power & energy"

    def text(self, s: Snapshot) -> str:
        """The panel's lines, fitted to its width: the method tag (``est.``/``meas.``) is
        kept at every width, words before it go first."""
        width = max(16, self.text_width)
        ch = s.system_channel
        if ch is None and not s.power:
            return "no power sensor"
        est = ch is not None and ch.method == "estimated"
        how = "est." if est else "meas."
        # The method tag ("est." or "meas.") stays at every width: words before it go first.
        jpt = jfmt(s.jpt_recent)
        lines = [
            f"system {fmt(s.system_power, '.1f', ' W')} {how}",
            first_fit(
                width, f"J/tok  {jpt} system {how}", f"J/tok {jpt} sys {how}", f"J/tok {jpt} {how}"
            ),
        ]
        for c, cj in s.counter_jpt:
            head = f"J/tok {jfmt(cj)} "
            label = short_label(c, max(1, width - len(head) - 6))
            lines.append(first_fit(width, f"{head}{label} meas.", f"{head}meas."))
        lines.append(f"energy {fmt(s.energy_j, '.0f', ' J')} {how}")
        missing = ch.meta.get("uncovered") if ch is not None else None
        if isinstance(missing, list) and missing:
            # What system power leaves out (sources.registry): the full list is in the log
            # and in `anubis sensors`; here the first part, by name, then a count.
            first = str(missing[0]).split(":")[0]
            more = f" +{len(missing) - 1}" if len(missing) > 1 else ""
            # a device's name ("GPU0 (Quadro K2100M)" → "GPU0") when shortened; never a
            # bare article ("the whole machine" → "the")
            word = first.split(" ")[0]
            named = any(c.isupper() or c.isdigit() for c in word)
            shorter = [f"not covered: {word}{more}"] if named else []
            lines.append(
                first_fit(
                    width,
                    f"not covered: {first}{more}",
                    *shorter,
                    f"partial: {len(missing)} (l)",
                )
            )
        room = max(0, (self.content_region.height or 6) - len(lines))
        label_w = max(4, width - 13)
        for v in s.power[:room]:
            m = v.channel.method
            tag = (
                ("ctr" if v.channel.meta.get("energy_channel") else "der")
                if m == "derived"
                else TAGS.get(m, "avg")
            )
            name = short_label(v.channel, label_w)
            lines.append(f"{name:<{label_w}}{fmt(v.value, '6.1f')} W {tag}")
        return "\n".join(lines)
