"""`anubis report` in one pass (issue 20): the same figures as before, in bounded memory.

The goldens in tests/fixtures/report_golden/ are `anubis report` and `anubis report
--json` of every committed recording, saved with the code before the one-pass fold.
Text must match exactly; JSON floats within 1e-9 relative (a running sum adds in another
order than numpy's pairwise mean: the last bits of a mean differ, nothing else).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anubis_tui.analysis.report import ReportFold, render, report, report_file
from anubis_tui.analysis.windows import request_energy
from anubis_tui.cli.common import jsonable
from anubis_tui.recording.format import make_header, pack
from anubis_tui.recording.reader import (
    OutOfOrder,
    Recovery,
    from_records,
    in_time_order,
    load,
    time_ordered,
)
from anubis_tui.records import Channel, Event, Footer, Record, Sample, Tokens

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests/fixtures/report_golden"
RECORDINGS = sorted((ROOT / "recordings").glob("*.msgpack"))
S = 1_000_000_000


def differences(got: Any, want: Any, path: str = "") -> Iterator[str]:
    if isinstance(got, float) and isinstance(want, float):
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0):
            yield f"{path}: {got!r} != {want!r}"
    elif isinstance(got, dict) and isinstance(want, dict):
        if list(got) != list(want):
            yield f"{path}: keys {list(got)} != {list(want)}"
        for k in got.keys() & want.keys():
            yield from differences(got[k], want[k], f"{path}.{k}")
    elif isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            yield f"{path}: {len(got)} items != {len(want)}"
        for i, (x, y) in enumerate(zip(got, want, strict=False)):
            yield from differences(x, y, f"{path}[{i}]")
    elif got != want or type(got) is not type(want):
        yield f"{path}: {got!r} != {want!r}"


def as_json(r: dict[str, Any]) -> Any:
    return json.loads(json.dumps(jsonable(r), allow_nan=False))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_report_of_every_committed_recording_is_unchanged(path: Path) -> None:
    fold = report_file(path)
    r = fold.result(fold.recovery)
    want = json.loads(gzip.decompress((GOLDEN / f"{path.stem}.json.gz").read_bytes()))
    assert list(differences(as_json(r), want)) == []
    assert render(r).rstrip("\n") == (GOLDEN / f"{path.stem}.txt").read_text().rstrip("\n")
    # the loaded recording goes through the same fold
    assert list(differences(as_json(report(load(path))), want)) == []


CH = [
    Channel(id="system.power", label="p", source="s", kind="power", unit="W",
            scope="components", method="derived", update_period_s=0.1),
    Channel(id="system.energy", label="e", source="s", kind="energy", unit="J",
            scope="components", method="counter", update_period_s=0.1),
    Channel(id="gpu.throttle", label="t", source="s", kind="throttle", unit="flags",
            scope="gpu", method="instant", update_period_s=0.1,
            meta={"flags": {1: "power_cap", 2: "thermal"}}),
]  # fmt: skip


def session(n: int, overlap: bool = False) -> Iterator[Record]:
    """A synthetic session: 10 Hz samples of 200 W (energy a counter from 0.05 s), a
    decode batch every 50 ms, a request every 2 s (two in flight with `overlap`), a
    pause from 30 s to 36 s, the throttle flag on for every fifth sample."""
    yield make_header(CH, 0, config={"system_power": {"channels": ["system.power"]}})
    for k in range(n):
        t = k * S // 10
        if k % 20 == 0:
            yield Event(t, "request_start", {"request": k // 20 + 1})
            if overlap and k:
                yield Event(t + S // 2, "request_end", {"request": k // 20, "generated": 40})
            elif k:
                yield Event(t, "request_end", {"request": k // 20, "generated": 40})
        if k == 300:
            yield Event(t, "paused", {})
        if k == 360:
            yield Event(t, "resumed", {})
        paused = 300 <= k < 360
        yield Sample(t, [50.0 if paused else 200.0, 200.0 * (t + S // 20) / S, 1 if k % 5 else 3])
        if not paused:
            for b in (1, 2):
                bt = t + b * S // 20
                yield Tokens(bt, 2, "decode", k // 20 + 1, bt - S // 20 + 1)
    yield Footer(n * S // 10, {"clean": True})


def test_loaded_and_streamed_reports_agree_and_sum_right() -> None:
    recs = list(session(1200))
    r = report(from_records(recs))
    ordered = [r for b in in_time_order([recs]) for r in b]
    streamed = ReportFold().consume_all(ordered).result(Recovery(records=len(recs)))
    assert list(differences(as_json(streamed), as_json(r))) == []
    assert r["tokens"]["generated"] == 2 * 2 * (1200 - 60)
    assert r["throttle"]["share"]["power_cap"] == 1.0
    assert r["throttle"]["share"]["thermal"] == pytest.approx(0.2)
    # a sample stamped with `resumed` is not idle: 36 s − 31 s of 50 W readings
    idle = r["headline"]["idle"]
    assert idle["system_w"] == 50.0 and idle["seconds"] == 5.0
    # energy: the counter read every 100 ms from 0.05 s, extended to 0 and to the end
    assert r["energy"]["joules"] == pytest.approx(200.0 * 120.0)
    q = r["requests_energy"]
    assert q["method"] == "window" and len(q["requests"]) == 59
    assert q["median_j"] == pytest.approx(400.0)  # 2 s × 200 W


def test_overlapping_requests_are_apportioned_by_tokens() -> None:
    recs = time_ordered(list(session(400, overlap=True)))
    q = request_energy(from_records(recs))
    assert q["method"] == "apportioned by tokens"
    streamed = ReportFold().consume_all(recs).result(Recovery())["requests_energy"]
    assert list(differences(as_json(streamed), as_json(q))) == []
    # every request but the first shares its last 0.5 s with the next; all energy is counted
    total = sum(x["joules"] for x in q["requests"])
    assert total == pytest.approx(
        200.0 * (q["requests"][-1]["end_s"] - q["requests"][0]["start_s"])
    )


def test_equal_stamps_keep_file_order_and_late_records_are_put_in_place() -> None:
    recs = list(session(200))
    head, rest = recs[:1], recs[1:]
    shuffled = rest[:]
    rnd = random.Random(7)
    for i in range(0, len(shuffled) - 8, 8):  # out of order within 8 records (< 1 s)
        block = shuffled[i : i + 8]
        rnd.shuffle(block)
        shuffled[i : i + 8] = block
    batches = [head + shuffled[i : i + 50] for i in range(0, 1)] + [
        shuffled[i : i + 50] for i in range(50, len(shuffled), 50)
    ]
    got = [r for b in in_time_order(batches) for r in b]
    assert got == time_ordered(head + shuffled)


def test_records_later_than_the_hold_fall_back_to_sorting_in_memory(tmp_path: Path) -> None:
    recs = list(session(300))
    late = recs.pop(5)  # a record from the start, written at the end
    recs.insert(len(recs) - 1, late)
    with pytest.raises(OutOfOrder):
        list(in_time_order([recs[:100], recs[100:]], hold_ns=S))
    path = tmp_path / "late.msgpack"
    path.write_bytes(b"".join(pack(r) for r in recs))
    fold = report_file(path)
    r = fold.result(fold.recovery)
    assert list(differences(as_json(r), as_json(report(load(path))))) == []


def test_report_of_a_stream_on_stdin_is_the_report_of_the_file(tmp_path: Path) -> None:
    path = RECORDINGS[0]
    fold = report_file(io.BytesIO(path.read_bytes()))
    assert list(differences(as_json(fold.result(fold.recovery)), as_json(report(load(path))))) == []


def test_fold_memory_does_not_grow_with_samples() -> None:
    def peak(n: int) -> int:
        tracemalloc.start()
        fold = ReportFold().consume_all(session(n))
        fold.result(Recovery())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(6_000), peak(24_000)
    # 4× the samples: requests (one per 2 s) and the energy counter's 8-byte intervals
    # grow; samples and tokens (3× as many records) are not kept
    assert large < 2.5 * small, (small, large)


def test_a_cut_file_counts_the_batch_stamped_at_its_end() -> None:
    """The whole-run window is every record: before, int(duration_s × 1e9) could round one
    ns below the last stamp and drop a cut file's last batch from J/token's tokens."""
    last = 67_355_058_851  # int(last / 1e9 * 1e9) == last − 1
    assert int(last / 1e9 * 1e9) < last
    recs = [r for r in session(600) if not isinstance(r, Footer) and getattr(r, "t", 0) < last]
    recs.append(Tokens(last, 2, "decode", 34, last - S // 20))
    r = report(from_records(recs))
    assert r["energy"]["j_per_token"] == r["energy"]["joules"] / r["tokens"]["generated"]


def test_the_cyclic_collector_is_back_on_after_a_fold_even_one_that_fails(tmp_path: Path) -> None:
    import gc

    report_file(RECORDINGS[0])
    assert gc.isenabled()
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x93\x01" + b"\xff" * 64)
    with pytest.raises(Exception):  # noqa: B017 - any reader error; the state is the point
        report_file(bad)
    assert gc.isenabled()
