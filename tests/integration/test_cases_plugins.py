"""Every case in ../shared/cases/reliability/plugins/, and the other sink and plugin kinds.

`--plugins DIR` imports only the modules its entry points name, from DIR,
without putting DIR on sys.path (case `shadow`); an ``--export`` sink runs
behind a bounded queue and is dropped, with an Event, when it is slow (case
`slow`) or stuck, while the recording keeps every sample.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event, Footer, Sample
from tests.conftest import ANUBIS, ROOT, cli_env, errors

CASES = ROOT / "tests" / "fixtures" / "reliability" / "plugins"  # from shared/cases


def folder(name: str) -> Path:
    path = CASES / name
    if not path.is_dir():
        pytest.skip(f"{path} is not here")
    return path


def anubis(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANUBIS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env("empty_container"),
    )


def test_a_module_beside_a_plugin_never_runs(tmp_path: Path):
    shadow = folder("shadow")
    rec = tmp_path / "r.msgpack"
    runs = [
        anubis("--plugins", str(shadow), "sensors"),
        anubis("--plugins", str(shadow), "record", "--no-model", "--duration", "1", "-o", str(rec)),
        anubis("--plugins", str(shadow), "report", str(rec)),
        # the entry point is loaded (and refused: not a sink); platform.py still never runs
        anubis("--plugins", str(shadow), "record", "--no-model", "--duration", "1",
               "-o", str(tmp_path / "x.msgpack"), "--export", "nothing"),
    ]  # fmt: skip
    for r in runs:
        assert "SHADOW" not in r.stderr, r.stderr
        assert "Traceback" not in r.stderr, r.stderr
    assert [r.returncode for r in runs] == [0, 0, 0, 2]
    assert "nothing" in runs[3].stderr and "not a ExportSink" in runs[3].stderr


def test_plugin_folders_leave_sys_path_alone_and_may_not_shadow_a_module(tmp_path: Path):
    shadow = folder("shadow")
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "pyproject.toml").write_text(
        '[project]\nname = "evil"\n[project.entry-points."anubis.sinks"]\n'
        'evil = "platform:Sink"\njson = "json:Sink"\n'
    )
    (evil / "platform.py").write_text("raise SystemExit('EVIL platform ran')\n")
    (evil / "json.py").write_text("raise SystemExit('EVIL json ran')\n")
    code = textwrap.dedent(
        f"""
        import sys
        from anubis_tui.plugins import ExportSink, add_plugin_dirs, load_plugins
        before = list(sys.path)
        add_plugin_dirs([{str(shadow)!r}, {str(evil)!r}])
        said = []
        found = load_plugins("anubis.sinks", {{}}, ExportSink, warn=said.append)
        assert sys.path == before, sys.path
        assert "evil" not in found and "json" not in found, found
        assert "platform" not in sys.modules or "cases" not in str(sys.modules["platform"])
        print("\\n".join(said))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "EVIL" not in r.stdout + r.stderr and "SHADOW" not in r.stderr
    assert "'platform' is already a module here" in r.stdout
    assert "'json' is already a module here" in r.stdout


def test_a_slow_sink_is_dropped_and_the_recording_keeps_every_sample(tmp_path: Path):
    slow = folder("slow")
    rec = tmp_path / "slow.msgpack"
    t = time.monotonic()
    r = anubis("--plugins", str(slow), "record", "--no-model", "--duration", "8",
               "--export", "slow", "-o", str(rec))  # fmt: skip
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert "sink slow dropped" in r.stderr
    assert took < 25  # the session never waited for the sink (8 s, not one second a record)
    records, recovery = read_all(rec)
    assert not recovery.truncated
    footer = records[-1]
    assert isinstance(footer, Footer)
    samples = sum(isinstance(x, Sample) for x in records)
    # every sample the sampler took is in the file (it was 11 of 80 with the sink inline)
    assert samples == footer.totals["samples"] == footer.totals["sampler_samples"], footer.totals
    # 8 s of sources that update at 2 Hz: a tick that reads nothing records nothing
    assert samples >= 14
    dropped = [x for x in records if isinstance(x, Event) and x.kind == "sink_dropped"]
    assert len(dropped) == 1 and "slow" in dropped[0].payload["reason"]


def test_a_stuck_sink_is_dropped_and_the_session_still_ends(tmp_path: Path):
    plug = tmp_path / "stuck"
    (plug / "stuck_pkg").mkdir(parents=True)
    (plug / "pyproject.toml").write_text(
        '[project]\nname = "stuck"\n[project.entry-points."anubis.sinks"]\n'
        'stuck = "stuck_pkg:Sink"\n'
    )
    (plug / "stuck_pkg" / "__init__.py").write_text(
        "import threading\nfrom anubis_tui.plugins import ExportSink\n"
        "class Sink(ExportSink):\n"
        "    def __call__(self, rec):\n        threading.Event().wait()  # never returns\n"
        "    def close(self):\n        threading.Event().wait()  # nor does this\n"
    )
    rec = tmp_path / "stuck.msgpack"
    r = anubis("--plugins", str(plug), "record", "--no-model", "--duration", "8",
               "--export", "stuck", "-o", str(rec), timeout=60)  # fmt: skip
    assert r.returncode == 0, errors(r.stderr)
    assert "sink stuck dropped" in r.stderr
    records, recovery = read_all(rec)
    footer = records[-1]
    assert not recovery.truncated and isinstance(footer, Footer)
    assert sum(isinstance(x, Sample) for x in records) == footer.totals["sampler_samples"]
