"""A campaign of hostile recordings through the real CLI: count tracebacks and hangs.

Builds N recordings with the fuzz test's structure-aware strategy (valid
record shapes, hostile values) plus cut and random files, and runs
`anubis report`, `report --json`, `export --csv` and `export --plot` on each
in a subprocess. Prints, per command, runs, clean exits, one-line errors,
tracebacks and timeouts. Test input, not measurements.

    python bench/hostile_files.py [--files 100] [--check]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_files(d: Path, n: int) -> list[Path]:
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    from tests.unit.test_fuzz_recordings import recording

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    real = (ROOT / "recordings" / "vm-2core-cpu-profiler-sweep.msgpack").read_bytes()
    out = []
    for i in range(n):
        kind = i % 4
        if kind < 2:
            data = recording().example()
        elif kind == 2:
            data = real[: len(real) * (i + 1) // (n + 1)]  # a cut real recording
        else:
            data = real[:2000] + os.urandom(200) + real[2200:4000]  # corruption inside
        p = d / f"h{i:04d}.msgpack"
        p.write_bytes(data)
        out.append(p)
    return out


def run(args: list[str], cwd: Path) -> str:
    try:
        p = subprocess.run(
            [sys.executable, "-m", "anubis_tui", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env={**os.environ, "ANUBIS_CONFIG": "/nonexistent"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if "Traceback" in p.stderr:
        return "traceback"
    if p.returncode == 0:
        return "ok"
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return "one-line error" if len(lines) == 1 and lines[0].startswith("anubis: ") else "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = make_files(d, a.files)
        jobs = []
        for f in files:
            jobs += [
                ("report", ["report", str(f)]),
                ("report --json", ["report", str(f), "--json"]),
                ("export --csv", ["export", str(f), "--csv", str(f) + ".csv"]),
                ("export --plot", ["export", str(f), "--plot", str(f) + ".png"]),
            ]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(lambda j: (j[0], run(j[1], d)), jobs))
    names = list(dict.fromkeys(n for n, _ in results))
    outcomes = ("ok", "one-line error", "traceback", "timeout", "other")
    print(f"{'command':<15} {'runs':>5} " + " ".join(f"{o:>14}" for o in outcomes))
    bad = 0
    for n in names:
        got = [r for m, r in results if m == n]
        print(f"{n:<15} {len(got):>5} " + " ".join(f"{got.count(o):>14}" for o in outcomes))
        bad += sum(got.count(o) for o in ("traceback", "timeout", "other"))
    return 1 if a.check and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
