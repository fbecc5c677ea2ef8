"""`ProfilerSetting`: one parser and one formatter for ``off``, ``py-spy@100``, ``py-spy@1000n``.

Plans (session/plan.py), sweep treatments (session/sweep.py), their analysis
(analysis/sweep.py) and segment names (analysis/segments.py) all go through it.
"""

from __future__ import annotations

import itertools

import pytest

from anubis_tui.analysis.segments import setting_name
from anubis_tui.analysis.sweep import _rate_of
from anubis_tui.profilerspec import (
    RATES_HZ,
    ProfilerSetting,
    ProfilerSettingError,
    segment_label,
)
from anubis_tui.session.plan import parse_plan
from anubis_tui.session.sweep import treatments

EVERY = [ProfilerSetting.OFF] + [
    ProfilerSetting(p, float(r), n)
    for p, r, n in itertools.product(("py-spy", "scalene"), RATES_HZ, (False, True))
    if not (n and p == "scalene")
]


@pytest.mark.parametrize("setting", EVERY, ids=str)
def test_round_trip(setting):
    assert ProfilerSetting.parse(setting.format()) == setting
    assert str(setting) == setting.format()


def test_the_text_forms():
    assert ProfilerSetting.parse("off") == ProfilerSetting(None, 0.0, False)
    assert ProfilerSetting.parse("py-spy@1000n") == ProfilerSetting("py-spy", 1000.0, True)
    assert ProfilerSetting.parse(" scalene@10 ").format() == "scalene@10"
    assert ProfilerSetting.parse("py-spy@").rate_hz == 100.0  # the default rate
    assert ProfilerSetting("py-spy", 250.0, True).format() == "py-spy@250n"
    assert ProfilerSetting.OFF.off and ProfilerSetting.OFF.format() == "off"
    assert ProfilerSetting("py-spy", 100.0, True).segment_profiler == "py-spy --native"
    assert ProfilerSetting.OFF.segment_profiler is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("py-spy@7", "the rate is one of 1, 10, 50, 100, 250, 500, 1000 Hz"),
        ("py-spy@1e9", "the rate is one of"),
        ("py-spy@nan", "'na' is not a rate in Hz"),  # n: native, the rest is the rate
        ("py-spy@inf", "the rate is one of"),
        ("py-spy@x", "'x' is not a rate in Hz"),
        ("py-spy@100nn", "is not a rate in Hz"),
        ("gdb@10", "the profiler is one of py-spy, scalene (or off)"),
        ("", "the profiler is one of"),
        ("OFF", "the profiler is one of"),
        ("scalene@100n", "native mode (n) is py-spy's only"),
        ("py-spy@1\n00", "is not a rate in Hz"),
        ("x" * 500, "..."),
    ],
)
def test_bad_strings_are_refused_in_one_line(text, says):
    with pytest.raises(ProfilerSettingError) as e:
        ProfilerSetting.parse(text)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and len(msg) < 160
    assert isinstance(e.value, ValueError)


def test_not_text_is_refused():
    with pytest.raises(ProfilerSettingError, match="is not text"):
        ProfilerSetting.parse(100)  # type: ignore[arg-type]


def test_plans_parse_with_it_and_name_the_step():
    """The plan parser (the one left; profilers/controller.parse_plan is gone)."""
    steps = parse_plan("off:5,py-spy@1000n:6,scalene@10:4,threads=2:3")
    assert [s.profiler for s in steps] == [
        ProfilerSetting.OFF,
        ProfilerSetting("py-spy", 1000.0, True),
        ProfilerSetting("scalene", 10.0, False),
        None,  # knobs only: the profiler stays as it is
    ]
    assert [s.seconds for s in steps] == [5, 6, 4, 3]
    assert [s.describe() for s in steps] == ["off", "py-spy@1000n", "scalene@10", "threads=2"]
    for bad in ("py-spy@7:5", "gdb@10:5", "off", "off:-1", "", "off:nan", "off:inf", "py-spy@x:3"):
        with pytest.raises(ValueError) as e:
            parse_plan(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"plan step 'gdb@10:5': profiler setting 'gdb@10'"):
        parse_plan("gdb@10:5")


def test_sweeps_and_segments_name_settings_the_same_way():
    items, _ = treatments(["py-spy", "py-spy-native", "scalene"], [10, 1000], {}, {})
    assert [t.name for t in items] == [
        "py-spy@10",
        "py-spy@1000",
        "py-spy@10n",
        "py-spy@1000n",
        "scalene@10",
        "scalene@1000",
    ]
    for t in items:
        assert t.profiler is not None and ProfilerSetting.parse(t.name) == t.profiler
        prof, rate = _rate_of(t.name)  # the analysis reads the name back with the same parser
        assert (prof, rate) == (t.profiler.segment_profiler, t.profiler.rate_hz)
        # ...and the segment of that treatment is named from the same two parts
        assert setting_name(prof, rate) == segment_label(prof, rate)
    assert _rate_of("threads=1") == ("threads=1", None)
    assert _rate_of("py-spy@bogus") == ("py-spy@bogus", None)
    assert setting_name("py-spy --native", 1000.0) == "py-spy --native@1000"
    assert setting_name("scalene-off", None) == "scalene-off"
    assert setting_name(None, None) == "baseline"
