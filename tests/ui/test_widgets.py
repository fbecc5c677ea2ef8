"""The widgets' text: chart scales and gaps, channel labels, the knobs panel."""

from __future__ import annotations

import math

from anubis_tui.analysis.live import LiveState
from anubis_tui.records import Channel, Event
from anubis_tui.ui.widgets.charts import scale, spark_rows, time_axis
from anubis_tui.ui.widgets.knobs import knob_cells
from anubis_tui.ui.widgets.labels import short_label


def chan(label: str, **meta) -> Channel:
    return Channel(
        id="a.b", label=label, source="s", kind="power", unit="W", scope="gpu",
        method="instant", update_period_s=1.0, meta=meta,
    )  # fmt: skip


def test_a_gap_stays_a_gap_and_a_reading_always_shows():
    row = spark_rows([1.0, math.nan, 1.0, 5.0], 6, 1, 1.0, 5.0)[0]
    assert row == "  ▁ ▁█"  # padding, reading at the minimum, gap, reading, maximum
    tall = spark_rows([0.0, 10.0], 2, 3, 0.0, 10.0)  # three rows, top first
    assert [r[1] for r in tall] == ["█", "█", "█"]  # the maximum fills every row
    assert [r[0] for r in tall] == [" ", " ", "▁"]  # the minimum is the lowest block


def test_scale_is_the_visible_range_and_none_without_readings():
    assert scale([math.nan, math.nan], 10, zero=False) is None
    assert scale([4.0, 8.0, 6.0], 10, zero=False) == (4.0, 8.0)
    assert scale([40.0, 90.0], 10, zero=True) == (0.0, 90.0)
    lo, hi = scale([5.0, 5.0], 10, zero=False) or (0, 0)
    assert hi > lo  # a flat line still has a range to draw in


def test_time_axis_ticks_back_from_now():
    axis = time_axis(100)
    assert axis.endswith("now") and len(axis) == 100
    assert "┴-30s" in axis and "┴-1m" in axis and "┴-90s" in axis


def test_labels_are_never_cut_inside_a_word():
    cases = {
        "GPU0 memory power": "GPU0 mem",
        "GPU0 temperature": "GPU0",
        "GPU0 clocks-event reasons": "GPU0",
        "RAPL package-0/core power": "pkg0 core",
        "package 0 throttling": "pkg0",
    }
    for label, want in cases.items():
        assert short_label(chan(label), 10) == want
    for width in range(4, 20):
        for label in ("CPU max-frequency cap", "acpitz temp1", "coretemp Core 11"):
            got = short_label(chan(label, chip="coretemp"), width)
            words = set(label.replace("max-frequency", "max-freq").split())
            assert len(got) <= width or got.endswith("…")
            assert all(w in words for w in got.split()) or got.endswith("…"), (label, got)


def test_knobs_panel_greys_what_cannot_change_with_the_reason():
    st = LiveState()
    st.consume(
        Event(
            0,
            "knobs",
            {
                "values": {"threads": 2, "power_limit_w": None, "model": "/x/m-q4.gguf"},
                "state": {"threads": "", "power_limit_w": "needs root", "model": "1 GGUF file"},
            },
        )
    )
    st.consume(Event(1, "knob", {"name": "threads", "value": 1, "previous": 2}))
    live, greyed = knob_cells(st.snapshot())
    assert "[b]t/T[/] threads 1" in live
    assert "w/W GPU power: needs root" in greyed
    assert "o model: 1 GGUF file" in greyed


def test_what_system_power_leaves_out_is_never_cut_to_an_article():
    from anubis_tui.recording.format import make_header
    from anubis_tui.ui.widgets.power import PowerPanel

    for uncovered, short in (
        (["the whole machine: no power sensor"], "partial: 1 (l)"),
        (["GPU0 (Quadro K2100M) power not measured", "fans"], "not covered: GPU0 +1"),
    ):
        sys_ch = Channel(
            id="system.power", label="system", source="s", kind="power", unit="W",
            scope="system", method="estimated", update_period_s=1.0,
            meta={"uncovered": uncovered},
        )  # fmt: skip
        st = LiveState()
        st.consume(make_header([sys_ch], 0))
        lines = PowerPanel().text(st.snapshot()).splitlines()  # 22 cells before layout
        assert short in lines, lines
