from __future__ import annotations

import json

import pytest

from anubis_tui.profilers import static
from tests.conftest import FAKE_NVML


def test_ceiling_is_bandwidth_over_bytes_per_token():
    bw = static.Bandwidth(10e9, "test", "now")
    est = static.estimate(250_000_000, bw=bw)
    assert est.ceiling_tps == pytest.approx(40.0)
    assert est.share(20.0) == pytest.approx(0.5)
    assert "ceiling 40 tok/s (CPU copy, 10 GB/s): 50% of it" in est.line(20.0)


def test_offloaded_layers_use_the_gpu_bandwidth_from_nvml(fake_nvml, monkeypatch):
    fake_nvml("trace")
    monkeypatch.setenv("ANUBIS_NVML_MODULE", str(FAKE_NVML))
    cpu = static.Bandwidth(10e9, "test", "now")
    est = static.estimate(250_000_000, gpu_layers=-1, bw=cpu)
    # H200: 6144-bit bus × 3201 MHz × 2 = 4.92 TB/s
    assert est.bandwidth_bytes_per_s == pytest.approx(6144 / 8 * 3201e6 * 2)
    assert est.ceiling_tps == pytest.approx(6144 / 8 * 3201e6 * 2 / 250_000_000)
    assert "6144-bit bus" in est.line(None) and "H200" in est.line(None)
    # half the layers: half the bytes at the GPU's rate, half at the CPU's
    half = static.estimate(250_000_000, gpu_layers=9, layers=18, bw=cpu)
    t = 125e6 / (6144 / 8 * 3201e6 * 2) + 125e6 / 10e9
    assert half.ceiling_tps == pytest.approx(1 / t)
    assert "CPU copy for 50%" in half.line(None)
    # no NVML: the CPU model, and it says so
    monkeypatch.setenv("ANUBIS_NVML_MODULE", "absent_nvml_module")
    assert "CPU model only" in static.estimate(250_000_000, gpu_layers=-1, bw=cpu).line(None)


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
