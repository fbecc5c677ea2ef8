from __future__ import annotations

from anubis_tui.profilers import base
from anubis_tui.profilers.pyspy import PySpy
from anubis_tui.profilers.scalene import Scalene


def test_builtins_register_like_plugins_and_broken_ones_are_skipped(monkeypatch):
    monkeypatch.setitem(base.BUILTINS, "broken", "no_such_profiler_module:Thing")
    monkeypatch.setitem(base.BUILTINS, "notone", "anubis_tui.records:Channel")
    warnings: list[str] = []
    found = base.profiler_classes(warn=warnings.append)
    assert found["py-spy"] is PySpy and found["scalene"] is Scalene
    assert "broken" not in found and "notone" not in found
    assert any("broken" in w for w in warnings) and any("not a Profiler" in w for w in warnings)
