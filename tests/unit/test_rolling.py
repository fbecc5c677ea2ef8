"""The panel's rolling figures (analysis/rolling.py) and the throttle warning, on records
made here, with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anubis_tui.analysis.live import LiveState
from anubis_tui.analysis.rolling import (
    JPT_WINDOW_NS,
    WINDOW_NS,
    Rolling,
    decode_tps_series,
    jpt_series,
    paused_at,
)
from anubis_tui.recording.format import make_header
from anubis_tui.records import Channel, ChannelsAdded, Event, Sample, Tokens

S = 1_000_000_000
FLAGS = {1: "power_cap", 2: "thermal", 4: "idle"}


def chan(cid: str, kind: str, unit: str, method: str = "instant", **meta) -> Channel:
    return Channel(id=cid, label=cid, source="test", kind=kind, unit=unit, scope="system",
                   method=method, update_period_s=0.1, meta=meta)  # fmt: skip


ENERGY = chan("system.energy", "energy", "J", "counter")
THROTTLE = chan("gpu0.throttle", "throttle", "flags", flags=FLAGS)


def tok(t_ns: int, n: int = 1, phase: str = "decode") -> Tokens:
    return Tokens(t=t_ns, count=n, phase=phase, request=1, t_first=t_ns)


# -- tok/s now ---------------------------------------------------------------------------


def test_decode_tps_counts_the_window_open_at_its_start_and_closed_at_its_end():
    r = Rolling()
    for t in (1 * S, 2 * S, 3 * S):
        r.consume(tok(t, 10))
    r.consume(tok(3 * S, 7, phase="prompt"))  # prompt tokens are not decode tok/s
    # (1 s, 3 s]: the batch stamped at exactly 1 s is out, the one at 3 s is in
    assert r.decode_tps() == 20 / (WINDOW_NS / S) == 10.0
    assert r.decode_tps(at=3 * S - 1) == 20 / 2  # (1 s − 1 ns, 3 s − 1 ns]: 1 s and 2 s
    assert r.decode_tps(at=S + S // 2) == 10 / 2  # only the 1 s batch
    assert r.tokens == 30


def test_decode_tps_is_none_with_fewer_than_two_tokens_and_while_paused():
    r = Rolling()
    r.consume(tok(1 * S, 1))
    assert r.decode_tps() is None  # one token in the window
    r.consume(tok(int(1.5 * S), 1))
    assert r.decode_tps() == 1.0
    r.consume(Event(int(1.6 * S), "paused", {}))
    assert r.decode_tps() is None and r.paused
    r.consume(Event(int(1.7 * S), "resumed", {}))
    assert r.decode_tps() == 1.0


def test_old_batches_are_dropped_but_a_second_back_still_answers():
    r = Rolling()
    for i in range(100):
        r.consume(tok(i * S // 10, 1))  # 10 tok/s for 10 s
    assert max(t for t, _ in r.batches) - min(t for t, _ in r.batches) <= 3 * S
    assert r.decode_tps(at=r.t - S) == pytest.approx(10.0)


# -- J/token now -------------------------------------------------------------------------


def energy_run(r: Rolling, watts: float, tps: int, seconds: int, start: int = 0) -> None:
    """`seconds` of `tps` decode tokens a second and a reading of a counter at `watts` W
    each second (the reading after that second's tokens)."""
    for s in range(start, start + seconds):
        r.consume(tok(s * S + S // 2, tps))
        r.consume(Sample((s + 1) * S, [watts * (s + 1)]))


def test_j_per_token_is_energy_over_tokens_between_the_windows_first_and_last_reading():
    r = Rolling()
    r.consume(make_header([ENERGY], 0))
    energy_run(r, watts=200.0, tps=50, seconds=30)
    # readings in [20 s, 30 s]: 10 s × 200 W over 10 s × 50 tokens
    assert r.j_per_token() == pytest.approx(2000 / 500)
    assert r.j_per_token(at=25 * S) == pytest.approx(4.0)  # [15 s, 25 s]


def test_j_per_token_follows_a_change_within_the_window():
    r = Rolling()
    r.consume(make_header([ENERGY], 0))
    for s in range(20):  # 100 W and 50 tok/s, then 100 W and 25 tok/s from 15 s
        r.consume(tok(s * S + S // 2, 50 if s < 15 else 25))
        r.consume(Sample((s + 1) * S, [100.0 * (s + 1)]))
    # [10 s, 20 s]: 1000 J over 5 × 50 + 5 × 25 tokens
    assert r.j_per_token() == pytest.approx(1000 / 375)


def test_j_per_token_is_none_without_tokens_between_and_skips_missing_readings():
    r = Rolling()
    r.consume(make_header([THROTTLE], 0))
    r.consume(ChannelsAdded(t=0, channels=[ENERGY]))  # the counter comes later: index 1
    r.consume(Sample(1 * S, [0, 100.0]))
    r.consume(Sample(2 * S, [0, 200.0]))
    assert r.j_per_token() is None  # no tokens between the readings
    r.consume(tok(int(2.5 * S), 10))
    r.consume(Sample(3 * S, [0, None]))  # no reading
    r.consume(Sample(int(3.5 * S), [0, math.nan]))  # nor is NaN
    assert r.j_per_token() is None
    r.consume(Sample(4 * S, [0, 400.0]))
    assert r.j_per_token() == pytest.approx((400 - 100) / 10)


def test_j_per_token_without_an_energy_channel_is_none():
    r = Rolling()
    r.consume(make_header([THROTTLE], 0))
    energy_run(r, watts=100.0, tps=10, seconds=3)
    assert r.j_per_token() is None


# -- the series agree with the incremental form ----------------------------------------------


def test_series_give_the_incremental_figures_at_every_instant():
    rng = np.random.default_rng(7)
    r = Rolling()
    r.consume(make_header([ENERGY], 0))
    tok_t, tok_n, e_t, e_j, e_tok = [], [], [], [], []
    events: list[Event] = []
    incr_tps, incr_jpt, at = [], [], []
    energy = 0.0
    for k in range(1, 400):
        t = k * 50_000_000  # a record each 50 ms for 20 s
        if k == 150:
            events.append(Event(t, "paused", {}))
            r.consume(events[-1])
        elif k == 200:
            events.append(Event(t, "resumed", {}))
            r.consume(events[-1])
        if k % 2 and not 150 <= k < 200:
            n = int(rng.integers(1, 6))
            r.consume(tok(t, n))
            tok_t.append(t)
            tok_n.append(n)
        else:
            energy += float(rng.uniform(5, 15))
            r.consume(Sample(t, [energy]))
            e_t.append(t)
            e_j.append(energy)
            e_tok.append(r.tokens)
        at.append(t)
        incr_tps.append(r.decode_tps())
        incr_jpt.append(r.j_per_token())
    at_a = np.array(at, dtype=np.int64)
    tps = decode_tps_series(
        np.array(tok_t, dtype=np.int64), np.array(tok_n), at_a, paused_at(events, at_a)
    )
    jpt = jpt_series(np.array(e_t, dtype=np.int64), np.array(e_j), np.array(e_tok), at_a)
    as_nan = [math.nan if v is None else v for v in incr_tps]
    assert np.allclose(tps, as_nan, equal_nan=True)
    assert np.isnan(tps[150:199]).all()  # paused
    as_nan = [math.nan if v is None else v for v in incr_jpt]
    assert np.allclose(jpt, as_nan, equal_nan=True)
    assert np.isfinite(jpt).sum() > 300


def test_paused_at_follows_pause_and_resume():
    ev = [Event(2 * S, "paused", {}), Event(4 * S, "resumed", {}), Event(6 * S, "paused", {})]
    at = np.array([0, 2 * S, 3 * S, 4 * S, 5 * S, 7 * S], dtype=np.int64)
    assert paused_at(ev, at).tolist() == [False, True, True, False, False, True]
    assert not paused_at([], at).any()


def test_the_windows_are_two_and_ten_seconds():
    assert (WINDOW_NS, JPT_WINDOW_NS) == (2 * S, 10 * S)


# -- the throttle warning -------------------------------------------------------------------


def run(state: LiveState, seconds: range, tps: int, mask: int = 0) -> None:
    """`tps` decode tokens a second (ten batches), a throttle reading each 0.5 s."""
    for s in seconds:
        for i in range(10):
            state.consume(tok(s * S + i * S // 10, tps // 10))
        state.consume(Sample(s * S + S // 2, [mask]))
        state.consume(Sample(s * S + S - 1, [mask]))


def throttled_state(before_s: int = 20, tps_after: int = 50, mask: int = 1) -> LiveState:
    st = LiveState()
    st.consume(make_header([THROTTLE], 0))
    run(st, range(before_s), 100)
    run(st, range(before_s, before_s + 3), tps_after, mask)
    return st


def test_a_drop_while_a_flag_is_lit_is_called_throttling():
    snap = throttled_state().snapshot()
    assert snap.decode_tps == 50.0
    assert snap.throttle_warning == (
        "tok/s down 50% while power_cap active: throttled, not slower code"
    )


def test_two_flags_are_named_in_order():
    snap = throttled_state(mask=1 | 2).snapshot()
    assert snap.throttle_warning is not None
    assert "while power_cap, thermal active" in snap.throttle_warning


@pytest.mark.parametrize(
    ("why", "state"),
    [
        ("no flag lit", lambda: throttled_state(mask=0)),
        ("only idle", lambda: throttled_state(mask=4)),
        ("a drop under 10 %", lambda: throttled_state(tps_after=95)),
        ("under 10 s of history", lambda: throttled_state(before_s=5)),
    ],
)
def test_no_warning(why, state):
    assert state().snapshot().throttle_warning is None, why


def test_no_warning_while_paused():
    st = throttled_state()
    st.consume(Event(23 * S, "paused", {}))
    assert st.snapshot().throttle_warning is None


def test_a_second_without_tokens_in_the_history_does_not_hide_the_warning():
    """A model load (or a pause) leaves seconds without tok/s (NaN) in the chart's history;
    the best recent tok/s is over the seconds that have one."""
    st = LiveState()
    st.consume(make_header([THROTTLE], 0))
    st.consume(Sample(S // 2, [0]))  # loading: a reading, no tokens for 3 s
    run(st, range(3, 20), 100)
    run(st, range(20, 23), 50, 1)
    assert math.isnan(st.snapshot().history_tps[0])
    assert st.snapshot().throttle_warning is not None
