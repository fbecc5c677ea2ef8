"""Only anubis_tui.ui imports textual: the headless modules run without it."""

from __future__ import annotations

import subprocess
import sys

HEADLESS = [
    "anubis_tui.cli",
    "anubis_tui.records",
    "anubis_tui.config",
    "anubis_tui.session.sampler",
    "anubis_tui.sources.registry",
    "anubis_tui.sources.nvml",
    "anubis_tui.sources.rapl",
    "anubis_tui.sources.hwmon",
    "anubis_tui.sources.jetson",
    "anubis_tui.sources.rpi",
    "anubis_tui.inference.bench",
    "anubis_tui.session",
    "anubis_tui.analysis.segments",
    "anubis_tui.analysis.report",
    "anubis_tui.analysis.replay",
    "anubis_tui.profilers.controller",
    "anubis_tui.cli.agent",  # the agent runs where no terminal UI is wanted
    "anubis_tui.session.agent",
    "anubis_tui.errors",
    "anubis_tui.stream",
]


def test_headless_modules_do_not_import_textual():
    code = (
        "import importlib, sys\n"
        f"for m in {HEADLESS!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""


def test_the_layers_contract_holds():
    """cli → ui → session → profilers → sources | inference | analysis → recording → records."""
    import shutil

    exe = shutil.which("lint-imports") or str(
        __import__("pathlib").Path(sys.executable).with_name("lint-imports")
    )
    p = subprocess.run([exe], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout[-2000:]
    assert "Layers" in p.stdout and "KEPT" in p.stdout and "BROKEN" not in p.stdout
