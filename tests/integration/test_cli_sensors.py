"""`anubis sensors --json` as a user runs it, on every fake tree."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ANUBIS, cli_env, errors


def sensors(tree: str, **env: str) -> dict:
    p = subprocess.run(
        [*ANUBIS, "sensors", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(tree, **env),
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def channel(d: dict, cid: str) -> dict:
    return next(c for s in d["sources"] for c in s["channels"] if c["id"] == cid)


def test_version():
    p = subprocess.run([*ANUBIS, "--version"], capture_output=True, text=True, check=True)
    assert p.stdout.startswith("anubis 0.")


def test_intel_laptop_json_shape_and_converted_values():
    d = sensors("intel_laptop")
    c = channel(d, "rapl.package-0.energy")
    assert c["value"] == pytest.approx(52649.883221)
    assert set(c) >= {"id", "label", "kind", "unit", "scope", "method", "update_period_s", "value"}
    assert c["unit"] == "J" and c["method"] == "counter"
    assert channel(d, "battery.BAT0.power")["value"] == pytest.approx(19.195)
    t = channel(d, "intel_throttle.package-0")
    assert t["flags_active"] == [] and t["flags_occurred"] == []
    assert d["system_power"]["channel"] == "rapl.psys.power"
    assert "psys" in d["system_power"]["reason"]


def test_amd_desktop():
    d = sensors("amd_desktop")
    assert channel(d, "hwmon.k10temp.temp1")["value"] == 61.375
    assert channel(d, "amdgpu.hwmon1.power_avg")["value"] == 35.0  # its own source (issue 25)


def test_jetson_orin():
    d = sensors("jetson_orin_jp6", ANUBIS_FAKE_NVML="jetson")
    assert channel(d, "jetson.VDD_IN.power")["value"] == pytest.approx(5.9944)
    nv = next(s for s in d["sources"] if s["name"].startswith("nvml"))
    assert nv["available"] is False and "unsupported" in nv["reason"]
    assert d["system_power"]["channel"] == "jetson.VDD_IN.power"


def test_jetson_tx2():
    d = sensors("jetson_tx2_jp4")
    assert channel(d, "jetson.VDD_IN.power")["value"] == pytest.approx(2.412)


def test_rpi4_and_rpi5_flags():
    d4 = sensors("rpi4")
    c4 = channel(d4, "rpi.throttled")
    assert c4["value"] == 0x50000
    assert c4["flags_active"] == [] and c4["flags_occurred"] == ["under_voltage", "throttled"]
    d5 = sensors("rpi5")
    c5 = channel(d5, "rpi.throttled")
    assert c5["flags_active"] == ["under_voltage", "throttled"]
    assert channel(d5, "rpi.pmic.VDD_CORE")["value"] == pytest.approx(5.3636, rel=1e-3)


def test_gpu_server_with_fake_nvml_in_power_capped_state():
    d = sensors("empty_container", ANUBIS_FAKE_NVML="capped", ANUBIS_FAKE_NVML_COST="0")
    t = channel(d, "gpu0.throttle")
    assert t["value"] == 4 and t["flags_active"] == ["power_cap"]
    assert channel(d, "gpu0.clock_sm")["value"] == 1470e6
    assert d["system_power"]["channels"][0] == "gpu0.power_counter"


def test_this_machine_psutil_and_estimate_only():
    # The real machine (no ANUBIS_SYSFS_ROOT), real NVML module: CI has no GPU and no sensors.
    env = cli_env()
    env.pop("ANUBIS_NVML_MODULE")
    env.pop("ANUBIS_SYSFS_ROOT", None)
    p = subprocess.run(
        [*ANUBIS, "sensors", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    avail = {s["name"] for s in d["sources"] if s["available"]}
    assert {"process", "estimate"} <= avail
    est = channel(d, "estimate.cpu.power")
    assert est["method"] == "estimated" and est["value"] > 0


def test_bad_config_is_one_line_and_nonzero(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("rate_hz = [\n")
    p = subprocess.run(
        [*ANUBIS, "sensors"],
        capture_output=True,
        text=True,
        env=cli_env("empty_container", ANUBIS_CONFIG=str(cfg)),
        check=False,
    )
    assert p.returncode == 2
    err = errors(p.stderr)
    assert err.startswith("anubis: config file") and err.count("\n") == 1
    assert "Traceback" not in p.stderr


def test_unknown_command_is_one_line():
    p = subprocess.run([*ANUBIS, "frobnicate"], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_watch_refreshes_until_ctrl_c():
    import signal
    import time

    p = subprocess.Popen(
        [*ANUBIS, "sensors", "--watch"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env("intel_laptop"),
    )
    time.sleep(3.0)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0
    assert out.count("\x1b[2J") >= 2 and out.count("system power:") >= 2
