"""Bad input, faults and attacks, as a clumsy user or an attacker would try them.

Each ends in one clear line and a non-zero exit (never a traceback, never a
hang), or in a recovery that is shown; nothing is claimed that was not kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import msgpack
import pytest

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Event
from tests.conftest import ANUBIS, FIXTURES, ROOT, cli_env, errors

PLUGINS = ROOT / "plugins"
RECORDING = Path(__file__).resolve().parents[2] / "recordings" / "vm-2core-cpu-gemma270m.msgpack"


def run(*args, timeout=60, env=None, stdin=None, cwd=None, **extra):
    return subprocess.run(
        [*ANUBIS, *args],
        capture_output=True,
        env={**(env or cli_env("empty_container")), **extra},
        timeout=timeout,
        check=False,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        cwd=cwd,
    )


def one_line_error(p, code=2):
    err = p.stderr.decode()
    lines = [ln for ln in err.splitlines() if "warning: ANUBIS_NVML_MODULE" not in ln]
    assert p.returncode == code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("anubis: "), err
    return lines[0]


# Each bad flag, and what its one line must name: the flag (and, where there is one, the
# bad part of its value), so that the user knows which of their words to change. A line
# that says something true about another flag (``--plan ... --no-model``) fails here.
BAD_FLAGS = [
    (["record", "--duration", "inf", "--no-model"], ["--duration", "inf"]),
    (["record", "--duration", "1e300", "--no-model"], ["--duration", "1e300"]),
    (["record", "--duration", "nan", "--no-model"], ["--duration", "nan"]),
    (["record", "--rate", "1e9", "--no-model"], ["--rate", "1e9"]),
    (["record", "--rate", "inf", "--no-model"], ["--rate", "inf"]),
    (["record", "--rate", "0.5", "--no-model"], ["--rate", "0.5"]),
    (["record", "--threads", "0", "--no-model"], ["--threads", "0"]),
    # A plan is parsed before any model loads: these need no --no-model.
    (["record", "--plan", ""], ["--plan", "empty"]),
    (["record", "--plan", "off:nan"], ["--plan", "off:nan", "seconds"]),
    (["record", "--plan", "py-spy@1e9:3"], ["--plan", "py-spy@1e9:3", "rate"]),
    (["record", "--plan", "threads=0:5"], ["--plan", "threads=0:5", "threads"]),
    (["record", "--plan", "power_limit_w=1e9:5"], ["--plan", "power_limit_w"]),
    (["record", "--plan", "off:5", "--no-model"], ["--plan", "--no-model"]),
    (["record", "--export", "nope:1", "--no-model"], ["--export", "nope"]),
    (["record", "--prompt-file", "/nonexistent/prompts.txt"], ["/nonexistent/prompts.txt"]),
    (["bench", "--duration", "-1"], ["--duration", "-1"]),
    (["sweep", "--rates", "7"], ["--rates", "7 Hz"]),
    (["sweep", "--knob", "threads"], ["--knob", "threads"]),
    (["run", "--models-dir", "/nonexistent/models"], ["--models-dir", "/nonexistent/models"]),
    (["report", "recordings/vm-2core-cpu-sweep.msgpack", "--budget", "nan"], ["--budget", "nan"]),
    (["report", "recordings/vm-2core-cpu-sweep.msgpack", "--plot", "x.gif"], ["--plot", "x.gif"]),
    (["compare", "recordings/vm-2core-cpu-sweep.msgpack", "/nonexistent.msgpack"],
     ["/nonexistent.msgpack"]),
    (["agent", "--rate", "0"], ["--rate", "0"]),
    (["agent", "--record", "/nonexistent/dir/x.msgpack", "--no-model"],
     ["/nonexistent/dir/x.msgpack"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "named"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_that_names_the_flag(args, named):
    line = one_line_error(run(*args))
    for part in named:
        assert part in line, f"{line!r} does not name {part!r}"


@pytest.mark.parametrize(
    "var,value",
    [("ANUBIS_RATE_HZ", "nan"), ("ANUBIS_RATE_HZ", "-1"), ("ANUBIS_RATE_HZ", "x"),
     ("ANUBIS_THREADS", "0"), ("ANUBIS_GPU_LAYERS", "lots")],
)  # fmt: skip
def test_bad_environment_is_one_line(var, value):
    one_line_error(run("sensors", **{var: value}))


@pytest.mark.parametrize(
    "text",
    [
        b"\x00\xff\xfebinary",
        b'rate_hz = "x"\n',
        b"rate_hz = nan\n",
        b"rate_hz = 0\n",
        b"record_dir = 5\n",
        b'fsync_interval_s = "x"\n',
        b"[keys]\nmarker = 5\n",
        b"[keys]\nmarker = [1]\n",
        b"nonsense_key = 1\n",
    ],
)
def test_bad_config_is_one_line(tmp_path, text):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(text)
    one_line_error(run("sensors", ANUBIS_CONFIG=str(cfg)))


def test_fifos_never_hang(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    t = time.monotonic()
    for args in (
        ["report", str(fifo)],
        ["export", str(fifo), "--csv", str(tmp_path / "o.csv")],
        ["replay", str(fifo)],
        ["sensors"],  # the config file is the FIFO
    ):
        p = run(*args, timeout=20, ANUBIS_CONFIG=str(fifo) if args == ["sensors"] else "/none")
        assert "regular file" in one_line_error(p)
    assert time.monotonic() - t < 30


def test_a_fifo_in_the_sensor_tree_does_not_hang_discovery(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(FIXTURES / "intel_laptop", root, symlinks=True)
    victim = next(root.glob("sys/class/thermal/thermal_zone0/temp"))
    victim.unlink()
    os.mkfifo(victim)
    label = next(p for p in root.glob("sys/devices/**/temp1_label"))
    label.unlink()
    os.mkfifo(label)
    p = run("sensors", "--json", timeout=30, env=cli_env(root))
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["sources"]


@pytest.mark.parametrize("target", ["/proc/nope/x.msgpack", "{file}/child.msgpack"])
def test_unwritable_outputs_are_one_line(tmp_path, target):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(run("record", "--no-model", "--duration", "1", "-o", target.format(file=f)))


def test_unwritable_record_dir_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(run("record", "--no-model", "--duration", "1", ANUBIS_RECORD_DIR=str(f)))


def test_a_full_disk_stops_the_recording_at_once_and_fails(tmp_path):
    t = time.monotonic()
    p = run("record", "--no-model", "--duration", "30", "-o", "/dev/full", "--force", timeout=60)
    assert p.returncode == 1 and time.monotonic() - t < 20
    err = p.stderr.decode()
    assert "No space left on device" in err and "recorded 0 samples" in err
    assert "Traceback" not in err


def test_export_never_overwrites_or_follows_symlinks_and_reports_a_full_disk(tmp_path):
    out = tmp_path / "o.csv"
    out.write_text("precious")
    assert "--force" in one_line_error(run("export", str(RECORDING), "--csv", str(out)))
    assert out.read_text() == "precious"
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    assert "symlink" in one_line_error(run("export", str(RECORDING), "--csv", str(link), "--force"))
    assert not (tmp_path / "elsewhere.csv").exists()
    for args in (["--csv", "/dev/full"], ["--plot", "/dev/full"], ["--plot", "x.xyz"]):
        one_line_error(run("export", str(RECORDING), *args, "--force"))
    full = run("export", str(RECORDING), "--csv", "/dev/full", "--force")
    assert b"No space left" in full.stderr
    ok = run("export", str(RECORDING), "--csv", str(tmp_path / "n.csv"))
    assert ok.returncode == 0 and (tmp_path / "n.csv").read_text().startswith("t_s,")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        os.urandom(300),
        msgpack.packb([0, {"format": "anubis-recording", "schema": [2, 0]}]),
    ],
    ids=["empty", "random", "schema-2"],
)
def test_replay_of_a_stream_that_is_no_recording_is_one_line(tmp_path, data):
    src = tmp_path / "in"
    src.write_bytes(data)
    with open(src, "rb") as f:
        one_line_error(run("replay", "-", stdin=f))


def test_report_json_is_strict_json_for_a_hostile_file(tmp_path):
    recs, _ = read_all(RECORDING)
    raw = RECORDING.read_bytes()
    # append an event with NaN, infinity, bytes and a list where numbers belong
    evil = msgpack.packb(
        [3, 1, "request_end", {"ttft_ns": float("nan"), "generated": [1], "x": b"\x00"}]
    )
    f = tmp_path / "evil.msgpack"
    f.write_bytes(raw + evil)
    p = run("report", str(f), "--json")
    assert p.returncode == 0, p.stderr.decode()
    json.loads(p.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert recs


def test_nvml_module_hook_is_named_on_stderr():
    p = run("sensors", "--json")
    assert b"ANUBIS_NVML_MODULE" in p.stderr and b"test hook" in p.stderr


@pytest.mark.slow
def test_worker_never_imports_code_from_the_current_directory(tmp_path):
    """`anubis` (the console script, as users run it) in a directory holding a llama_cpp.py."""
    import sysconfig

    marker = tmp_path / "pwned"
    for name in ("llama_cpp.py", "msgpack.py", "anubis_tui.py"):
        (tmp_path / name).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    anubis = str(Path(sysconfig.get_path("scripts")) / "anubis")
    p = subprocess.run(
        [anubis, "bench", "--duration", "2", "--threads", "1", "--max-tokens", "16"],
        capture_output=True,
        env=cli_env("empty_container"),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert not marker.exists()


@pytest.mark.slow
def test_a_planted_log_symlink_is_refused(tmp_path):
    out = tmp_path / "r.msgpack"
    target = tmp_path / "victim"
    target.write_text("keep")
    (tmp_path / "r.msgpack.log").symlink_to(target)
    p = run("record", "--duration", "2", "--threads", "1", "-o", str(out), timeout=120)
    assert p.returncode == 2 and b"symlink" in p.stderr and b"Traceback" not in p.stderr
    assert target.read_text() == "keep"
    _, recovery = read_all(out)  # what was recorded is still a clean file with a footer
    assert not recovery.truncated


@pytest.mark.slow
def test_a_model_that_does_not_load_fails_the_record(tmp_path):
    from anubis_tui.inference.models import default_model

    cut = tmp_path / "cut.gguf"
    with open(default_model(), "rb") as f:
        cut.write_bytes(f.read(30 << 20))  # the header is whole, the tensors are not
    p = run("record", "--duration", "20", "--model", str(cut), "-o", str(tmp_path / "m.msgpack"),
            timeout=120)  # fmt: skip
    err = p.stderr.decode()
    assert p.returncode != 0 and "Traceback" not in err, err
    assert "model" in err
    if p.returncode == 1:  # it got as far as the worker: the recording says why
        recs, _ = read_all(tmp_path / "m.msgpack")
        assert any(isinstance(r, Event) and r.kind == "error" for r in recs)


def test_recording_to_dev_null_is_not_a_disk_error():
    """fsync is for files: /dev/null (a benchmark's sink) records happily, /dev/full does not."""
    p = run("record", "--no-model", "--duration", "2", "-o", os.devnull, "--force")
    assert p.returncode == 0, p.stderr.decode()
    assert b"recorded 0 samples" not in p.stderr and b"recorded " in p.stderr


# Moved from files marked slow: none of these loads a model.


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--model", "/nonexistent.gguf"], "model file not found"),
        (["--threads", "0"], "--threads: threads must be a positive number up to 4096, not 0"),
        (["--threads", "-3"], "--threads: threads must be a positive number up to 4096, not -3"),
        (["--prompt-file", "/nonexistent.txt"], "cannot read prompt file"),
        (["--model", "README.md"], "not a GGUF file"),
    ],
)
def test_bench_bad_input_is_one_line(args, msg):
    p = subprocess.run(
        [*ANUBIS, "bench", "--duration", "1", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert p.returncode == 2
    err = errors(p.stderr)
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_export_bad_input_is_one_line(tmp_path):
    env = cli_env("empty_container")
    for args, msg in (
        (["--export", "nosuch"], "no such sink plugin"),
        (["--export", "prometheus:127.0.0.1:99999"], "out of range"),
        (["--export", "prometheus:abc"], "is not a port"),
    ):
        r = subprocess.run(
            [*ANUBIS, "--plugins", str(PLUGINS), "record", "--no-model", "--duration", "1",
             "-o", str(tmp_path / "x.msgpack"), "--force", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(
        [*ANUBIS, "--plugins", str(tmp_path / "none"), "sensors"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_overwrite_needs_force_and_bad_files_are_one_line(tmp_path):
    out = tmp_path / "x.msgpack"
    out.write_bytes(b"precious")
    p = run("record", "--duration", "1", "-o", str(out), "--no-model")
    err = errors(p.stderr)
    assert p.returncode == 2 and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"precious"
    p = run("report", str(out))
    assert p.returncode == 2 and errors(p.stderr).startswith("anubis: not an anubis recording")
    assert b"Traceback" not in p.stderr
    p = run("report", str(tmp_path / "missing.msgpack"))
    assert p.returncode == 2 and b"no such recording" in p.stderr


def test_sweep_bad_input_is_one_line(tmp_path):
    env = cli_env("empty_container")
    for args, msg in (
        (["--rates", "7"], "is not one of"),
        (["--knob", "threads"], "NAME=V1,V2"),
        (["--knob", "colour=red"], "unknown knob"),
        (["--profilers", "perf"], "unknown profiler"),
        (["--segment-s", "0"], "positive"),
    ):
        r = subprocess.run(
            [*ANUBIS, "sweep", *args, "-o", str(tmp_path / "x.msgpack"), "--force"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
