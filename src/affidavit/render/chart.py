"""The one chart component: horizontal bars of a duration against its limit (a restore time
against its RTO), as self-contained SVG markup for the evidence report and the dashboard; and
(:func:`grid_chart`) a grid of states, a row per id and a column per day, for control
adherence over time, drawn with the same fonts, label columns and escaping.

Legible at any ratio of value to limit:

- the value axis is **logarithmic**, from one decade below the smallest value to the decade
  at or above the largest value or limit, so every positive value spans at least one decade
  of the plot (0.1 s against an RTO of 600 s is a bar about a quarter of the plot wide, not
  0.03 px), and no bar is ever drawn narrower than :data:`MIN_BAR` pixels;
- labels sit in columns of their own: the ids on the left in a column as wide as the
  longest id needs (an id too long for :data:`MAX_LABEL_CHARS` is shortened in its middle,
  never cut at the edge; the whole id is in the row's tooltip), the values on the right
  beyond the plot, and the axis' tick labels below it. No label is drawn over a gridline,
  a bar or another label; a tick label that would touch its neighbour is left out;
- colours are presentation attributes, not styles, so the markup needs no stylesheet and
  passes a Content-Security-Policy without ``'unsafe-inline'``; every state is also said in
  words (the value column), not by colour alone.

Every text is escaped; a row's link (``href``) must be a path the caller built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from html import escape
from typing import Final

__all__ = [
    "MIN_BAR",
    "Bar",
    "BarState",
    "ChartGeometry",
    "GridCell",
    "GridRow",
    "duration_label",
    "geometry",
    "grid_chart",
    "limit_chart",
]

MIN_BAR: Final = 4.0
"""The narrowest bar drawn for a value (pixels)."""
MAX_LABEL_CHARS: Final = 32
"""Ids longer than this are shortened in the middle (``bk-2026…f3a9``)."""
FONT_SIZE: Final = 12
_CHAR: Final = 0.62 * FONT_SIZE  # an upper bound of a monospace character's advance (px)
_PROP: Final = 0.58 * FONT_SIZE  # ... of a proportional one (digits, lower case)
_ROW: Final = 26
_BAR: Final = 16
_TOP: Final = 8
_AXIS: Final = 22  # the tick labels under the plot
_LEGEND: Final = 24
_GAP: Final = 10
_MIN_PLOT: Final = 240.0

COLOURS: Final = {
    "within": "#1a7f37",
    "over": "#cf222e",
    "no-limit": "#6e7781",
    "unknown": "#6e7781",
}
_TEXT: Final = "#1f2328"
_GRID: Final = "#d0d7de"
_MARK: Final = "#1f2328"


class BarState(StrEnum):
    """How a value stands against its limit."""

    WITHIN = "within"
    OVER = "over"
    NO_LIMIT = "no-limit"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One row: ``label`` (an id), ``value`` and ``limit`` in seconds (None: unknown / none),
    an optional ``href`` to the record behind it."""

    label: str
    value: float | None
    limit: float | None
    href: str | None = None

    @property
    def state(self) -> BarState:
        """Within, over, without a limit, or without a value."""
        value, limit = _finite(self.value), _finite(self.limit)
        if value is None:
            return BarState.UNKNOWN
        if limit is None:
            return BarState.NO_LIMIT
        return BarState.WITHIN if value <= limit else BarState.OVER


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """A bar laid out."""

    bar: Bar
    label: str  # as shown (shortened in the middle when too long)
    y: float
    bar_width: float
    limit_x: float | None
    value_text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """A gridline of the axis and its label (None: left out, it would touch a neighbour)."""

    x: float
    value: float
    label: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChartGeometry:
    """Where everything goes (SVG user units = CSS pixels at scale 1)."""

    width: float
    height: float
    plot_x: float  # the left edge of the plot (the end of the label column)
    plot_width: float
    value_x: float  # where the value column starts
    axis_y: float
    low: float  # the axis' smallest value (left edge)
    high: float  # ... and largest (right edge)
    rows: tuple[Row, ...]
    ticks: tuple[Tick, ...]

    def x_of(self, seconds: float) -> float:
        """The x of a positive value on the log axis (clamped to the plot)."""
        span = math.log10(self.high / self.low)
        share = math.log10(max(seconds, self.low) / self.low) / span
        return self.plot_x + self.plot_width * min(max(share, 0.0), 1.0)


def _finite(value: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def duration_label(seconds: float) -> str:
    """A duration as people read it: ``0.004 s``, ``0.4 s``, ``12 s``, ``10 min``, ``2.5 h``,
    ``3 d`` (never ``0 s`` for a positive value)."""
    if seconds <= 0:
        return "0 s"
    if seconds < 1:
        digits = max(1, -math.floor(math.log10(seconds)))
        return f"{seconds:.{digits}f}".rstrip("0").rstrip(".") + " s"
    if seconds < 120:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}".removesuffix(".0") + " min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    return f"{seconds / 86400:.1f}".removesuffix(".0") + " d"


def _tick_label(seconds: float) -> str:
    """A decade's label: ``0.01 s``, ``1 s``, ``100 s``, ``1,000 s`` (exact powers of ten, so
    that the axis reads as one scale)."""
    if seconds >= 1:
        return f"{seconds:,.0f} s"
    return f"{seconds:.{-math.floor(math.log10(seconds) + 1e-9)}f} s"


def _shorten(label: str) -> str:
    if len(label) <= MAX_LABEL_CHARS:
        return label
    keep = MAX_LABEL_CHARS - 1
    head = (keep + 1) // 2
    return label[:head] + "…" + label[len(label) - (keep - head) :]


def text_width(text: str, *, mono: bool = False) -> float:
    """An upper bound of the width of ``text`` at :data:`FONT_SIZE` (px), in the monospace
    font of the ids or the proportional one of everything else."""
    return len(text) * (_CHAR if mono else _PROP)


def _value_text(bar: Bar, limit_name: str) -> str:
    value, limit = _finite(bar.value), _finite(bar.limit)
    if value is None:
        return "no time" + (f" ({limit_name} {duration_label(limit)})" if limit is not None else "")
    if limit is None:
        return f"{duration_label(value)}, no {limit_name}"
    verdict = "within" if bar.state is BarState.WITHIN else "over"
    return f"{duration_label(value)} of {duration_label(limit)} {limit_name}: {verdict}"


def geometry(
    bars: Sequence[Bar], *, width: float = 760.0, limit_name: str = "RTO"
) -> ChartGeometry:
    """Lay ``bars`` out in (at least) ``width`` pixels; the chart widens rather than squeeze
    its plot below :data:`_MIN_PLOT` pixels."""
    labels = [_shorten(b.label) for b in bars]
    values = [_value_text(b, limit_name) for b in bars]
    label_w = max((text_width(t, mono=True) for t in labels), default=0.0) + _GAP
    value_w = max((text_width(t) for t in values), default=0.0) + _GAP
    width = max(width, label_w + value_w + _MIN_PLOT + _GAP)
    plot_x = label_w
    plot_w = width - label_w - value_w - _GAP
    positives = [
        v for b in bars for v in (_finite(b.value), _finite(b.limit)) if v is not None and v > 0
    ]
    smallest = min((v for b in bars if (v := _finite(b.value)) and v > 0), default=None)
    low_exp = math.floor(math.log10(smallest if smallest else min(positives, default=1.0))) - 1
    high_exp = math.ceil(math.log10(max(positives, default=10.0)))
    high_exp = max(high_exp, low_exp + 2)
    low, high = 10.0**low_exp, 10.0**high_exp
    axis_y = _TOP + len(bars) * _ROW
    shell = ChartGeometry(
        width=width,
        height=axis_y + _AXIS + _LEGEND,
        plot_x=plot_x,
        plot_width=plot_w,
        value_x=plot_x + plot_w + _GAP,
        axis_y=axis_y,
        low=low,
        high=high,
        rows=(),
        ticks=(),
    )
    rows = []
    for i, (bar, label, text) in enumerate(zip(bars, labels, values, strict=True)):
        value, limit = _finite(bar.value), _finite(bar.limit)
        if value is None:
            bar_width = 0.0
        elif value <= 0:
            bar_width = MIN_BAR / 2
        else:
            bar_width = max(shell.x_of(value) - plot_x, MIN_BAR)
        limit_x = shell.x_of(limit) if limit is not None and limit > 0 else None
        rows.append(
            Row(
                bar=bar,
                label=label,
                y=_TOP + i * _ROW + (_ROW - _BAR) / 2,
                bar_width=bar_width,
                limit_x=limit_x,
                value_text=text,
            )
        )
    ticks: list[Tick] = []
    right_edge = -math.inf
    for exp in range(low_exp, high_exp + 1):
        value = 10.0**exp
        x = shell.x_of(value)
        label = _tick_label(value)
        half = text_width(label) / 2
        left = max(x - half, plot_x)  # the outer labels are kept inside the plot's span
        right = min(left + 2 * half, plot_x + plot_w)
        left = right - 2 * half
        shown = left >= right_edge + 4
        if shown:
            right_edge = right
        ticks.append(Tick(x=x, value=value, label=label if shown else None))
    return ChartGeometry(
        width=shell.width,
        height=shell.height,
        plot_x=plot_x,
        plot_width=plot_w,
        value_x=shell.value_x,
        axis_y=axis_y,
        low=low,
        high=high,
        rows=tuple(rows),
        ticks=tuple(ticks),
    )


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def limit_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    chart_id: str = "chart",
    width: float = 760.0,
    limit_name: str = "RTO",
) -> str:
    """The SVG markup (escaped, ready to embed in HTML) of ``bars``; an empty string for no
    bars. ``chart_id`` names the SVG's title element (unique in its page)."""
    if not bars:
        return ""
    g = geometry(bars, width=width, limit_name=limit_name)
    font = f'font-family="system-ui, sans-serif" font-size="{FONT_SIZE}" fill="{_TEXT}"'
    mono = (
        f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" '
        f'font-size="{FONT_SIZE}" fill="{_TEXT}"'
    )
    tid = escape(chart_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="group" '
        f'aria-labelledby="{tid}-title" width="{_n(g.width)}" height="{_n(g.height)}" '
        f'viewBox="0 0 {_n(g.width)} {_n(g.height)}">',
        f'<title id="{tid}-title">{escape(title)}</title>',
    ]
    # gridlines and the axis first, so that bars and marks are drawn over them
    for tick in g.ticks:
        out.append(
            f'<line x1="{_n(tick.x)}" y1="{_TOP - 4}" x2="{_n(tick.x)}" y2="{_n(g.axis_y)}" '
            f'stroke="{_GRID}" stroke-width="1"/>'
        )
        if tick.label is not None:
            half = text_width(tick.label) / 2
            centre = min(max(tick.x, g.plot_x + half), g.plot_x + g.plot_width - half)
            out.append(
                f'<text x="{_n(centre)}" y="{_n(g.axis_y + 15)}" text-anchor="middle" '
                f"{font}>{escape(tick.label)}</text>"
            )
    out.append(
        f'<line x1="{_n(g.plot_x)}" y1="{_n(g.axis_y)}" x2="{_n(g.plot_x + g.plot_width)}" '
        f'y2="{_n(g.axis_y)}" stroke="{_TEXT}" stroke-width="1"/>'
    )
    for row in g.rows:
        bar = row.bar
        text_y = row.y + _BAR - 4
        tip = f"{bar.label}: {row.value_text}"
        parts = [f"<title>{escape(tip)}</title>"]
        parts.append(
            f'<text x="{_n(g.plot_x - _GAP / 2)}" y="{_n(text_y)}" text-anchor="end" '
            f"{mono}>{escape(row.label)}</text>"
        )
        parts.append(  # width 0 without a value: the row is still there, and says so
            f'<rect class="bar {bar.state.value}" x="{_n(g.plot_x)}" y="{_n(row.y)}" '
            f'width="{_n(row.bar_width)}" height="{_BAR}" fill="{COLOURS[bar.state.value]}"/>'
        )
        if row.limit_x is not None:
            parts.append(
                f'<line class="limit" x1="{_n(row.limit_x)}" y1="{_n(row.y - 3)}" '
                f'x2="{_n(row.limit_x)}" '
                f'y2="{_n(row.y + _BAR + 3)}" stroke="{_MARK}" stroke-width="2" '
                f'stroke-dasharray="3 2"/>'
            )
        parts.append(
            f'<text x="{_n(g.value_x)}" y="{_n(text_y)}" {font}>{escape(row.value_text)}</text>'
        )
        body = "".join(parts)
        state = escape(bar.state.value)
        if bar.href is not None:
            out.append(f'<a href="{escape(bar.href)}" class="row {state}">{body}</a>')
        else:
            out.append(f'<g class="row {state}">{body}</g>')
    legend_y = g.axis_y + _AXIS + 12
    x = 0.0
    for state, words in (
        (BarState.WITHIN, f"within {limit_name}"),
        (BarState.OVER, f"over {limit_name}"),
        (BarState.NO_LIMIT, f"no {limit_name} or no time"),
    ):
        out.append(
            f'<rect x="{_n(x)}" y="{_n(legend_y - 9)}" width="10" height="10" '
            f'fill="{COLOURS[state.value]}"/>'
        )
        out.append(f'<text x="{_n(x + 14)}" y="{_n(legend_y)}" {font}>{escape(words)}</text>')
        x += 14 + text_width(words) + 16
    out.append(
        f'<line x1="{_n(x)}" y1="{_n(legend_y - 10)}" x2="{_n(x)}" y2="{_n(legend_y + 2)}" '
        f'stroke="{_MARK}" stroke-width="2" stroke-dasharray="3 2"/>'
    )
    out.append(
        f'<text x="{_n(x + 6)}" y="{_n(legend_y)}" {font}>{escape(limit_name)} (log scale)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


# -- a grid of states: rows by columns (control adherence per day) ------------------------------

GRID_COLOURS: Final = {
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "excepted": "#9a6700",
    "not-applicable": "#8c959f",
    "not-evaluated": "#8c959f",
}
GRID_MARKS: Final = {"fail": "F", "excepted": "E"}
"""The states said by a letter in the cell too (not by colour alone)."""
_CELL: Final = 18
_CELL_GAP: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class GridCell:
    """One cell: a state (a key of :data:`GRID_COLOURS`), its tooltip, and the path of the
    records behind it."""

    state: str
    tip: str
    href: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GridRow:
    """One row: its id, one cell per column (None: nothing recorded), and a summary in words
    shown on the right."""

    label: str
    cells: tuple[GridCell | None, ...]
    summary: str
    href: str | None = None


def grid_chart(
    rows: Sequence[GridRow],
    columns: Sequence[str],
    *,
    title: str,
    chart_id: str = "grid",
    every: int = 7,
) -> str:
    """The SVG markup of a grid: a row per id, a column per ``columns`` label (a label is
    drawn under every ``every``-th column, counted from the last, so the newest is always
    labelled), each cell coloured by state, lettered when it failed or was excepted, with its
    tooltip and link; empty for no rows."""
    if not rows:
        return ""
    labels = [_shorten(r.label) for r in rows]
    label_w = max(text_width(t, mono=True) for t in labels) + _GAP
    step = _CELL + _CELL_GAP
    plot_w = len(columns) * step
    summary_x = label_w + plot_w + _GAP
    summary_w = max(text_width(r.summary) for r in rows) + _GAP
    width = summary_x + summary_w
    axis_y = _TOP + len(rows) * step
    legend_y = axis_y + _AXIS + 12
    legend = [
        ("pass", "pass"),
        ("fail", "F fail"),
        ("excepted", "E excepted"),
        ("not-applicable", "not applicable / evaluated"),
    ]
    legend_w = sum(14 + text_width(words) + 16 for _, words in legend) + 90
    width = max(width, legend_w)
    height = legend_y + 8
    font = f'font-family="system-ui, sans-serif" font-size="{FONT_SIZE}" fill="{_TEXT}"'
    tid = escape(chart_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart grid" role="group" '
        f'aria-labelledby="{tid}-title" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}">',
        f'<title id="{tid}-title">{escape(title)}</title>',
    ]
    last = len(columns) - 1
    for i, column in enumerate(columns):
        if (last - i) % every:
            continue
        x = label_w + i * step + _CELL / 2
        half = text_width(column) / 2
        x = min(max(x, label_w + half), label_w + plot_w - half)
        out.append(
            f'<text x="{_n(x)}" y="{_n(axis_y + 14)}" text-anchor="middle" {font}>'
            f"{escape(column)}</text>"
        )
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        out.extend(_grid_row(row, label, y=_TOP + r * step, label_w=label_w, summary_x=summary_x))
    x = 0.0
    for state, words in legend:
        out.append(
            f'<rect x="{_n(x)}" y="{_n(legend_y - 9)}" width="10" height="10" '
            f'fill="{GRID_COLOURS[state]}"/>'
        )
        out.append(f'<text x="{_n(x + 14)}" y="{_n(legend_y)}" {font}>{escape(words)}</text>')
        x += 14 + text_width(words) + 16
    out.append(
        f'<rect x="{_n(x)}" y="{_n(legend_y - 9)}" width="10" height="10" fill="none" '
        f'stroke="{_GRID}"/>'
    )
    out.append(f'<text x="{_n(x + 14)}" y="{_n(legend_y)}" {font}>no check</text>')
    out.append("</svg>")
    return "\n".join(out)


def _grid_row(row: GridRow, label: str, *, y: float, label_w: float, summary_x: float) -> list[str]:
    """The markup of one row of :func:`grid_chart`."""
    font = f'font-family="system-ui, sans-serif" font-size="{FONT_SIZE}" fill="{_TEXT}"'
    mono = (
        f'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" '
        f'font-size="{FONT_SIZE}" fill="{_TEXT}"'
    )
    out: list[str] = []
    step = _CELL + _CELL_GAP
    text_y = y + _CELL - 5
    name = (
        f'<text x="{_n(label_w - _GAP / 2)}" y="{_n(text_y)}" text-anchor="end" {mono}>'
        f"<title>{escape(row.label)}</title>{escape(label)}</text>"
    )
    if row.href is not None:
        name = f'<a href="{escape(row.href)}" class="grid-row">{name}</a>'
    out.append(name)
    for c, cell in enumerate(row.cells):
        x = label_w + c * step
        if cell is None:
            out.append(
                f'<rect class="cell none" x="{_n(x + 0.5)}" y="{_n(y + 0.5)}" '
                f'width="{_CELL - 1}" height="{_CELL - 1}" fill="none" stroke="{_GRID}"/>'
            )
            continue
        colour = GRID_COLOURS.get(cell.state, GRID_COLOURS["not-evaluated"])
        state = escape(cell.state)
        parts = [
            f"<title>{escape(cell.tip)}</title>",
            f'<rect class="cell {state}" x="{_n(x)}" y="{_n(y)}" width="{_CELL}" '
            f'height="{_CELL}" fill="{colour}"/>',
        ]
        mark = GRID_MARKS.get(cell.state)
        if mark is not None:
            parts.append(
                f'<text x="{_n(x + _CELL / 2)}" y="{_n(text_y)}" text-anchor="middle" '
                f'font-family="system-ui, sans-serif" font-size="{FONT_SIZE}" '
                f'font-weight="bold" fill="#ffffff">{mark}</text>'
            )
        body = "".join(parts)
        if cell.href is not None:
            out.append(f'<a href="{escape(cell.href)}" class="cell-link {state}">{body}</a>')
        else:
            out.append(f'<g class="cell-link {state}">{body}</g>')
    out.append(f'<text x="{_n(summary_x)}" y="{_n(text_y)}" {font}>{escape(row.summary)}</text>')
    return out
