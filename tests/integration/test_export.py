"""`anubis export` of a recording made without a model (moved from the slow test_record.py)."""

from __future__ import annotations

import subprocess

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event
from tests.conftest import ANUBIS, cli_env


def run(*args, tree="jetson_orin_jp6", timeout=120, **env):
    return subprocess.run(
        [*ANUBIS, *args],
        capture_output=True,
        env=cli_env(tree, **env),
        timeout=timeout,
        check=False,
    )


def test_export_csv_and_plot(tmp_path):
    out = tmp_path / "e.msgpack"
    assert run("record", "--duration", "3", "-o", str(out), "--no-model").returncode == 0
    csv_out, png = tmp_path / "e.csv", tmp_path / "e.png"
    p = run("export", str(out), "--csv", str(csv_out), "--plot", str(png))
    assert p.returncode == 0, p.stderr.decode()
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("t_s,") and "jetson.VDD_IN.power [W]" in lines[0]
    assert lines[0].endswith("decode_tps_2s,prompt_tps_1s,j_per_token_10s")
    assert len(lines) > 20
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [r for r in read_all(out)[0] if isinstance(r, Event)]
    assert events == [] or all(e.kind != "error" for e in events)
