"""The evidence package's human report: one self-contained HTML file.

:func:`render_report` renders ``templates/report.html.j2`` with autoescaping on: every value
comes from the catalog and is untrusted, so a message such as ``<script>`` appears as text.
The file needs nothing else: the CSS is inline, there is no JavaScript, no font, image or any
other external resource, and a Content-Security-Policy forbids loading any. The restore-time
chart is inline SVG whose geometry is computed here, so the same content always renders the
same bytes.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2

from affidavit.evidence.content import FORMAT, EvidenceContent
from affidavit.policy.controls import FRAMEWORKS, NIST

__all__ = ["render_report"]

STATUSES = ("pass", "fail", "excepted", "not-applicable", "not-evaluated")

# the drill chart, in SVG user units
_CHART_WIDTH = 720
_LABEL_WIDTH = 170
_VALUE_WIDTH = 110
_BAR_HEIGHT = 18
_ROW_HEIGHT = 28
_AXIS_HEIGHT = 30


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("affidavit.evidence", "templates"),
        autoescape=True,  # every value is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    env.filters["yesno"] = _yesno
    return env


def render_report(content: EvidenceContent) -> str:
    """The HTML report of ``content``; deterministic."""
    framework = content.framework or NIST
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            c=content,
            format=FORMAT,
            framework=framework,
            framework_title=FRAMEWORKS.get(framework, framework),
            run=_newest_run(content.check_runs),
            controls=_controls(content, framework),
            totals=Counter(str(r.get("status")) for r in content.results),
            statuses=STATUSES,
            backup_rates=_backup_rates(content.backups),
            chart=_drill_chart(content.drills),
        )
    )


# --- the view -------------------------------------------------------------------------------


def _controls(content: EvidenceContent, framework: str) -> list[dict[str, Any]]:
    """One row per control: its results by subject, their counts and the mapped ids. Results
    of controls the catalog does not list come last, so nothing is hidden."""
    by_control: dict[str, list[Mapping[str, Any]]] = {}
    for r in content.results:
        by_control.setdefault(str(r.get("control")), []).append(r)
    rows: list[dict[str, Any]] = []
    listed: set[str] = set()
    for control in content.controls:
        cid = str(control.get("id"))
        listed.add(cid)
        rows.append(_row(cid, control, by_control.get(cid, []), framework))
    for cid in sorted(set(by_control) - listed):
        rows.append(_row(cid, {}, by_control[cid], framework))
    return rows


def _row(
    cid: str, control: Mapping[str, Any], results: Sequence[Mapping[str, Any]], framework: str
) -> dict[str, Any]:
    counts = Counter(str(r.get("status")) for r in results)
    worst = next(
        (s for s in ("fail", "not-evaluated", "excepted", "pass", "not-applicable") if counts[s]),
        "none",
    )
    mappings = control.get("mappings") or {}
    return {
        "id": cid,
        "title": control.get("title") or "(not in the controls catalog)",
        "severity": control.get("severity") or _first(r.get("severity") for r in results),
        "frequency": control.get("frequency"),
        "owners": sorted({str(r.get("owner")) for r in results if r.get("owner")}),
        "mappings": list(mappings.get(framework, ())),
        "counts": [(s, counts[s]) for s in STATUSES if counts[s]]
        + sorted((s, n) for s, n in counts.items() if s not in STATUSES),
        "outcome": worst,
        "results": sorted(results, key=lambda r: str(r.get("subject"))),
    }


def _backup_rates(backups: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Complete vs failed backups per source, then all sources together."""
    per: dict[str, Counter[str]] = {}
    for b in backups:
        per.setdefault(str(b.get("source") or "(no source)"), Counter())[str(b.get("status"))] += 1
    rows = [_rate(source, counts) for source, counts in sorted(per.items())]
    if len(rows) > 1:
        rows.append(_rate("all sources", sum(per.values(), Counter())))
    return rows


def _rate(source: str, counts: Counter[str]) -> dict[str, Any]:
    complete, failed = counts["complete"], counts["failed"]
    finished = complete + failed
    return {
        "source": source,
        "complete": complete,
        "failed": failed,
        "other": sum(counts.values()) - finished,
        "rate": f"{complete / finished:.1%}" if finished else "—",
        "percent": round(100 * complete / finished, 1) if finished else None,
    }


def _drill_chart(drills: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Horizontal bars: restore seconds per drill, each drill's RTO marked; None without
    drills."""
    if not drills:
        return None
    values = [_number(d.get("restore_seconds")) for d in drills]
    rtos = [_number(d.get("rto_seconds")) for d in drills]
    largest = max([v for v in (*values, *rtos) if v is not None and v > 0] or [1.0])
    step = _nice(largest * 1.05 / 4)  # about four grid steps of 1, 2, 2.5 or 5 x 10^k
    steps = math.ceil(largest * 1.05 / step)
    top = steps * step
    plot = _CHART_WIDTH - _LABEL_WIDTH - _VALUE_WIDTH
    scale = plot / top
    bars = []
    for i, (d, value, rto) in enumerate(zip(drills, values, rtos, strict=True)):
        y = i * _ROW_HEIGHT + 6
        if value is None:
            state = "unknown"
        elif rto is None:
            state = "no-rto"
        else:
            state = "within" if value <= rto else "over"
        bars.append(
            {
                "id": str(d.get("id")),
                "y": y,
                "text_y": y + _BAR_HEIGHT - 5,
                "width": _fmt(max(value or 0.0, 0.0) * scale),
                "value": f"{value:,.1f} s" if value is not None else "no restore time",
                "title": f"{d.get('id')}: restore "
                + (_seconds(value) if value is not None else "time unknown")
                + (f", RTO {_seconds(rto)}" if rto is not None else ", no RTO"),
                "rto_x": _fmt(_LABEL_WIDTH + max(rto, 0.0) * scale) if rto is not None else None,
                "state": state,
            }
        )
    height = len(drills) * _ROW_HEIGHT + _AXIS_HEIGHT
    axis_y = len(drills) * _ROW_HEIGHT + 4
    ticks = [
        {"x": _fmt(_LABEL_WIDTH + plot * k / steps), "label": f"{step * k:,.6g} s"}
        for k in range(steps + 1)
    ]
    return {
        "width": _CHART_WIDTH,
        "height": height,
        "label_width": _LABEL_WIDTH,
        "plot_width": plot,
        "bar_height": _BAR_HEIGHT,
        "row_height": _ROW_HEIGHT,
        "value_x": _LABEL_WIDTH + plot + 8,
        "axis_y": axis_y,
        "bars": bars,
        "ticks": ticks,
    }


def _nice(value: float) -> float:
    """The next 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    exponent = math.floor(math.log10(value)) if value > 0 else 0
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10.0**exponent
        if candidate >= value:
            return candidate
    return 10.0 ** (exponent + 1)


def _newest_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    dated = [(moment, i) for i, r in enumerate(runs) if (moment := _moment(r.get("at")))]
    return runs[max(dated)[1]] if dated else None


# --- filters and values ---------------------------------------------------------------------


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _when(value: object) -> str:
    """``2026-03-05 09:00:00 UTC``; anything that is not a time with an offset as given."""
    if value is None or value == "":
        return "—"
    moment = _moment(value)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _seconds(value: object) -> str:
    number = _number(value)
    if number is None:
        return "—" if value is None else str(value)
    text = f"{number:,.1f} s"
    return f"{text} ({number / 60:,.1f} min)" if number >= 120 else text


def _yesno(value: object) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v), None)
