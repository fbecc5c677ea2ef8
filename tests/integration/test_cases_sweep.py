"""No false success from `anubis sweep` (issue 20, kind 1).

An absurd ``--seed`` is refused before anything starts; a sweep whose
recording cannot be written (a full disk) says so, closes the file with what
really reached it and exits non-zero, without a report of a broken file.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anubis_tui.recording.reader import read_all
from anubis_tui.records import Footer
from tests.conftest import ANUBIS, cli_env, errors


def sweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANUBIS, "sweep", *args],
        env=cli_env("empty_container"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("seed", ["1180591620717411303424", "-1", "2**8", "nan"])
def test_an_absurd_seed_is_refused_before_anything_starts(tmp_path: Path, seed: str):
    out = tmp_path / "s.msgpack"
    t = time.monotonic()
    r = sweep("--knob", "threads=1,2", "--seed", seed, "-o", str(out), timeout=60)
    assert r.returncode == 2, r.stderr
    err = errors(r.stderr)
    assert "--seed" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()  # nothing started: no file, no model loaded
    assert time.monotonic() - t < 30


@contextlib.contextmanager
def small_disk(kib: int) -> Iterator[Path]:
    """A tmpfs of `kib` KiB (root only), else skip: a disk that fills during the sweep."""
    d = Path(tempfile.mkdtemp(prefix="anubis-full-"))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(d)], capture_output=True
    )
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
        os.rmdir(d)


@pytest.mark.slow
def test_a_sweep_on_a_disk_that_fills_fails_and_keeps_what_was_written():
    with small_disk(20) as disk:  # 2 Samples a second at 100 Hz: the sources update at 2 Hz
        out = disk / "s.msgpack"
        r = sweep("--knob", "threads=1,2", "--segment-s", "20", "--repeats", "1", "--warmup-s",
                  "1", "--cooldown-s", "0", "--rate", "100", "-o", str(out))  # fmt: skip
        err = errors(r.stderr)
        assert r.returncode != 0, err[-2000:]
        assert "No space left" in err and "Traceback" not in err, err[-2000:]
        assert "recorded to" not in err  # no claim of a recording
        records, recovery = read_all(out)
        # what reached the disk is a readable prefix; the writer stopped at the error
        assert records and not isinstance(records[-1], Footer)
        assert recovery.records == len(records)
