"""A campaign of hostile recordings through the real CLI: count tracebacks and hangs.

Builds N recordings with the fuzz test's structure-aware strategy (valid
record shapes, hostile values), cut and random files, and a real recording
with hostile payloads of every Event kind and channel meta key the writer
makes (`payload_files`), and runs
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


HOSTILE = [None, [1, 2], {"a": 1}, "x", float("nan"), float("inf"), -1, 2**64 - 1, True]


def payload_files(real: bytes, n: int, seed: int) -> list[bytes]:
    """A real recording with Events of every kind the writer makes, each with one field
    missing or of a hostile type, and channels whose known meta keys are hostile.

    The kinds and fields come from the writer's side: `EVENT_SCHEMA` (what each
    kind carries) and `CHANNEL_META`; the values are what a writer never writes.
    """
    import random

    import msgpack

    from anubis_tui.records import CHANNEL_META, EVENT_SCHEMA

    rnd = random.Random(seed)
    objs = list(msgpack.Unpacker(__import__("io").BytesIO(real), raw=False, strict_map_key=False))
    header, body = objs[0], objs[1:]
    end = max((o[1] for o in body if isinstance(o[1], int)), default=10**9)
    cases = [(k, f) for k, fields in EVENT_SCHEMA.items() for f in fields]
    out = []
    for _ in range(n):
        h = [header[0], dict(header[1])]
        chans = [dict(c) for c in h[1]["channels"]]
        for c in rnd.sample(chans, k=min(3, len(chans))):
            c["meta"] = {
                **(c.get("meta") or {}),
                rnd.choice(list(CHANNEL_META)): rnd.choice(HOSTILE),
            }
        # the report's energy line reads system.energy's integration: make it hostile often
        for c in chans:
            if c.get("id") == "system.energy" and rnd.random() < 0.5:
                c["meta"] = {**(c.get("meta") or {}), "integration": rnd.choice(HOSTILE)}
        h[1]["channels"] = chans
        extra = []
        for kind, field in rnd.sample(cases, k=8):
            payload = {f: 1 for f in EVENT_SCHEMA[kind]}
            payload.update(request=rnd.randrange(5), generated=3, decode_ns=10**6, ttft_ns=10**6)
            if rnd.random() < 0.5:
                payload.pop(field, None)
            else:
                payload[field] = rnd.choice(HOSTILE)
            extra.append([3, rnd.randrange(end), kind, payload])
        stream = sorted([*body[:-1], *extra], key=lambda o: o[1] if isinstance(o[1], int) else 0)
        out.append(b"".join(msgpack.packb(o) for o in [h, *stream, body[-1]]))
    return out


def make_files(d: Path, n: int) -> list[Path]:
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    from tests.unit.test_fuzz_recordings import recording

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    real = (ROOT / "recordings" / "vm-2core-cpu-profiler-sweep.msgpack").read_bytes()
    out = []
    hostile_payloads = payload_files(real, n // 5 + 1, seed=n)
    for i in range(n):
        kind = i % 5
        if kind < 2:
            data = recording().example()
        elif kind == 2:
            data = real[: len(real) * (i + 1) // (n + 1)]  # a cut real recording
        elif kind == 3:
            data = real[:2000] + os.urandom(200) + real[2200:4000]  # corruption inside
        else:
            data = hostile_payloads[i // 5]  # payload kinds the writer makes, hostile
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
