"""Recording format, writer and the tolerant reader; report figures on known input."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_tui.analysis.report import report
from anubis_tui.recording.format import make_header, pack
from anubis_tui.recording.reader import ReaderError, load, read_all, read_bytes
from anubis_tui.recording.writer import RecordingError, RecordingWriter, open_output
from anubis_tui.records import Event, Footer, Header, Sample
from tests import synthetic

PHASES = [
    (10, 100.0, 40.0, None, None),
    (10, 250.0, 20.0, "py-spy", 100.0),
    (10, 100.0, 40.0, None, None),
]


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> tuple[Path, dict]:
    p = tmp_path_factory.mktemp("rec") / "syn.msgpack"
    return p, synthetic.write(p, PHASES)


def test_report_matches_hand_computed_figures(syn):
    path, expect = syn
    r = report(load(path))
    assert r["duration_s"] == pytest.approx(30.0)
    assert r["tokens"]["generated"] == expect["tokens"] == 10 * 40 + 10 * 20 + 10 * 40
    assert r["energy"]["joules"] == pytest.approx(100 * 10 + 250 * 10 + 100 * 10)
    assert r["energy"]["j_per_token"] == pytest.approx(4500 / 1000)
    assert r["energy"]["method"] == "counter"
    assert r["temperature_c"]["max"] == 70.0
    assert r["throttle"]["share"]["power_cap"] == pytest.approx(100 / 301, abs=0.01)
    base, prof, _base2 = r["segments"]
    assert base["profiler"] is None and prof["profiler"] == "py-spy" and prof["rate_hz"] == 100
    assert base["decode_tps"] == pytest.approx(40, rel=0.01)
    assert base["j_per_token"] == pytest.approx(1000 / 400)
    assert prof["j_per_token"] == pytest.approx(2500 / 200)
    # The profiler segment ran at the power cap and its baselines did not: no comparison.
    assert prof["delta"] is None and prof["not_comparable"] == "throttled: power_cap"
    assert r["recovery"] == {
        "truncated": False,
        "records": r["recovery"]["records"],
        "stopped_at": None,
        "reason": "",
    }


def test_deltas_against_a_fair_baseline_match_hand_computed_figures(tmp_path):
    path = tmp_path / "fair.msgpack"
    synthetic.write(
        path,
        [(10, 100, 40, None, None), (10, 250, 20, "py-spy", 100), (10, 100, 40, None, None)],
        cap_w=1e9,
    )
    _base, prof, _base2 = report(load(path))["segments"]
    # (n − 1) / (last − first stamp) per 1 s request: 39/0.975 s against 19/0.975 s.
    assert prof["delta"]["decode_tps_pct"] == pytest.approx(100 * (19 / 39 - 1))
    assert prof["delta"]["power_w"] == pytest.approx(150)
    assert prof["delta"]["j_per_token_pct"] == pytest.approx(400)
    assert prof["delta"]["temp_max_c"] == pytest.approx(10)
    assert prof["delta"]["baseline_start_s"] == 0.0  # nearest by midpoint; ties go to the earlier


def test_json_report_has_the_stable_keys(syn):
    r = report(load(syn[0]))
    for key in (
        "duration_s",
        "tokens",
        "energy",
        "power_w",
        "temperature_c",
        "throttle",
        "segments",
        "recovery",
    ):
        assert key in r
    assert {"generated", "decode_tps", "prompt_tps"} <= set(r["tokens"])
    assert {"joules", "j_per_token", "method"} <= set(r["energy"])
    assert {
        "profiler",
        "rate_hz",
        "start_s",
        "end_s",
        "decode_tps",
        "power_w",
        "j_per_token",
        "delta",
    } <= set(r["segments"][0])


def test_cut_at_every_byte_of_the_last_kilobyte_keeps_every_record_before(syn):
    data = syn[0].read_bytes()
    full, _ = read_bytes(data)
    # byte offset where each record ends
    ends = []
    u = msgpack.Unpacker()
    u.feed(data)
    for _ in u:
        ends.append(u.tell())
    for cut in range(len(data) - 1024, len(data)):
        recs, rec = read_bytes(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        assert len(recs) == whole
        assert recs == full[:whole]
        assert rec.truncated and rec.stopped_at == ends[whole - 1]


def test_file_without_footer_reports_truncated(tmp_path):
    p = tmp_path / "cut.msgpack"
    synthetic.write(p, PHASES[:1], footer=False)
    records, rec = read_all(p)
    assert not isinstance(records[-1], Footer)
    assert rec.truncated and "footer" in rec.reason


def test_unknown_major_schema_is_refused_with_a_clear_message(tmp_path):
    h = make_header([], 0)
    future = Header(h.format, (2, 0), h.created_utc, 0, h.host, h.app_version, [], {}, {})
    p = tmp_path / "v2.msgpack"
    p.write_bytes(pack(future))
    with pytest.raises(ReaderError, match=r"schema 2\.0 is not readable"):
        load(p)


def test_extension_types_and_non_records_stop_the_read(tmp_path):
    head = pack(make_header([], 0))
    ext = msgpack.packb(msgpack.ExtType(5, b"boom"))
    recs, rec = read_bytes(head + pack(Sample(1, [])) + ext + pack(Sample(2, [])))
    assert len(recs) == 2 and rec.truncated and "extension" in rec.reason
    recs, rec = read_bytes(head + msgpack.packb({"not": "a record"}))
    assert len(recs) == 1 and rec.truncated


def test_not_a_recording(tmp_path):
    with pytest.raises(ReaderError, match="not an anubis recording"):
        read_bytes(msgpack.packb([1, 2, []]))
    with pytest.raises(ReaderError, match="no such recording"):
        load(tmp_path / "none.msgpack")
    with pytest.raises(ReaderError):
        read_bytes(b"")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_only_raise_reader_error(data):
    with contextlib.suppress(ReaderError):
        read_bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_recordings_recover_or_raise_reader_error(data):
    base = _small_recording()
    b = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    try:
        recs, rec = read_bytes(bytes(b))
    except ReaderError:
        return
    assert rec.records == len(recs)


_SMALL: list[bytes] = []


def _small_recording() -> bytes:
    if not _SMALL:
        from anubis_tui.records import Channel

        ch = Channel(
            id="p",
            label="p",
            source="s",
            kind="power",
            unit="W",
            scope="gpu",
            method="instant",
            update_period_s=0.1,
        )
        parts = [pack(make_header([ch], 0))]
        parts += [pack(Sample(i, [float(i)])) for i in range(20)]
        parts += [pack(Event(21, "marker", {"label": "x"})), pack(Footer(22, {}))]
        _SMALL.append(b"".join(parts))
    return _SMALL[0]


def test_writer_refuses_to_overwrite_and_symlinks(tmp_path):
    p = tmp_path / "a.msgpack"
    p.write_bytes(b"keep")
    with pytest.raises(RecordingError, match="--force"):
        open_output(str(p))
    assert p.read_bytes() == b"keep"
    link = tmp_path / "link.msgpack"
    link.symlink_to(tmp_path / "target.msgpack")
    with pytest.raises(RecordingError, match="symlink"):
        open_output(str(link))
    with pytest.raises(RecordingError, match="symlink"):
        open_output(str(link), force=True)
    assert not (tmp_path / "target.msgpack").exists()
    open_output(str(p), force=True).close()
    assert p.read_bytes() == b""


def test_disk_full_ends_recording_with_a_message_not_an_exception():
    errors: list[str] = []
    out = open("/dev/full", "wb", buffering=1 << 16)  # noqa: SIM115
    w = RecordingWriter(out, make_header([], 0), on_error=errors.append, flush_s=0.05)
    for i in range(2000):
        w.submit(Sample(i, [1.0] * 20))
    w.close(Footer(3000, {}))
    assert w.error is not None and "No space left" in w.error
    assert errors == [w.error]


def test_full_queue_drops_and_counts(tmp_path, monkeypatch):
    import time

    from anubis_tui.recording import writer as wmod

    class SlowFile:
        """A disk that takes 50 ms per write once the header is down."""

        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += 1
            if self.n > 1:
                time.sleep(0.05)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(wmod, "QUEUE_MAX", 10)
    p = tmp_path / "q.msgpack"
    w = RecordingWriter(SlowFile(open_output(str(p))), make_header([], 0))
    for i in range(50):
        w.submit(Sample(i, []))  # never blocks, even with the disk stalled
    w.close(Footer(100, {}))
    assert 30 <= w.dropped <= 40
    records, _ = read_all(p)
    assert records[-1].totals["writer_dropped"] == w.dropped
    assert len([r for r in records if isinstance(r, Sample)]) == 50 - w.dropped


def test_sample_records_are_under_12_bytes_per_value(syn):
    records, _ = read_all(syn[0])
    samples = [r for r in records if isinstance(r, Sample)]
    size = sum(len(pack(r)) for r in samples)
    assert size / sum(len(r.values) for r in samples) < 12


def test_the_reader_takes_every_channel_table_the_writer_makes(tmp_path):
    from anubis_tui.recording.format import MAX_CHANNELS, FormatError
    from anubis_tui.recording.writer import RecordingWriter, open_output
    from anubis_tui.records import Channel, Footer, Sample

    def chans(n):
        return [
            Channel(id=f"c{i}", label=f"c{i}", source="s", kind="power", unit="W",
                    scope="gpu", method="instant", update_period_s=0.1)
            for i in range(n)
        ]  # fmt: skip

    path = tmp_path / "wide.msgpack"
    w = RecordingWriter(open_output(str(path)), make_header(chans(66_032), 0))
    w.submit(Sample(1, [1.0] * 66_032))
    w.close(Footer(2, {"clean": True}))
    rec = load(path)
    assert len(rec.channels) == 66_032 and rec.values.shape == (1, 66_032)
    assert not rec.recovery.truncated
    with pytest.raises(FormatError):
        make_header(chans(MAX_CHANNELS + 1), 0)


# -- payload schemas: analysis never sees a wrong type ------------------------------------------


def _typed_value(typ: str):
    return {
        "ns": 5,
        "count": 3,
        "int": -1,
        "num": 1.5,
        "str": "s",
        "bool": True,
        "scalar": "v",
        "map": {"a": 1},
        "scalar_map": {"a": 1},
        "str_list": ["a"],
        "list": [],
    }[typ.rstrip("!")]


def test_every_event_kind_the_writer_makes_keeps_a_well_typed_payload():
    from anubis_tui.records import EVENT_SCHEMA, record_from_plain

    for kind, fields in EVENT_SCHEMA.items():
        payload = {f: _typed_value(t) for f, t in fields.items()}
        e = record_from_plain(Event(7, kind, payload).to_plain())
        assert (e.kind, e.payload) == (kind, payload), kind


def test_a_required_field_missing_nil_or_mistyped_makes_an_invalid_event():
    from anubis_tui.records import _TYPES, EVENT_SCHEMA, INVALID_EVENT, record_from_plain

    for kind, fields in EVENT_SCHEMA.items():
        good = {f: _typed_value(t) for f, t in fields.items()}
        for f, t in fields.items():
            if f == "frames":  # clean_payload makes any frames a list of valid frames
                continue
            mistyped = {"str": 5, "scalar": {"a": 1}}.get(t.rstrip("!"), "x")
            for bad in ("missing", None, [1, 2], mistyped):
                if bad not in ("missing", None) and _TYPES[t.rstrip("!")](bad):
                    continue  # a value of the right type after all ([1, 2] is a list)
                payload = {k: v for k, v in good.items() if k != f}
                if bad != "missing":
                    payload[f] = bad
                e = record_from_plain(Event(7, kind, payload).to_plain())
                if t.endswith("!"):
                    assert e.kind == INVALID_EVENT and e.payload["kind"] == kind, (kind, f, bad)
                elif bad is None:  # nil is "not known" (the writer writes ttft_ns=None)
                    assert e.kind == kind and e.payload.get(f) is None, (kind, f)
                else:  # an optional field of the wrong type is dropped; the Event stays
                    assert e.kind == kind and f not in e.payload, (kind, f, bad)


def test_the_kept_back_payloads_report_without_a_traceback(tmp_path):
    """The issue's examples: a channel whose `integration` is a list; a request_end Event
    without `generated`, or with it nil. The report reads the rest of the file."""
    from anubis_tui.analysis.report import render
    from anubis_tui.records import INVALID_EVENT, Channel

    power = Channel(
        id="system.power",
        label="p",
        source="s",
        kind="power",
        unit="W",
        scope="board-input",
        method="instant",
        update_period_s=0.1,
    )
    energy = Channel(id="system.energy", label="e", source="anubis", kind="energy", unit="J",
                     scope="board-input", method="derived", update_period_s=0.0,
                     meta={"integration": ["trapezoidal"], "parts": "system.power",
                           "critical_c": "hot", "is_limit": "yes"})  # fmt: skip
    parts = [pack(make_header([power, energy], 0))]
    for i in range(50):
        parts.append(pack(Sample(i * 100_000_000, [100.0, i * 10.0])))
    parts.append(pack(Event(1_000, "request_start", {"request": 0})))
    parts.append(pack(Event(2_000_000_000, "request_end", {"request": 0, "decode_ns": 10**9})))
    parts.append(pack(Event(2_100_000_000, "request_start", {"request": 1})))
    parts.append(
        pack(Event(3_000_000_000, "request_end", {"request": 1, "generated": None, "decode_ns": 5}))
    )
    parts.append(pack(Event(4_000_000_000, "knob", {"name": "threads", "value": [1, 2]})))
    parts.append(pack(Footer(5_000_000_000, {"clean": True})))
    path = tmp_path / "kept-back.msgpack"
    path.write_bytes(b"".join(parts))
    rec = load(path)
    assert rec.channels[1].meta == {}  # every known key of the wrong type dropped
    kinds = [e.kind for e in rec.events]
    assert kinds.count(INVALID_EVENT) == 2 and "request_end" not in kinds
    assert "value" not in next(e for e in rec.events if e.kind == "knob").payload
    text = render(report(rec))
    assert "W" in text
