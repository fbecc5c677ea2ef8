"""The results database: merge, dedup, classes, ranking, export and the failures users meet."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_tui.analysis import db
from anubis_tui.analysis.db import DbError, Store
from anubis_tui.analysis.results import dumps_rows, rows_of
from anubis_tui.recording.reader import load

ROOT = Path(__file__).resolve().parents[2]
REC = ROOT / "recordings"
VM = REC / "vm-2core-cpu-gemma270m.msgpack"
VM_PYSPY = REC / "vm-2core-cpu-pyspy250.msgpack"
KNOBS = REC / "h200-cuda-gemma270m-knobs.msgpack"
NOW = "2026-11-29T00:00:00Z"


def anubis(
    *args: str, db_path: Path | None, stdin: str | None = None, proc: bool = False
) -> subprocess.CompletedProcess:
    """`anubis ARGS --db DB`: in this process (fast), or as a real process with `proc`."""
    where = ["--db", str(db_path)] if db_path is not None else []
    if proc:
        env = dict(os.environ, PYTHONPATH=str(ROOT), ANUBIS_CONFIG="/nonexistent/anubis.toml")
        env["XDG_DATA_HOME"] = "/nonexistent/xdg"  # never the user's database
        return subprocess.run(
            [sys.executable, "-m", "anubis_tui", *args, *where],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            input=stdin,
            timeout=240,
        )
    from anubis_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_in = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([*args, *where])
            except SystemExit as e:  # argparse
                rc = int(e.code or 0)
    finally:
        sys.stdin = old_in
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _no_user_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/nonexistent/xdg")
    monkeypatch.setenv("ANUBIS_CONFIG", "/nonexistent/anubis.toml")


def one_line_error(r: subprocess.CompletedProcess, pattern: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def vm_rows() -> list[dict]:
    return rows_of(load(VM), VM) + rows_of(load(VM_PYSPY), VM_PYSPY)


def test_the_committed_recordings_make_classes_ranked_within(tmp_path: Path) -> None:
    dbp = tmp_path / "r.sqlite"
    recs = sorted(str(p) for p in REC.glob("*.msgpack"))
    r = anubis("db", "add", *recs, db_path=dbp)
    assert r.returncode == 0, r.stderr
    assert f"from {len(recs)} recordings" in r.stderr
    with Store(dbp, create=False) as s:
        rows = s.rows()
    classes = db.by_class(rows)
    labels = {db.class_label(rs[0]["class"]) for rs in classes.values()}
    # VM, H100 and H200 never share a class
    for rs in classes.values():
        hw = {json.dumps(r["class"]["hardware"], sort_keys=True) for r in rs}
        assert len(hw) == 1
    assert any(lab.startswith("CPU ×2") for lab in labels)
    assert any("H100" in lab for lab in labels) and any("H200" in lab for lab in labels)
    t = anubis("db", "top", "--json", db_path=dbp)
    assert t.returncode == 0, t.stderr
    top = json.loads(t.stdout)
    assert {c["class_id"] for c in top} == set(classes)
    for c in top:
        ranked = [x for x in c["ranked"] if x["rank"] is not None]
        assert all(not x["row"]["flags"] for x in ranked)
        # flagged rows come after every ranked one
        ranks = [x["rank"] for x in c["ranked"]]
        assert ranks == sorted(ranks, key=lambda v: (v is None, v or 0))
        vals = [db.value(x["row"], "energy_per_output_token_j") for x in ranked]
        assert vals == sorted(vals)
    assert any(x["rank"] == 1 for c in top for x in c["ranked"])
    text = anubis("db", "top", db_path=dbp).stdout
    assert "within each class" in text and "ACROSS" not in text


def test_same_recording_twice_is_one_row_set_and_copies_merge(
    tmp_path: Path, vm_rows: list[dict]
) -> None:
    dbp = tmp_path / "r.sqlite"
    assert anubis("db", "add", str(VM), db_path=dbp).returncode == 0
    again = anubis("db", "add", str(VM), db_path=dbp)
    assert again.returncode == 0 and "already there" in again.stderr
    # the same recording's rows from another machine (ssh host anubis report REC --rows -)
    piped = anubis("report", str(VM), "--rows", "-", db_path=None, proc=True)
    assert piped.returncode == 0, piped.stderr
    assert anubis("db", "add", "-", db_path=dbp, stdin=piped.stdout).returncode == 0
    # a copy of the recording elsewhere: the same sha256, still one row set
    copy = tmp_path / "copy.msgpack"
    shutil.copy(VM, copy)
    assert anubis("db", "add", str(copy), db_path=dbp).returncode == 0
    with Store(dbp) as s:
        rows = s.rows()
        n_rec = s.conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
    assert n_rec == 1 and len(rows) == 1
    # rows of another machine merge as they come, in their own class
    other = json.loads(json.dumps(vm_rows[0]))
    other["provenance"]["recording_sha256"] = "f" * 64
    other["row_id"] = "0123456789abcdef"
    other["class"]["hardware"]["cpus"] = 64
    other["class_id"] = "feedfacefeedface"
    f = tmp_path / "other.jsonl"
    f.write_text(dumps_rows([other]))
    assert anubis("db", "add", str(f), db_path=dbp).returncode == 0
    with Store(dbp) as s:
        assert {r["class_id"] for r in s.rows()} == {rows[0]["class_id"], "feedfacefeedface"}


def test_flagged_rows_are_kept_but_never_ranked_first(vm_rows: list[dict]) -> None:
    rows = json.loads(json.dumps(vm_rows))
    for r in rows:
        r["flags"] = []
        r["class_id"] = "c"
    best = min(rows, key=lambda r: db.value(r, "energy_per_output_token_j"))
    best["flags"] = ["throttled: thermal"]
    ranked = db.rank(rows, "energy_per_output_token_j")
    assert ranked[0]["row"] is not best and ranked[0]["rank"] == 1
    assert ranked[-1]["row"] is best and ranked[-1]["rank"] is None
    # decode tok/s: higher is better
    by_tps = db.rank(rows, "decode_tokens_per_s")
    tps = [db.value(x["row"], "decode_tokens_per_s") for x in by_tps if x["rank"]]
    assert tps == sorted(tps, reverse=True)


def test_across_classes_only_when_asked_and_said(tmp_path: Path) -> None:
    dbp = tmp_path / "r.sqlite"
    assert anubis("db", "add", str(VM), str(KNOBS), db_path=dbp).returncode == 0
    with Store(dbp) as s:
        rows = s.rows()
    vm = next(r for r in rows if r["class"]["runtime"]["backends"][0] == "CPU")
    gpu = next(r for r in rows if r["class"]["hardware"]["gpus"])
    refused = anubis("db", "compare", vm["row_id"], gpu["row_id"], db_path=dbp)
    one_line_error(refused, r"different classes are not comparable \(hardware\.")
    asked = anubis("db", "compare", vm["row_id"], gpu["row_id"], "--across-classes", db_path=dbp)
    assert asked.returncode == 0 and "ACROSS CLASSES" in asked.stdout
    same = [r for r in rows if r["class_id"] == gpu["class_id"]]
    ok = anubis("db", "compare", same[0]["row_id"][:8], same[1]["row_id"][:8], db_path=dbp)
    assert ok.returncode == 0 and "ACROSS" not in ok.stdout
    top = anubis("db", "top", "--across-classes", "--by", "tps", db_path=dbp)
    assert top.returncode == 0 and "ACROSS CLASSES (asked for)" in top.stdout


def test_bad_input_is_one_line(tmp_path: Path, vm_rows: list[dict]) -> None:
    dbp = tmp_path / "r.sqlite"
    one_line_error(
        anubis("db", "add", str(tmp_path / "none.msgpack"), db_path=dbp, proc=True), "no such file"
    )
    future = dict(vm_rows[0], schema="anubis-result/2")
    f = tmp_path / "future.jsonl"
    f.write_text(json.dumps(future) + "\n")
    one_line_error(anubis("db", "add", str(f), db_path=dbp), r"unknown schema version")
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00not a recording")
    one_line_error(anubis("db", "add", str(junk), db_path=dbp), "junk.msgpack")
    one_line_error(anubis("db", "list", db_path=tmp_path / "missing.sqlite"), "no results database")
    one_line_error(anubis("db", "top", "--by", "nope", db_path=_filled(tmp_path)), "unknown figure")
    # nothing was added by the failed adds
    assert not dbp.exists() or Store(dbp).rows() == []


def _filled(tmp_path: Path) -> Path:
    p = tmp_path / "filled.sqlite"
    if not p.exists():
        assert anubis("db", "add", str(VM), db_path=p).returncode == 0
    return p


def test_corrupt_database(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(8192))
    one_line_error(anubis("db", "list", db_path=garbage), "not a readable results database")
    # a real SQLite file of something else
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    one_line_error(anubis("db", "add", str(VM), db_path=other), "not an anubis results database")
    # a results database with its pages overwritten in the middle
    good = _filled(tmp_path)
    with sqlite3.connect(good) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(good.read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)
    good.write_bytes(bytes(data))
    r = anubis("db", "list", db_path=good)
    one_line_error(r, r"filled\.sqlite: ")


def test_two_writers(tmp_path: Path, vm_rows: list[dict]) -> None:
    dbp = _filled(tmp_path)
    holder = sqlite3.connect(dbp, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    try:
        with Store(dbp, timeout_s=0.2) as s, pytest.raises(DbError, match="another anubis is"):
            s.add(vm_rows, NOW)
        # readers are not blocked by the writer (WAL)
        with Store(dbp, timeout_s=0.2) as s:
            assert len(s.rows()) == 1
        r = anubis("db", "add", str(VM_PYSPY), db_path=dbp, proc=True)
        one_line_error(r, "another anubis is writing to this database")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert anubis("db", "add", str(VM_PYSPY), db_path=dbp).returncode == 0


KILLED_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from anubis_tui.analysis.db import Store
    rows = [json.loads(l) for l in Path(sys.argv[2]).read_text().splitlines()]
    marker = Path(sys.argv[3])
    def slow():
        for i, r in enumerate(rows * 50):
            r = dict(r, row_id=f"{i:016x}")
            yield r
            if i == 20:
                marker.write_text("mid-transaction")
            if i >= 20:
                time.sleep(0.05)
    with Store(sys.argv[1]) as s:
        s.add(slow(), "2026-11-29T00:00:00Z")
    """
)


def test_a_killed_writer_leaves_the_last_commit(tmp_path: Path, vm_rows: list[dict]) -> None:
    dbp = _filled(tmp_path)
    with Store(dbp) as s:
        before = s.rows()
        assert str(s.conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    rows = tmp_path / "rows.jsonl"
    other = [dict(r, provenance=dict(r["provenance"], recording_sha256="e" * 64)) for r in vm_rows]
    rows.write_text(dumps_rows(other))
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(dbp), str(rows), str(marker)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(10)
    assert p.returncode == -signal.SIGKILL
    with Store(dbp) as s:
        assert s.check() == "ok"
        assert s.rows() == before  # none of the killed transaction's rows
    assert anubis("db", "add", str(rows), db_path=dbp).returncode == 0  # and it still writes


def test_csv_export(tmp_path: Path) -> None:
    dbp = _filled(tmp_path)
    r = anubis("db", "export", "--csv", "-", db_path=dbp)
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    with Store(dbp) as s:
        rows = s.rows()
    assert len(table) == len(rows)
    got = table[0]
    assert got["schema"] == "anubis-result/1"
    assert float(got["energy_per_output_token_j"]) == pytest.approx(
        db.value(rows[0], "energy_per_output_token_j")
    )
    assert float(got["energy_per_output_token_j_ci95_low"]) < float(
        got["energy_per_output_token_j"]
    )
    out = tmp_path / "r.csv"
    assert anubis("db", "export", "--csv", str(out), db_path=dbp).returncode == 0
    one_line_error(anubis("db", "export", "--csv", str(out), db_path=dbp), "exists")


def test_html_export_renders_its_figures_in_chromium(tmp_path: Path) -> None:
    dbp = tmp_path / "r.sqlite"
    assert anubis("db", "add", str(VM), str(VM_PYSPY), str(KNOBS), db_path=dbp).returncode == 0
    out = tmp_path / "results.html"
    assert anubis("db", "export", "--html", str(out), db_path=dbp).returncode == 0
    page = out.read_text()
    # self-contained: nothing fetched (the SVG namespace is a name, not a request)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|\bhref=|url\(", page)
    with Store(dbp) as s:
        rows = s.rows()
    n_classes = len(db.by_class(rows))
    n_points = sum(
        1
        for r in rows
        if db.value(r, "decode_tokens_per_s") is not None
        and db.value(r, "energy_per_output_token_j") is not None
    )
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (CI installs the Debian package chromium)")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # the page's own script measured, in the browser's layout, every figure and point drawn
    assert f'<span id="rendered">{n_classes} figures, {n_points} points</span>' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,1400", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["db", "--db", "X", "list"], "X"),
        (["db", "list", "--db", "Y"], "Y"),
        (["db", "--db", "Z"], "Z"),
        (["db", "top"], None),
    ],
)
def test_db_option_before_or_after_the_command(argv: list[str], where: str | None) -> None:
    from anubis_tui.cli import build_parser

    assert build_parser().parse_args(argv).db == where


def test_one_recording_twice_in_one_add_and_bad_rows_through_the_api(
    tmp_path: Path, vm_rows: list[dict]
) -> None:
    dbp = tmp_path / "r.sqlite"
    copy = tmp_path / "copy.msgpack"
    shutil.copy(VM, copy)
    assert anubis("db", "add", str(VM), str(copy), db_path=dbp).returncode == 0
    with Store(dbp) as s:
        assert s.conn.execute("SELECT n_rows FROM recordings").fetchall() == [(1,)]
        with pytest.raises(DbError, match="unknown schema version"):
            s.add([vm_rows[0], dict(vm_rows[1], schema="anubis-result/9")], NOW)
        assert len(s.rows()) == 1  # the good row before the bad one was rolled back too


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)


def _paths(o: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(o, dict):
        for k, v in o.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_from_elsewhere_never_crash_the_readers(vm_rows: list[dict], data) -> None:
    """A row file from another machine, with any value replaced by any JSON: either refused in
    one line, or listed, ranked, compared and exported without an exception."""
    from anubis_tui.analysis.results import ResultError, check_row
    from anubis_tui.cli.db import render_compare, render_list, render_top

    rows = json.loads(json.dumps(vm_rows))
    for _ in range(data.draw(st.integers(1, 4))):
        row = data.draw(st.sampled_from(rows))
        path = data.draw(st.sampled_from(_paths(row)[1:]))
        node = row
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = data.draw(JSON)
    try:
        for r in rows:
            check_row(r)
    except ResultError as e:
        assert "\n" not in str(e)
        return
    render_list(rows)
    for key in db.RANKABLE:
        render_top(db.top(rows, key), key, 5)
        render_top(db.top(rows, key, across=True), key, 5)
    render_compare(db.compare_rows(rows[0], rows[-1], across=True))
    db.to_csv(rows)
    db.to_html(rows)


def test_a_damaged_stored_row_is_one_line(tmp_path: Path) -> None:
    dbp = _filled(tmp_path)
    with sqlite3.connect(dbp) as c:
        c.execute('UPDATE rows SET row = \'{"schema": "anubis-result/1"\'')
    one_line_error(anubis("db", "list", db_path=dbp), "a stored row is not JSON")
    with sqlite3.connect(dbp) as c:
        c.execute('UPDATE rows SET row = \'{"schema": "anubis-result/7"}\'')
    one_line_error(anubis("db", "top", db_path=dbp), "unknown schema version")


def test_perplexity_is_stored_listed_ranked_and_compared(tmp_path: Path) -> None:
    """Rows with a quality block (sweep --quality): `db list` shows PPL ± se and the variant
    label, `db top --by ppl` ranks on it within a class, `db compare` and the CSV carry it; a
    row without one shows — and is never ranked on it."""
    rows = {r["setting"]["name"]: r for r in rows_of(load(KNOBS), KNOBS)}
    label = "requantized from Q4_K_M"
    for name, ppl, variant in (
        ("baseline", 54.36, ""), ("ngl=9", 54.11, label), ("limit=200W", 95.48, label)
    ):  # fmt: skip
        r = rows[name]
        r["quality"] = {"ppl": ppl, "ppl_se": 4.0, "ci95": [ppl - 8, ppl + 8], "variant": variant}
        r["figures"]["perplexity"] = {
            "value": ppl, "unit": "PPL", "n": 2040, "sd": None, "ci95": [ppl - 8, ppl + 8],
            "se": 4.0,
        }  # fmt: skip
    for r in rows.values():
        r["flags"] = []  # rankable
    dbp = tmp_path / "r.sqlite"
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(dumps_rows(rows.values()))
    assert anubis("db", "add", str(rows_file), db_path=dbp).returncode == 0
    listed = anubis("db", "list", db_path=dbp).stdout
    assert "54.36 ± 4.00" in listed and "95.48 ± 4.00" in listed
    line = next(ln for ln in listed.splitlines() if "54.11 ± 4.00" in ln)
    assert f"({label})" in line
    line = next(ln for ln in listed.splitlines() if rows["ngl=9 limit=200W"]["row_id"] in ln)
    assert "  —  " in line and "requantized" not in line
    top = anubis("db", "top", "--by", "ppl", "--json", db_path=dbp)
    assert top.returncode == 0, top.stderr
    by_class = {c["class_id"]: c["ranked"] for c in json.loads(top.stdout)}
    full = by_class[rows["baseline"]["class_id"]]
    assert [db.value(x["row"], "perplexity") for x in full] == [54.11, 54.36]
    assert full[1]["tie"] is True  # the intervals overlap: the data cannot tell them apart
    capped = by_class[rows["limit=200W"]["class_id"]]
    assert [(x["rank"], db.value(x["row"], "perplexity")) for x in capped] == [
        (1, 95.48), (None, None)
    ]  # fmt: skip
    cmp = anubis(
        "db", "compare", rows["baseline"]["row_id"], rows["limit=200W"]["row_id"], "--json",
        "--across-classes", db_path=dbp,
    )  # fmt: skip
    fig = next(f for f in json.loads(cmp.stdout)["figures"] if f["figure"] == "perplexity")
    assert fig["verdict"] == "B worse"
    assert db.quality_text(rows["ngl=9"]) == f"54.11 ± 4.00 ({label})"
    csv_text = anubis("db", "export", "--csv", "-", db_path=dbp).stdout
    table = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted(float(t["perplexity"]) for t in table if t["perplexity"]) == [54.11, 54.36, 95.48]
