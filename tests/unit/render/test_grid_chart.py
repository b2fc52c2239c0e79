"""The grid of states (control adherence per day): a cell per row and column, states said by
colour, a letter (fail, excepted) and a tooltip, a link per cell, labels in their own columns,
everything escaped, no inline style."""

from __future__ import annotations

from html.parser import HTMLParser

from affidavit.render.chart import GRID_COLOURS, GridCell, GridRow, grid_chart


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

    def named(self, tag: str, cls: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and cls in (a.get("class") or "").split()]


DAYS = [f"Nov {d}" for d in range(1, 15)]


def _row(label: str, states: list[str | None]) -> GridRow:
    return GridRow(
        label=label,
        cells=tuple(
            None
            if s is None
            else GridCell(state=s, tip=f"{label} day {i}: {s}", href=f"/checks/c{i}?control=x")
            for i, s in enumerate(states)
        ),
        summary="days: 1 fail",
    )


def test_every_cell_is_drawn_linked_and_said_in_words() -> None:
    states: list[str | None] = ["pass", "fail", "excepted", "not-applicable", None] * 2
    states += ["pass"] * 4
    svg = _Svg(grid_chart([_row("backup.encrypted", states)], DAYS, title="Adherence"))
    cells = [a for t, a in svg.elements if t == "rect" and "cell" in (a.get("class") or "")]
    assert len(cells) == len(DAYS)
    drawn = [a for a in cells if "none" not in (a.get("class") or "")]
    assert {a["fill"] for a in drawn} <= set(GRID_COLOURS.values())
    links = [a for t, a in svg.elements if t == "a" and "cell-link" in (a.get("class") or "")]
    assert len(links) == len(drawn) == 12
    assert all((a["href"] or "").startswith("/checks/c") for a in links)
    assert svg.texts.count("F") == 2 and svg.texts.count("E") == 2  # not colour alone
    assert "backup.encrypted day 1: fail" in svg.texts  # the tooltip
    assert "days: 1 fail" in svg.texts


def test_labels_are_every_seventh_day_counted_from_the_newest() -> None:
    svg = _Svg(grid_chart([_row("a", ["pass"] * 14)], DAYS, title="t", every=7))
    assert [t for t in svg.texts if t.startswith("Nov")] == ["Nov 7", "Nov 14"]


def test_escaped_and_no_style() -> None:
    hostile = "<script>alert(1)</script>"
    markup = grid_chart(
        [
            GridRow(
                label=hostile,
                cells=(GridCell(state="fail", tip=hostile, href='/x?a="1"&b=<2>'),),
                summary=hostile,
            )
        ],
        [hostile],
        title=hostile,
        every=1,
    )
    assert "<script" not in markup and "style=" not in markup
    assert "&lt;script&gt;" in markup and "&quot;1&quot;&amp;b=&lt;2&gt;" in markup


def test_no_rows_no_chart() -> None:
    assert grid_chart([], DAYS, title="t") == ""
