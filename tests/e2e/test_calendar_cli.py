"""``affidavit calendar`` through the CLI in local mode: the month table with overdue items
marked, ``--json``, the .ics written to a file, and bad input (a date that does not parse, a
recurrence that is not an ISO 8601 duration, an unknown id) refused with exit 2, one line and a
hint, nothing recorded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import icalendar
import pytest

pytestmark = pytest.mark.e2e


def _actions(home: Path) -> list[str]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "t", "--due", "2027-02-30"), "--due '2027-02-30' is not a date"),
        (("add", "t", "--due", "next friday"), "is not a date"),
        (("add", "t", "--due", "2027-01-01", "--every", "yearly"), "not an ISO 8601 duration"),
        (("add", "t", "--due", "2027-01-01", "--every", "P1Y2D"), "either months"),
        (("add", " ", "--due", "2027-01-01"), "must not be empty"),
        (("remove", "dl-0123456789abcdef"), "no deadline 'dl-0123456789abcdef'"),
        (("--from", "2027-01-31", "--to", "2027-01-01"), "comes before"),
        (("ics", "--from", "someday"), "--from 'someday' is not a date"),
    ],
)
def test_bad_input_is_refused_and_records_nothing(
    cli: Any, home: Path, args: tuple[str, ...], message: str
) -> None:
    before = _actions(home)
    result = cli("calendar", *args)
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error:") and message in lines[0], lines
    assert lines[1].startswith("hint:")
    assert _actions(home) == before


def test_the_month_table_json_and_feed(cli: Any, home: Path, tmp_path: Path) -> None:
    late = cli("calendar", "add", "Late filing", "--due", "2021-05-10", "--json")
    assert late.code == 0, late.err
    late_id = json.loads(late.out)["id"]
    ahead = cli("calendar", "add", "Annual DPIA", "--due", "2099-02-01", "--every", "P1Y",
                "--owner", "dpo@example.com", "--detail", "GDPR Art. 35")  # fmt: skip
    assert ahead.code == 0 and "every P1Y" in ahead.out
    shown = cli("calendar")
    assert shown.code == 0
    assert "May 2021" in shown.out and "OVERDUE" in shown.out and "Late filing" in shown.out
    assert "February 2099" in shown.out and "dpo@example.com" in shown.out
    data = json.loads(cli("calendar", "--json").out)
    assert data["counts"]["overdue"] >= 1
    items = {i["id"]: i for i in data["items"]}
    assert items[f"deadline:{late_id}"]["state"] == "overdue"
    assert items[f"deadline:{late_id}"]["due"] == "2021-05-10"
    assert json.loads(cli("calendar", "show", "--json").out)["items"] == data["items"]
    out = tmp_path / "governance.ics"
    written = cli("calendar", "ics", "--out", str(out))
    assert written.code == 0, written.err
    parsed = icalendar.Calendar.from_ical(out.read_bytes())
    summaries = {str(e["SUMMARY"]) for e in parsed.walk("VEVENT")}
    assert {"OVERDUE: Late filing", "Annual DPIA"} <= summaries
    assert len(parsed.walk("VEVENT")) == len(data["items"])
    stdout = cli("calendar", "ics")
    assert stdout.code == 0 and stdout.out.startswith("BEGIN:VCALENDAR")
    removed = cli("calendar", "remove", late_id)
    assert removed.code == 0 and late_id in removed.out
    assert _actions(home)[-3:] == [
        "calendar.deadline_added",
        "calendar.deadline_added",
        "calendar.deadline_removed",
    ]
    again = cli("calendar", "remove", late_id)
    assert again.code == 2 and "removed already" in again.err
