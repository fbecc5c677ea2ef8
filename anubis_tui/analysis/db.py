"""The results database: result rows (`anubis_tui.analysis.results`) in one SQLite file.

Stdlib `sqlite3` in WAL mode (https://sqlite.org/wal.html): readers never block
the writer, and a writer killed mid-transaction leaves the last committed state
(the WAL's uncommitted frames are ignored on the next open). Every change is
one ``BEGIN IMMEDIATE`` transaction; a second writer waits `BUSY_TIMEOUT_S`
for the lock, then gets `DbError` ("another anubis is writing …").

Tables: ``meta`` (store version), ``recordings`` (one per recording sha256),
``rows`` (one per row, with its class and its JSON), ``classes`` (each class's
fields). Adding a recording that is already there replaces its row set: the
same recording added twice is one row set, whichever copy or machine it came
from. Rows carry their class, so rows from many machines merge as they are.

Ranking (`top`) is within a class: rows with no steady state, throttling or too
little data are kept and listed, flagged and unranked, after the ranked ones;
a row whose interval overlaps the leader's is a tie with it (``=1``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anubis_tui.analysis.identity import UNKNOWN
from anubis_tui.analysis.results import SCHEMA, ResultError, canonical, check_row
from anubis_tui.errors import AnubisError
from anubis_tui.profilerspec import segment_label

STORE_VERSION = 1
BUSY_TIMEOUT_S = 5.0
# Figures a ranking may use: key in the row's figures, label, whether higher is better.
RANKABLE = {
    "energy_per_output_token_j": ("J/token", False),
    "decode_tokens_per_s": ("decode tok/s", True),
    "active_energy_per_output_token_j": ("active J/token", False),
    "energy_per_request_j": ("J/request", False),
    "power_w": ("W", False),
    "prompt_tokens_per_s": ("prompt tok/s", True),
    "ttft_s": ("TTFT s", False),
    # on the shipped text, where the recording has it (sweep --quality; issue 26)
    "perplexity": ("PPL", False),
}
ALIASES = {
    "j_per_token": "energy_per_output_token_j",
    "jpt": "energy_per_output_token_j",
    "tps": "decode_tokens_per_s",
    "tok_s": "decode_tokens_per_s",
    "decode_tps": "decode_tokens_per_s",
    "watts": "power_w",
    "ttft": "ttft_s",
    "ppl": "perplexity",
}

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recordings(
    sha256 TEXT PRIMARY KEY, path TEXT, host TEXT, added_utc TEXT NOT NULL, n_rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS classes(class_id TEXT PRIMARY KEY, fields TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows(
    row_id TEXT PRIMARY KEY,
    recording_sha256 TEXT NOT NULL REFERENCES recordings(sha256) ON DELETE CASCADE,
    class_id TEXT NOT NULL REFERENCES classes(class_id),
    setting TEXT NOT NULL,
    schema TEXT NOT NULL,
    row TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_class ON rows(class_id);
CREATE INDEX IF NOT EXISTS rows_by_recording ON rows(recording_sha256);
"""


class DbError(AnubisError):
    """The database cannot be opened, read or written; one line for the user."""


def default_path() -> Path:
    """``$XDG_DATA_HOME/anubis/results.sqlite`` (default ``~/.local/share/anubis/…``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "anubis" / "results.sqlite"


def figure_key(name: str) -> str:
    """A figure's key from its name or alias; `DbError` naming the choices if unknown."""
    key = ALIASES.get(name, name)
    if key not in RANKABLE:
        raise DbError(f"unknown figure {name!r}: one of {', '.join(RANKABLE)}")
    return key


@dataclass
class AddResult:
    """What `Store.add` did: recordings added, rows written, and recordings whose row set
    was replaced.
    """

    recordings: int = 0
    rows: int = 0
    replaced: int = 0  # recordings that were there already (their row sets replaced)


class Store:
    """One results database. Use as a context manager; not shared between threads."""

    def __init__(self, path: str | Path, create: bool = True, timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise DbError(f"{self.path}: no results database (anubis db add makes one)")
        if self.path.exists() and not self.path.is_file():
            raise DbError(f"{self.path}: not a regular file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
            self.conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise DbError(f"{self.path}: cannot open: {_why(e)}") from None
        try:
            self.conn.execute("PRAGMA foreign_keys=ON")
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise DbError(f"{self.path}: cannot switch to WAL mode (a read-only folder?)")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            self._schema()
        except sqlite3.Error as e:
            self.conn.close()
            raise DbError(f"{self.path}: {_why(e)}") from None
        except DbError:
            self.conn.close()
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SQLite connection (uncommitted work is rolled back by SQLite)."""
        self.conn.close()

    def _schema(self) -> None:
        have = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "meta" in have:
            row = self.conn.execute("SELECT value FROM meta WHERE key='store_version'").fetchone()
            if row is None or row[0] != str(STORE_VERSION):
                raise DbError(
                    f"{self.path}: results database version {row[0] if row else 'missing'}, "
                    f"this anubis reads version {STORE_VERSION}"
                )
            return
        if have:
            raise DbError(f"{self.path}: an SQLite file, but not an anubis results database")

        def create(c: sqlite3.Connection) -> None:
            for stmt in _DDL.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES('store_version', ?)",
                (str(STORE_VERSION),),
            )

        self._write(create)

    def _write(self, fn: Any) -> Any:
        """Run `fn(conn)` in one immediate transaction: all of it, or none of it."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise DbError(
                    f"{self.path}: another anubis is writing to this database "
                    f"(waited {self.conn_timeout():g} s); try again when it is done"
                ) from None
            raise DbError(f"{self.path}: {_why(e)}") from None
        except sqlite3.DatabaseError as e:
            raise DbError(f"{self.path}: {_why(e)}") from None
        try:
            out = fn(self.conn)
            self.conn.execute("COMMIT")
            return out
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def conn_timeout(self) -> float:
        """The connection's busy timeout in seconds (``PRAGMA busy_timeout``, which SQLite
        gives in ms).
        """
        return float(self.conn.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000

    # -- writing -------------------------------------------------------------------------

    def add(self, rows: Iterable[dict[str, Any]], added_utc: str) -> AddResult:
        """Add rows (checked) in one transaction, grouped by recording: each recording's row
        set replaces the one it had. `DbError` if another writer holds the lock, or a row is
        bad (nothing is added then)."""

        def work(c: sqlite3.Connection) -> AddResult:
            res = AddResult()
            seen: set[str] = set()
            for i, row in enumerate(rows, 1):
                check_row(row, f"row {i}")
                prov = row["provenance"]
                sha = prov["recording_sha256"]
                if sha not in seen:
                    seen.add(sha)
                    had = c.execute("DELETE FROM recordings WHERE sha256=?", (sha,)).rowcount
                    res.replaced += had
                    res.recordings += 1
                    host = prov.get("host")
                    c.execute(
                        "INSERT INTO recordings(sha256, path, host, added_utc, n_rows) "
                        "VALUES(?, ?, ?, ?, 0)",
                        (sha, prov.get("recording_path"), host, added_utc),
                    )
                c.execute(
                    "INSERT OR IGNORE INTO classes(class_id, fields) VALUES(?, ?)",
                    (row["class_id"], canonical(row.get("class") or {})),
                )
                c.execute(
                    "INSERT OR REPLACE INTO rows(row_id, recording_sha256, class_id, setting, "
                    "schema, row) VALUES(?, ?, ?, ?, ?, ?)",
                    (
                        row["row_id"],
                        sha,
                        row["class_id"],
                        str((row.get("setting") or {}).get("name")),
                        row["schema"],
                        json.dumps(row, allow_nan=False, default=str),
                    ),
                )
                res.rows += 1
            for sha in seen:  # counted, not incremented: one recording may come twice
                c.execute(
                    "UPDATE recordings SET n_rows = "
                    "(SELECT COUNT(*) FROM rows WHERE recording_sha256=?) WHERE sha256=?",
                    (sha, sha),
                )
            return res

        try:
            out: AddResult = self._write(work)
            return out
        except ResultError as e:
            raise DbError(str(e)) from None
        except (sqlite3.DatabaseError, TypeError, ValueError) as e:
            raise DbError(f"{self.path}: {_why(e)}") from None

    # -- reading ---------------------------------------------------------------------------

    def rows(self, class_id: str | None = None) -> list[dict[str, Any]]:
        """Every row (or one class's), as dicts, by class then setting."""
        q = "SELECT row FROM rows"
        args: tuple[Any, ...] = ()
        if class_id is not None:
            q += " WHERE class_id=?"
            args = (class_id,)
        q += " ORDER BY class_id, setting, row_id"
        try:
            raw = [r[0] for r in self.conn.execute(q, args)]
        except sqlite3.DatabaseError as e:
            raise DbError(f"{self.path}: {_why(e)}") from None
        return [self._stored(text) for text in raw]

    def _stored(self, text: Any) -> dict[str, Any]:
        """A stored row, checked like any other: a damaged one is a `DbError`."""
        try:
            return check_row(json.loads(text), "a stored row")
        except (ValueError, TypeError, RecursionError):
            raise DbError(f"{self.path}: a stored row is not JSON (a damaged file?)") from None
        except ResultError as e:
            raise DbError(f"{self.path}: {e}") from None

    def row(self, prefix: str) -> dict[str, Any]:
        """The row whose id starts with `prefix` (at least 4 hex digits); `DbError` if none or
        several."""
        if len(prefix) < 4:
            raise DbError(f"row id {prefix!r}: give at least 4 characters")
        try:
            found = self.conn.execute(
                "SELECT row FROM rows WHERE row_id LIKE ? || '%' ESCAPE '\\'",
                (prefix.replace("%", "\\%").replace("_", "\\_"),),
            ).fetchall()
        except sqlite3.DatabaseError as e:
            raise DbError(f"{self.path}: {_why(e)}") from None
        if not found:
            raise DbError(f"no row {prefix} in {self.path}")
        if len(found) > 1:
            raise DbError(f"row id {prefix} is ambiguous ({len(found)} rows); give more of it")
        return self._stored(found[0][0])

    def check(self) -> str:
        """SQLite's own integrity check: "ok" or its first complaint."""
        try:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise DbError(f"{self.path}: {_why(e)}") from None


def _why(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if "file is not a database" in msg or "malformed" in msg:
        return f"not a readable results database ({msg})"
    return msg


# -- classes, ranking and comparison --------------------------------------------------------


def class_label(fields: dict[str, Any]) -> str:
    """A short name of a class: GPUs or CPU, power limit, backends, energy method."""
    hw = fields.get("hardware") or {}
    gpus = hw.get("gpus") or []
    gpus = [str(g) for g in gpus] if isinstance(gpus, list) else [str(gpus)]
    cpu = hw.get("cpu_model")
    head = ", ".join(gpus) if gpus else (str(cpu) if cpu and cpu != UNKNOWN else "CPU")
    parts = [head]
    if not gpus and hw.get("cpus") not in (None, UNKNOWN):
        parts[0] += f" ×{hw['cpus']}"
    if hw.get("power_limit_w") not in (None, UNKNOWN):
        parts.append(f"{hw['power_limit_w']:g} W" if _num(hw["power_limit_w"]) else "")
    if hw.get("nvpmodel") not in (None, UNKNOWN):
        parts.append(f"nvpmodel {hw['nvpmodel']}")
    back = (fields.get("runtime") or {}).get("backends")
    if isinstance(back, list) and back:
        parts.append("+".join(map(str, back)))
    method = (fields.get("measurement") or {}).get("method")
    if method not in (None, UNKNOWN):
        parts.append(str(method))
    return " · ".join(p for p in parts if p)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def value(row: dict[str, Any], key: str) -> float | None:
    """Figure `key` of a row (units in its name: _j, _s, _w, tokens_per_s; see `RANKABLE`),
    or None when missing, non-numeric or not finite.
    """
    f = (row.get("figures") or {}).get(key) or {}
    v = f.get("value")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def ci(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    """Figure `key`'s 95 % interval (low, high) in the figure's units, or None when the row
    has none.
    """
    c = ((row.get("figures") or {}).get(key) or {}).get("ci95")
    if isinstance(c, list) and len(c) == 2 and all(_num(x) for x in c):
        return float(c[0]), float(c[1])
    return None


_SHORT = {
    "n_threads": "threads",
    "n_gpu_layers": "ngl",
    "n_batch": "batch",
    "flash_attn": "fa",
    "type_k": "kv",
    "model_filename": "model",
    "power_limit_w": "limit",
    "cpu_max_mhz": "cpumax",
    "nvpmodel": "nvp",
}
_NOT_KNOBS = ("name", "profiler", "profiler_rate_hz")


def setting_texts(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Row id → its setting in words that tell it apart from the other rows given: the profiler
    and rate, and each knob whose value differs between them (a setting's own name only says
    how it differs from the start of its recording)."""
    keys: list[str] = []
    seen: dict[str, set[str]] = {}
    for r in rows:
        for k, v in (r.get("setting") or {}).items():
            if k not in _NOT_KNOBS:
                if k not in seen:
                    keys.append(k)
                    seen[k] = set()
                if v is not None:  # not recorded is no difference (as in identity)
                    seen[k].add(canonical(v))
    varying = [k for k in keys if len(seen[k]) > 1]
    out = {}
    for r in rows:
        s = r.get("setting") or {}
        parts = [f"{_SHORT.get(k, k)}={_knob(k, s.get(k))}" for k in varying]
        prof = s.get("profiler")
        if prof:
            rate = s.get("profiler_rate_hz")
            parts.append(segment_label(str(prof), rate if _num(rate) else None) or str(prof))
        out[r["row_id"]] = " ".join(parts) or str(s.get("name") or "baseline")
    return out


def _knob(k: str, v: Any) -> str:
    if v is None:
        return "—"
    if k == "model_filename":
        base = str(v).replace("\\", "/").rsplit("/", 1)[-1]
        return base[:-5] if base.lower().endswith(".gguf") else base
    if k == "n_gpu_layers":
        return "all" if v == -1 else str(v)
    if k == "flash_attn":
        return "on" if v else "off"
    if _num(v):
        return f"{v:g}"
    return str(v)


def quality_text(row: dict[str, Any], with_variant: bool = True) -> str:
    """'54.36 ± 4.00 (requantized from Q4_K_M)': the row's perplexity on the shipped text with
    llama.cpp's standard error and (`with_variant`) its variant label; '—' without one."""
    ppl = value(row, "perplexity")
    if ppl is None:
        return "—"
    q = row.get("quality")
    q = q if isinstance(q, dict) else {}
    se, variant = q.get("ppl_se"), q.get("variant")
    text = f"{ppl:.2f}" + (f" ± {se:.2f}" if _num(se) else "")
    return text + (f" ({variant})" if with_variant and isinstance(variant, str) and variant else "")


def by_class(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by ``class_id`` (recordings of one comparable setup), in input order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["class_id"], []).append(r)
    return out


def rank(rows: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows of one class ordered on figure `key`, each as ``{"rank", "tie", "row"}``.

    Rows with flags (no steady state, throttling, too little data) or no value are unranked
    (``rank`` None) and come after the ranked ones. ``tie`` is True when the row's interval
    overlaps the leader's: the data cannot tell them apart.
    """
    higher = RANKABLE[key][1]
    clean = [r for r in rows if not r.get("flags") and value(r, key) is not None]
    rest = [r for r in rows if r not in clean]

    def order(r: dict[str, Any]) -> float:
        v = value(r, key)
        if v is None:
            return math.inf
        return -v if higher else v

    clean.sort(key=order)
    rest.sort(key=order)
    out = []
    lead = ci(clean[0], key) if clean else None
    for i, r in enumerate(clean, 1):
        mine = ci(r, key)
        tie = (
            i > 1
            and lead is not None
            and mine is not None
            and mine[0] <= lead[1]
            and lead[0] <= mine[1]
        )
        out.append({"rank": i, "tie": tie, "row": r})
    out += [{"rank": None, "tie": False, "row": r} for r in rest]
    return out


def top(rows: Sequence[dict[str, Any]], key: str, across: bool = False) -> list[dict[str, Any]]:
    """Per class (or, with `across`, all rows as one list, said so): its label, fields and
    ranked rows."""
    groups: list[tuple[str | None, str, list[dict[str, Any]]]]
    if across:
        groups = [
            (
                None,
                "ACROSS CLASSES (asked for): different hardware, runtime, model, workload or "
                "measurement; not a fair comparison",
                list(rows),
            )
        ]
    else:
        groups = [
            (cid, class_label(rs[0].get("class") or {}), rs) for cid, rs in by_class(rows).items()
        ]
    out = []
    for cid, label, rs in groups:
        texts = setting_texts(rs)
        ranked = rank(rs, key)
        for x in ranked:
            x["setting"] = texts[x["row"]["row_id"]]
            if cid is None:
                x["class"] = class_label(x["row"].get("class") or {})
        out.append(
            {
                "class_id": cid,
                "label": label,
                "unknown": rs[0].get("class_unknown") or [] if cid else [],
                "ranked": ranked,
            }
        )
    return out


def class_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``group.field: A vs B`` for each class field the two rows' classes disagree on."""
    fa, fb = a.get("class") or {}, b.get("class") or {}
    out = []
    for g in sorted(set(fa) | set(fb)):
        da, db = fa.get(g) or {}, fb.get(g) or {}
        for k in sorted(set(da) | set(db)):
            if canonical(da.get(k)) != canonical(db.get(k)):
                out.append(f"{g}.{k}: {da.get(k)} vs {db.get(k)}")
    return out


def compare_rows(a: dict[str, Any], b: dict[str, Any], across: bool = False) -> dict[str, Any]:
    """B against A on every rankable figure: the change in %, and whether the intervals
    overlap (then the data cannot tell them apart). `DbError` when they are of different
    classes, unless `across` (the differences are listed then)."""
    diffs = class_differences(a, b)
    if a["class_id"] != b["class_id"] and not across:
        raise DbError(
            "rows of different classes are not comparable ("
            + "; ".join(diffs[:4])
            + ("; …" if len(diffs) > 4 else "")
            + "); --across-classes to compare them anyway"
        )
    figs = []
    for key, (label, higher) in RANKABLE.items():
        va, vb = value(a, key), value(b, key)
        ca, cb = ci(a, key), ci(b, key)
        change = 100 * (vb - va) / va if va and vb is not None else None
        if va is None or vb is None:
            verdict = "no data"
        elif ca is None or cb is None:
            verdict = "inconclusive (no interval on one side)"
        elif ca[0] <= cb[1] and cb[0] <= ca[1]:
            verdict = "no clear difference (intervals overlap)"
        else:
            better = (vb > va) == higher
            verdict = "B better" if better else "B worse"
        figs.append(
            {"figure": key, "label": label, "a": va, "b": vb, "a_ci95": ca, "b_ci95": cb,
             "change_pct": change, "verdict": verdict}
        )  # fmt: skip
    return {
        "a": a["row_id"],
        "b": b["row_id"],
        "same_class": a["class_id"] == b["class_id"],
        "class_differences": diffs,
        "flags": {"a": a.get("flags") or [], "b": b.get("flags") or []},
        "figures": figs,
    }


# -- export ------------------------------------------------------------------------------------

CSV_FIGURES = tuple(RANKABLE)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One line per row: class, setting, each figure's value, n and interval, flags and
    provenance (CodeCarbon-style flat columns)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["schema", "class_id", "class", "row_id", "setting", "profiler", "profiler_rate_hz"]
    for k in CSV_FIGURES:
        head += [k, f"{k}_n", f"{k}_ci95_low", f"{k}_ci95_high"]
    head += [
        "idle_power_w", "temperature_max_c", "throttled", "steady_state", "flags",
        "recording_sha256", "recording_path", "anubis_version", "created_utc",
    ]  # fmt: skip
    w.writerow(head)
    for r in rows:
        s = r.get("setting") or {}
        line = [
            r["schema"], r["class_id"], class_label(r.get("class") or {}), r["row_id"],
            s.get("name"), s.get("profiler"), s.get("profiler_rate_hz"),
        ]  # fmt: skip
        for k in CSV_FIGURES:
            f = r["figures"].get(k) or {}
            c = ci(r, k)
            line += [value(r, k), f.get("n"), c[0] if c else None, c[1] if c else None]
        p = r["provenance"]
        line += [
            r.get("idle_power_w"),
            r.get("temperature_max_c"),
            ",".join(r.get("throttled") or []),
            (r.get("steady_state") or {}).get("steady"),
            "; ".join(r.get("flags") or []),
            p.get("recording_sha256"),
            p.get("recording_path"),
            p.get("anubis_version"),
            p.get("created_utc"),
        ]
        w.writerow(["" if v is None else v for v in line])
    return buf.getvalue()


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def svg_scatter(
    rows: Sequence[dict[str, Any]],
    texts: dict[str, str] | None = None,
    width: int = 640,
    height: int = 380,
) -> str:
    """An inline SVG: decode tok/s (x) against J/token (y), with each row's 95 % intervals as
    error bars; flagged rows hollow. Empty string when no row has both figures."""
    xk, yk = "decode_tokens_per_s", "energy_per_output_token_j"
    pts: list[tuple[dict[str, Any], float, float]] = []
    for r in rows:
        x, y = value(r, xk), value(r, yk)
        if x is not None and y is not None:
            pts.append((r, x, y))
    if not pts:
        return ""
    xs = [x for _, x, _ in pts] + [c for r, _, _ in pts for c in (ci(r, xk) or ())]
    yv = [y for _, _, y in pts if y > 0]
    # J/token spans decades when a profiler costs much: a log axis keeps the rest readable.
    logy = bool(yv) and max(yv) / min(yv) > 10
    x0, x1 = 0.0, max(xs) * 1.08 or 1.0
    if logy:
        y0, y1 = math.log10(min(yv) / 1.5), math.log10(max(yv) * 1.5)
    else:
        ys = [y for _, _, y in pts] + [c for r, _, _ in pts for c in (ci(r, yk) or ())]
        y0, y1 = 0.0, max(ys) * 1.08 or 1.0
    ml, mr, mt, mb = 64, 16, 16, 44
    pw, ph = width - ml - mr, height - mt - mb

    def sx(v: float) -> float:
        return ml + pw * (max(v, x0) - x0) / ((x1 - x0) or 1)

    def sy(v: float) -> float:
        if logy:
            v = math.log10(v) if v > 0 else y0
        v = min(max(v, y0), y1)  # an interval reaching below zero is drawn to the axis
        return mt + ph * (1 - (v - y0) / ((y1 - y0) or 1))

    def ylabel(i: int) -> float:
        t = y0 + (y1 - y0) * i / 4
        return 10**t if logy else t

    out = [
        f'<svg class="fig" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="decode tok/s against J/token">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
    ]
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yl = ylabel(i)
        out.append(
            f'<text x="{sx(xv):.1f}" y="{mt + ph + 16}" font-size="11" text-anchor="middle">'
            f"{xv:.4g}</text>"
        )
        out.append(
            f'<text x="{ml - 6}" y="{sy(yl) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{yl:.3g}</text>"
        )
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 6}" font-size="12" text-anchor="middle">'
        "decode tok/s (higher is better)</text>"
    )
    out.append(
        f'<text x="14" y="{mt + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {mt + ph / 2})">J/token{" (log)" if logy else ""} '
        "(lower is better)</text>"
    )
    for r, x, y in pts:
        cx, cy = ci(r, xk), ci(r, yk)
        if cx:
            out.append(
                f'<line class="err" x1="{sx(cx[0]):.1f}" y1="{sy(y):.1f}" x2="{sx(cx[1]):.1f}" '
                f'y2="{sy(y):.1f}" stroke="#36c" stroke-width="1.5"/>'
            )
        if cy:
            out.append(
                f'<line class="err" x1="{sx(x):.1f}" y1="{sy(cy[0]):.1f}" x2="{sx(x):.1f}" '
                f'y2="{sy(cy[1]):.1f}" stroke="#36c" stroke-width="1.5"/>'
            )
        flagged = bool(r.get("flags"))
        name = html.escape((texts or {}).get(r["row_id"]) or str(r["setting"].get("name")))
        out.append(
            f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" '
            f'fill="{"white" if flagged else "#36c"}" stroke="#036" stroke-width="1.5">'
            f"<title>{name}: {x:.4g} tok/s, {y:.4g} J/token"
            f"{' (' + html.escape('; '.join(r['flags'])) + ')' if flagged else ''}</title></circle>"
        )
        out.append(
            f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" font-size="10" fill="#333">'
            f"{name}</text>"
        )
    out.append("</svg>")
    return "".join(out)


_CHECK_JS = """
window.addEventListener('load', function () {
  var figs = document.querySelectorAll('svg.fig'), shown = 0, pts = 0;
  figs.forEach(function (s) {
    var b = s.getBoundingClientRect();
    if (b.width > 100 && b.height > 100) shown++;
    s.querySelectorAll('circle.pt').forEach(function (c) {
      var r = c.getBoundingClientRect(); if (r.width > 0 && r.height > 0) pts++;
    });
  });
  document.getElementById('rendered').textContent = shown + ' figures, ' + pts + ' points';
});
"""


def to_html(rows: Sequence[dict[str, Any]], key: str = "energy_per_output_token_j") -> str:
    """A self-contained HTML page (no external file or network reference): per class, the
    tok/s against J/token figure with intervals and the ranked table."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>anubis results</title><style>",
        "body{font-family:sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td.l,th.l{text-align:left}.flag{color:#a40}h2{font-size:17px;margin-top:28px}"
        ".note{color:#555;font-size:13px}",
        "</style></head><body>",
        f"<h1>anubis results ({len(rows)} rows, schema {SCHEMA})</h1>",
        "<p class='note'>Rows rank only within their comparability class (hardware, power limit, "
        "runtime, model, workload, energy scope and method). Intervals are 95 %. Hollow points "
        "and unranked rows are flagged: no steady state, throttling or too little data.</p>",
        "<p class='note'>rendered: <span id='rendered'>not checked (no script)</span></p>",
    ]
    for c in top(rows, key):
        parts.append(f"<h2>{html.escape(c['label'])} <small>class {c['class_id']}</small></h2>")
        if c["unknown"]:
            parts.append(
                "<p class='note'>not recorded (rows may differ in these): "
                + html.escape(", ".join(c["unknown"]))
                + "</p>"
            )
        parts.append(
            svg_scatter(
                [x["row"] for x in c["ranked"]],
                {x["row"]["row_id"]: x["setting"] for x in c["ranked"]},
            )
        )
        parts.append(
            "<table><tr><th>rank</th><th class='l'>setting</th><th>tok/s</th><th>95 %</th>"
            "<th>J/token</th><th>95 %</th><th>W</th><th>max °C</th><th>PPL</th>"
            "<th class='l'>flags</th>"
            "<th class='l'>row</th></tr>"
        )
        for x in c["ranked"]:
            r = x["row"]
            rk = "—" if x["rank"] is None else ("=1" if x["tie"] else str(x["rank"]))
            parts.append(
                f"<tr><td>{rk}</td><td class='l'>{html.escape(x['setting'])}</td>"
                f"<td>{_fmt(value(r, 'decode_tokens_per_s'))}</td>"
                f"<td>{_ci_text(ci(r, 'decode_tokens_per_s'))}</td>"
                f"<td>{_fmt(value(r, 'energy_per_output_token_j'))}</td>"
                f"<td>{_ci_text(ci(r, 'energy_per_output_token_j'))}</td>"
                f"<td>{_fmt(value(r, 'power_w'))}</td><td>{_fmt(r.get('temperature_max_c'))}</td>"
                f"<td>{html.escape(quality_text(r))}</td>"
                f"<td class='l flag'>{html.escape('; '.join(r.get('flags') or []))}</td>"
                f"<td class='l'>{r['row_id']}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<script>{_CHECK_JS}</script></body></html>")
    return "\n".join(parts)


def _ci_text(c: tuple[float, float] | None) -> str:
    return "—" if c is None else f"{c[0]:.4g}–{c[1]:.4g}"
