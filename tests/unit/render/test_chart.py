"""The one chart component: legible at any ratio of value to limit (a log axis, bars never
thinner than a few pixels), labels in columns of their own that never touch each other,
gridlines or bars, ids shortened in the middle and never cut off, everything escaped."""

from __future__ import annotations

import itertools
import math
import re
from html.parser import HTMLParser

import pytest

from affidavit.render.chart import (
    MAX_LABEL_CHARS,
    MIN_BAR,
    Bar,
    BarState,
    duration_label,
    geometry,
    limit_chart,
    text_width,
)


class _Svg(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(data.strip())

    def named(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.elements
            if t == tag and (cls is None or cls in (a.get("class") or "").split())
        ]


def test_a_tenth_of_a_second_against_ten_minutes_is_a_visible_bar() -> None:
    """The evidence report's defect: 0.1-0.4 s against an RTO of 600 s drew bars 0.03-0.2 px
    wide. On the log axis each is at least one decade of the plot wide."""
    g = geometry([Bar(label="dr-1", value=0.1, limit=600), Bar(label="dr-2", value=0.4, limit=600)])
    decade = g.plot_width / math.log10(g.high / g.low)
    widths = [r.bar_width for r in g.rows]
    assert widths[0] >= decade - 1e-9 >= 40
    assert widths[1] > widths[0]  # still ordered by value
    assert all(
        r.limit_x is not None and r.limit_x > g.plot_x + w
        for r, w in zip(g.rows, widths, strict=True)
    )
    svg = _Svg(limit_chart([Bar(label="dr-1", value=0.1, limit=600)], title="t"))
    assert float(svg.named("rect", "bar")[0]["width"] or 0) >= 40


@pytest.mark.parametrize(
    ("value", "limit"),
    [(1e-6, 1e6), (1e6, 1e-3), (0.001, 0.001), (3600 * 24 * 30, 1.0), (5e-9, None)],
)
def test_any_ratio_keeps_every_bar_visible_and_inside_the_plot(
    value: float, limit: float | None
) -> None:
    g = geometry([Bar(label="a", value=value, limit=limit), Bar(label="b", value=1.0, limit=10)])
    for row in g.rows:
        assert row.bar_width >= MIN_BAR
        assert g.plot_x + row.bar_width <= g.plot_x + g.plot_width + 1e-6
        if row.limit_x is not None:
            assert g.plot_x <= row.limit_x <= g.plot_x + g.plot_width + 1e-6


def test_labels_sit_in_their_own_columns_and_never_collide() -> None:
    bars = [
        Bar(label=f"dr-20261205T0921{i:02d}Z-2a97{i:02d}", value=10.0**i, limit=60)
        for i in range(-3, 5)
    ]
    g = geometry(bars)
    widest_id = max(text_width(r.label, mono=True) for r in g.rows)
    assert widest_id <= g.plot_x  # ids end before the plot begins: never cut at the edge
    assert g.value_x >= g.plot_x + g.plot_width  # values begin after it: never on a gridline
    assert all(t.x <= g.plot_x + g.plot_width + 1e-6 for t in g.ticks)
    shown = [t for t in g.ticks if t.label is not None]
    assert len(shown) >= 3
    spans = []
    for t in shown:
        half = text_width(t.label or "") / 2
        centre = min(max(t.x, g.plot_x + half), g.plot_x + g.plot_width - half)
        spans.append((centre - half, centre + half))
    for (_, right), (left, _) in itertools.pairwise(spans):
        assert left >= right, spans  # tick labels never overlap
    # tick labels are under the plot, rows above the axis: no label crosses a bar
    svg = limit_chart(bars, title="t")
    tick_ys = {
        float(m) for m in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle"', svg)
    }
    assert tick_ys and min(tick_ys) > g.axis_y
    assert max(r.y for r in g.rows) + 16 <= g.axis_y


def test_a_long_id_is_shortened_in_its_middle_and_kept_whole_in_the_tooltip() -> None:
    long_id = "dr-" + "a" * 40 + "-tail-1234"
    svg = _Svg(limit_chart([Bar(label=long_id, value=1.0, limit=2.0)], title="t"))
    shown = [t for t in svg.texts if "…" in t]
    assert len(shown) == 1 and len(shown[0]) == MAX_LABEL_CHARS
    assert shown[0].startswith("dr-aaaa") and shown[0].endswith("1234")
    assert any(t.startswith(long_id + ":") for t in svg.texts)  # the row's <title>


def test_states_are_said_in_words_not_by_colour_alone() -> None:
    bars = [
        Bar(label="ok", value=1.0, limit=2.0),
        Bar(label="late", value=3.0, limit=2.0),
        Bar(label="free", value=3.0, limit=None),
        Bar(label="lost", value=None, limit=2.0),
        Bar(label="nan", value=math.nan, limit=math.inf),
    ]
    assert [b.state for b in bars] == [
        BarState.WITHIN, BarState.OVER, BarState.NO_LIMIT, BarState.UNKNOWN, BarState.UNKNOWN,
    ]  # fmt: skip
    texts = [r.value_text for r in geometry(bars).rows]
    assert texts[0] == "1 s of 2 s RTO: within"
    assert texts[1] == "3 s of 2 s RTO: over"
    assert texts[2] == "3 s, no RTO"
    assert texts[3] == "no time (RTO 2 s)"
    assert texts[4] == "no time"
    svg = _Svg(limit_chart(bars, title="t"))
    rects = svg.named("rect", "bar")
    assert [r["class"] for r in rects] == [
        "bar within", "bar over", "bar no-limit", "bar unknown", "bar unknown",
    ]  # fmt: skip
    assert float(rects[3]["width"] or 0) == 0.0  # no time: an empty row that says so


def test_a_zero_value_is_a_sliver_not_nothing() -> None:
    (row,) = geometry([Bar(label="z", value=0.0, limit=5.0)]).rows
    assert 0 < row.bar_width < MIN_BAR
    assert row.value_text == "0 s of 5 s RTO: within"


def test_everything_is_escaped_and_links_are_kept() -> None:
    svg = limit_chart(
        [Bar(label="<script>alert(1)</script>", value=1.0, limit=2.0, href="/drills?backup=a&b")],
        title='"><img src=x>',
        chart_id="c<1>",
    )
    assert "<script>" not in svg and "<img" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert 'href="/drills?backup=a&amp;b"' in svg
    assert 'aria-labelledby="c&lt;1&gt;-title"' in svg
    assert "style=" not in svg  # presentation attributes only: no CSP 'unsafe-inline' needed


def test_the_same_bars_give_the_same_bytes_and_none_give_nothing() -> None:
    bars = [Bar(label="a", value=0.25, limit=600), Bar(label="b", value=12, limit=None)]
    assert limit_chart(bars, title="t") == limit_chart(list(bars), title="t")
    assert limit_chart([], title="t") == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.004, "0.004 s"),
        (0.4, "0.4 s"),
        (0.07, "0.07 s"),
        (12, "12 s"),
        (90.5, "90.5 s"),
        (600, "10 min"),
        (5400, "90 min"),
        (9000, "2.5 h"),
        (86400 * 3, "3 d"),
    ],
)
def test_durations_read_as_people_read_them(seconds: float, text: str) -> None:
    assert duration_label(seconds) == text
