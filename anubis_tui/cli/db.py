"""`anubis db`: the results database (SQLite) of result rows from many recordings and machines.

``anubis db`` opens the browser screen; ``add`` loads recordings or row files
(``anubis report REC --rows OUT.jsonl``, or ``ssh host anubis report REC --rows -``),
``list``, ``top`` and ``compare`` read it within comparability classes, and
``export`` writes CSV or a self-contained HTML page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from anubis_tui.cli.common import CliError, jsonable, load_recording
from anubis_tui.config import Config
from anubis_tui.errors import AnubisError

ROW_SUFFIXES = (".jsonl", ".json", ".ndjson")


def add_parser(sub: Any) -> None:
    """Register the ``db`` subcommand and its flags on `sub` (argparse's subparsers)."""
    p = sub.add_parser("db", help="the results database: add, list, top, compare, export")
    _db_arg(p, None)
    p.set_defaults(handler=cmd_db, db_command=None)
    dsub = p.add_subparsers(dest="db_command", parser_class=type(p))
    a = dsub.add_parser("add", help="add recordings (.msgpack) or result rows (.jsonl, -)")
    a.add_argument("paths", nargs="+", metavar="REC|ROWS")
    ls = dsub.add_parser("list", help="every row, by comparability class")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--class", dest="class_id", metavar="ID", help="only this class")
    t = dsub.add_parser("top", help="the best settings within each class")
    t.add_argument("--by", default="energy_per_output_token_j", metavar="FIGURE",
                   help="the figure to rank on (default energy_per_output_token_j; "
                   "also decode_tokens_per_s, power_w, ttft_s …)")  # fmt: skip
    t.add_argument("-n", type=int, default=5, help="rows shown per class (default 5)")
    t.add_argument("--across-classes", action="store_true",
                   help="rank every row together (not a fair comparison: said so)")  # fmt: skip
    t.add_argument("--json", action="store_true")
    c = dsub.add_parser("compare", help="two rows side by side")
    c.add_argument("a", metavar="ROW_A")
    c.add_argument("b", metavar="ROW_B")
    c.add_argument(
        "--across-classes",
        action="store_true",
        help="compare rows of different classes (their differences are listed)",
    )
    c.add_argument("--json", action="store_true")
    e = dsub.add_parser("export", help="CSV, or an HTML page with figures")
    fmt = e.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", metavar="OUT", help="a CSV file (- for stdout)")
    fmt.add_argument("--html", metavar="OUT", help="a self-contained HTML page (- for stdout)")
    e.add_argument("--force", action="store_true", help="overwrite OUT")
    for cmd in (a, ls, t, c, e):
        _db_arg(cmd, argparse.SUPPRESS)


def _db_arg(p: argparse.ArgumentParser, default: Any) -> None:
    """--db on `anubis db` and on each of its commands; a command's own is SUPPRESSed, so
    `anubis db --db X list` keeps X. (One Action per parser: argparse parents share theirs,
    and a default set on one would be every one's.)"""
    p.add_argument(
        "--db",
        metavar="PATH",
        default=default,
        help="the database (default $XDG_DATA_HOME/anubis/results.sqlite)",
    )


def _store(args: argparse.Namespace, create: bool) -> Any:
    from anubis_tui.analysis.db import Store, default_path

    return Store(args.db or default_path(), create=create)


def rows_from(path: str) -> list[dict[str, Any]]:
    """The rows a path gives: a row file (JSON Lines, or - for stdin) or a recording."""
    from anubis_tui.analysis.results import read_rows, rows_of

    try:
        if path == "-":
            return read_rows(sys.stdin.read(), "stdin")
        p = Path(path)
        if not p.exists():
            raise CliError(f"{path}: no such file")
        if not p.is_file():
            raise CliError(f"{path}: not a regular file")
        if p.suffix.lower() in ROW_SUFFIXES:
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise CliError(f"{path}: not UTF-8 text (a row file is JSON Lines)") from None
            return read_rows(text, path)
        try:
            rec = load_recording(path)
        except AnubisError as e:  # several files at once: say which one
            raise CliError(f"{path}: {e}") from None
        return rows_of(rec, path)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None


def cmd_db(args: argparse.Namespace, config: Config) -> int:
    """Run an ``anubis db`` action (add, list, top, compare, export) or open the browser;
    returns 0.
    """
    return _run(args, config)


def _run(args: argparse.Namespace, config: Config) -> int:
    from anubis_tui.analysis import db

    cmd = args.db_command
    if cmd is None:
        return _browse(args, config)
    if cmd == "add":
        rows = [r for path in args.paths for r in rows_from(path)]
        with _store(args, create=True) as store:
            res = store.add(rows, dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            classes = len({r["class_id"] for r in store.rows()})
        print(
            f"anubis: {res.rows} rows from {res.recordings} recordings added to {store.path}"
            + (f" ({res.replaced} already there: their rows replaced)" if res.replaced else "")
            + f"; {classes} classes",
            file=sys.stderr,
        )
        return 0
    with _store(args, create=False) as store:
        if cmd == "list":
            rows = store.rows(args.class_id)
            if args.json:
                print(json.dumps(jsonable(rows), indent=1, allow_nan=False))
            else:
                print(render_list(rows))
            return 0
        if cmd == "top":
            key = db.figure_key(args.by)
            if args.n <= 0:
                raise CliError("-n must be a positive number of rows")
            t = db.top(store.rows(), key, across=args.across_classes)
            if args.json:
                print(json.dumps(jsonable(t), indent=1, allow_nan=False))
            else:
                print(render_top(t, key, args.n))
            return 0
        if cmd == "compare":
            r = db.compare_rows(store.row(args.a), store.row(args.b), args.across_classes)
            if args.json:
                print(json.dumps(jsonable(r), indent=1, allow_nan=False))
            else:
                print(render_compare(r))
            return 0
        if cmd == "export":
            rows = store.rows()
            text = db.to_csv(rows) if args.csv else db.to_html(rows)
            out = args.csv or args.html
            if out == "-":
                sys.stdout.write(text)
            else:
                from anubis_tui.cli.export import write_new

                write_new(out, text.encode(), args.force)
                print(f"anubis: {len(rows)} rows written to {out}", file=sys.stderr)
            return 0
    raise CliError(f"unknown db command {cmd}")


def _browse(args: argparse.Namespace, config: Config) -> int:
    """The browser screen; `enter` on a row leaves it to replay the row's recording, and the
    browser comes back when the replay is closed."""
    from anubis_tui.analysis.replay import Replay
    from anubis_tui.recording.reader import ReaderError
    from anubis_tui.ui.app import make_app
    from anubis_tui.ui.db import make_db_app

    with _store(args, create=False) as store:
        rows = store.rows()
    if not rows:
        raise CliError("the results database is empty: anubis db add REC|ROWS first")
    selected: str | None = None
    while True:
        app = make_db_app(rows, selected=selected)
        app.run()
        path = app.return_value
        if not path:
            return 0
        selected = app.selected_row_id
        try:
            replay = Replay.from_file(path)
        except ReaderError as e:
            print(f"anubis: {e}", file=sys.stderr)
            continue
        except OSError as e:
            print(f"anubis: {path}: {e.strerror}", file=sys.stderr)
            continue
        make_app(config, replay=replay).run()


def _v(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _ci(c: Any) -> str:
    return "" if not c else f" [{c[0]:.4g}, {c[1]:.4g}]"


def render_list(rows: list[dict[str, Any]]) -> str:
    """Every row as text, grouped by comparability class, with the fields a class lacks."""
    from anubis_tui.analysis import db

    lines = []
    for cid, rs in db.by_class(rows).items():
        lines.append(f"class {cid}  {db.class_label(rs[0].get('class') or {})}  ({len(rs)} rows)")
        unknown = rs[0].get("class_unknown") or []
        if unknown:
            lines.append(f"  not recorded: {', '.join(unknown)}")
        lines.append(
            f"  {'row':<16} {'setting':<30} {'tok/s':>8} {'J/token':>9} {'W':>7} {'max°C':>6}"
            f"  {'PPL':>13}  recording / flags"
        )
        texts = db.setting_texts(rs)
        for r in rs:
            lines.append(
                f"  {r['row_id']:<16} {texts[r['row_id']][:30]:<30} "
                f"{_v(db.value(r, 'decode_tokens_per_s')):>8} "
                f"{_v(db.value(r, 'energy_per_output_token_j')):>9} "
                f"{_v(db.value(r, 'power_w')):>7} {_v(r.get('temperature_max_c'), 3):>6}  "
                f"{db.quality_text(r, with_variant=False):>13}  "
                f"{Path(str(r['provenance'].get('recording_path'))).name}"
                + _variant(r)
                + (f"  [{'; '.join(r['flags'])}]" if r.get("flags") else "")
            )
        lines.append("")
    return "\n".join(lines).rstrip() or "no rows"


def _variant(r: dict[str, Any]) -> str:
    v = (r.get("quality") or {}).get("variant") if isinstance(r.get("quality"), dict) else None
    return f"  ({v})" if isinstance(v, str) and v else ""


def render_top(t: list[dict[str, Any]], key: str, n: int) -> str:
    """The best `n` rows per class on figure `key` (`db.RANKABLE`), ties marked ``=``,
    flagged rows after.
    """
    from anubis_tui.analysis import db

    label, higher = db.RANKABLE[key]
    lines = [
        f"ranked on {label} ({'higher' if higher else 'lower'} is better) within each class; "
        "=1: its 95 % interval overlaps the leader's (a tie); —: flagged, not ranked"
    ]
    for c in t:
        lines.append("")
        lines.append(f"{c['label']}" + (f"  (class {c['class_id']})" if c["class_id"] else ""))
        if c.get("unknown"):
            lines.append(f"  not recorded: {', '.join(c['unknown'])}")
        ranked = c["ranked"]
        if not any(x["rank"] for x in ranked):
            lines.append("  no row is steady, unthrottled and with enough data: nothing ranked")
        for x in ranked[:n]:
            r = x["row"]
            rk = "—" if x["rank"] is None else ("=1" if x["tie"] else str(x["rank"]))
            lines.append(
                f"  {rk:>3} {x['setting'][:30]:<30} "
                f"{_v(db.value(r, key)):>9}{_ci(db.ci(r, key)):<22} {r['row_id']}"
                + (f"  ({x['class']})" if x.get("class") else "")
                + (f"  [{'; '.join(r['flags'])}]" if r.get("flags") else "")
            )
        if len(ranked) > n:
            lines.append(f"  … {len(ranked) - n} more (-n)")
    return "\n".join(lines)


def render_compare(r: dict[str, Any]) -> str:
    """Two rows' figures side by side with their differences and intervals, as text."""
    lines = [f"A {r['a']}  B {r['b']}"]
    if not r["same_class"]:
        lines.append(
            "ACROSS CLASSES (asked for): not a fair comparison; they differ in "
            + "; ".join(r["class_differences"])
        )
    for side in ("a", "b"):
        if r["flags"][side]:
            lines.append(f"{side.upper()} flagged: {'; '.join(r['flags'][side])}")
    lines.append(f"{'figure':<16} {'A':>28} {'B':>28} {'change':>8}  verdict")
    for f in r["figures"]:
        ch = f["change_pct"]
        lines.append(
            f"{f['label']:<16} {_v(f['a']) + _ci(f['a_ci95']):>28} "
            f"{_v(f['b']) + _ci(f['b_ci95']):>28} {'—' if ch is None else f'{ch:+.1f}%':>8}  "
            f"{f['verdict']}"
        )
    return "\n".join(lines)


def write_rows(rec: Any, path: str, summary: dict[str, Any], out: str, force: bool) -> int:
    """The result rows of recording `rec` (read from `path`) to `out` (JSON Lines; ``-``:
    stdout); returns how many. `summary` is its `report`, reused."""
    from anubis_tui.analysis.results import dumps_rows, rows_of

    rows = rows_of(rec, path, summary=summary)
    text = dumps_rows(rows)
    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from anubis_tui.cli.export import write_new

        write_new(out, text.encode(), force)
        print(f"anubis: {len(rows)} result rows written to {out}", file=sys.stderr)
    return len(rows)
