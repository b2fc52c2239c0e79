"""The evidence package's human report: one self-contained HTML file.

:func:`render_report` renders ``templates/report.html.j2`` with autoescaping on: every value
comes from the catalog and is untrusted, so a message such as ``<script>`` appears as text.
The file needs nothing else: the CSS is inline, there is no JavaScript, no font, image or any
other external resource, and a Content-Security-Policy forbids loading any. The restore-time
chart is inline SVG from the one chart component the dashboard uses too
(:mod:`affidavit.render.chart`: a log axis, so that 0.1 s against an RTO of 600 s is a visible
bar), so the same content always renders the same bytes. Recorded messages are shown with
their backtick spans as code and their "N min ago" said against the check that wrote them
(:mod:`affidavit.render.text`).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from markupsafe import Markup

from affidavit.evidence.content import FORMAT, EvidenceContent
from affidavit.policy.controls import FRAMEWORKS, NIST
from affidavit.render.chart import Bar, limit_chart
from affidavit.render.text import message_html

__all__ = ["render_report"]

STATUSES = ("pass", "fail", "excepted", "not-applicable", "not-evaluated")


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
    env.filters["message"] = _message
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
    """The restore-time chart (the one chart component the dashboard uses too: a log axis,
    labels in columns of their own) and each drill's standing against its RTO; None without
    drills."""
    if not drills:
        return None
    bars = [
        Bar(
            label=str(d.get("id")),
            value=_number(d.get("restore_seconds")),
            limit=_number(d.get("rto_seconds")),
        )
        for d in drills
    ]
    svg = limit_chart(bars, title="Restore time per drill against its RTO", chart_id="drills")
    return {"svg": Markup(svg), "states": [b.state.value for b in bars]}  # noqa: S704 - escaped


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


def _message(value: object, written_at: object = None) -> Markup:
    """A recorded message: backtick spans as code, "N min ago" anchored to when it was
    written (``written_at``), everything else escaped."""
    return Markup(message_html("" if value is None else str(value), _moment(written_at)))  # noqa: S704


def _yesno(value: object) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v), None)
