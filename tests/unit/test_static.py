from __future__ import annotations

import json

import pytest

from anubis_tui.profilers import static


def test_ceiling_is_bandwidth_over_bytes_per_token():
    bw = static.Bandwidth(10e9, "test", "now")
    est = static.estimate(250_000_000, bw=bw)
    assert est.ceiling_tps == pytest.approx(40.0)
    assert est.share(20.0) == pytest.approx(0.5)
    assert "40 tok/s (50% of it)" in est.line(20.0)
    assert "GPU offload" in static.estimate(250_000_000, gpu_layers=-1, bw=bw).line(None)


def test_bandwidth_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    real = static.measure_bandwidth

    def measure(*a, **k):
        calls.append(1)
        return real(nbytes=8 << 20, repeats=2)

    monkeypatch.setattr(static, "measure_bandwidth", measure)
    a = static.bandwidth()
    b = static.bandwidth()
    assert calls == [1] and a == b and a.bytes_per_s > 1e8
    assert json.loads((tmp_path / "anubis" / "bandwidth.json").read_text())["bytes_per_s"] > 0
