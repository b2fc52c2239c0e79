"""Control adherence over time over a real home (SQLite catalog and ledger): a day's cell is
the day's last policy check the ledger vouches for; a check whose stored results were edited
is passed over (the day falls back to an earlier vouched check); the reads are bounded and a
vouched check is summarised once."""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from affidavit.config import load_settings
from affidavit.errors import InputError, NotFound
from affidavit.services import adherence
from affidavit.services import policy as policies
from affidavit.services.context import App, open_app

POLICY = (Path(__file__).resolve().parents[1] / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


@pytest.fixture
def approved(app: App, home: Path) -> App:
    version = policies.propose_policy_text(app, POLICY, name="policy.toml")
    with open_app(load_settings(home=home, overrides={"actor": "bob"})) as other:
        policies.approve_policy(other, version.version)
    return app


@pytest.fixture
def statements(app: App) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = app.catalog._engine  # type: ignore[attr-defined]

    def note(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine, "before_cursor_execute", note)


def _edit_results(home: Path, run_id: str) -> None:
    """Flip every stored result of the run to ``pass`` behind affidavit's back."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (text,) = db.execute("SELECT results FROM check_runs WHERE id = ?", (run_id,)).fetchone()
        results = [{**r, "status": "pass"} for r in json.loads(text)]
        db.execute("UPDATE check_runs SET results = ? WHERE id = ?", (json.dumps(results), run_id))


def test_no_check_no_cells(app: App) -> None:
    found = adherence.control_adherence(app, days=7)
    assert len(found.days) == 7 and found.days[-1] == datetime.now(UTC).date()
    assert found.cells == {} and found.controls == () and found.vouched == 0


def test_a_days_cell_is_its_last_vouched_check(approved: App, home: Path) -> None:
    first = policies.check_policy(approved, live=False)
    second = policies.check_policy(approved, live=False)
    today = datetime.now(UTC).date()
    found = adherence.control_adherence(approved, days=30)
    assert found.vouched == 1 and found.unvouched == 0
    assert found.days[-1] == today and len(found.days) == 30
    cells = {c: found.cells[(c, today)] for c, _ in found.controls}
    assert {cell.run_id for cell in cells.values()} == {second.run_id}
    expected: dict[str, dict[str, int]] = {}
    for r in second.results:
        per = expected.setdefault(r.control, {})
        per[r.status.value] = per.get(r.status.value, 0) + 1
    assert {c: dict(cell.counts) for c, cell in cells.items()} == expected
    failing = {r.control for r in second.results if r.failed}
    assert failing  # the sample policy fails something on an empty home
    assert {c for c, cell in cells.items() if cell.state == "fail"} == failing
    assert all(found.totals(c) == {cells[c].state: 1} for c in cells)
    assert dict(found.controls)["backup.encrypted"]  # titles from the controls catalog

    # the newest check's stored results edited: it is passed over, the first one counts
    _edit_results(home, second.run_id)
    edited = adherence.control_adherence(approved, days=30)
    assert edited.unvouched == 1 and edited.vouched == 1
    assert {edited.cells[(c, today)].run_id for c, _ in edited.controls} == {first.run_id}
    assert adherence.check_results(approved, second.run_id).vouched is False
    assert adherence.check_results(approved, first.run_id).vouched is True
    # ... and when both are edited, the day has no cell
    _edit_results(home, first.run_id)
    assert adherence.control_adherence(approved, days=30).cells == {}


def test_a_check_is_read_each_time_and_summarised_once(
    approved: App, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policies.check_policy(approved, live=False)
    summarised: list[int] = []
    real = adherence._summary

    def counting(results: list[dict[str, object]]) -> dict[str, dict[str, int]]:
        summarised.append(len(results))
        return real(results)

    monkeypatch.setattr(adherence, "_summary", counting)
    monkeypatch.setattr(adherence, "_memo", OrderedDict())  # other tests' checks look alike
    statements.clear()
    adherence.control_adherence(approved, days=90)
    cold = list(statements)
    statements.clear()
    adherence.control_adherence(approved, days=90)
    warm = list(statements)
    assert len(summarised) == 1  # the second view used the memo
    assert len(cold) == len(warm) <= 4
    assert sum("check_runs" in s for s in warm) == 1  # still read: an edit shows at once
    policies.check_policy(approved, live=False)  # more records: no more statements
    statements.clear()
    adherence.control_adherence(approved, days=90)
    assert len(statements) == len(warm) and len(summarised) == 2


def test_bad_input(app: App) -> None:
    with pytest.raises(InputError):
        adherence.control_adherence(app, days=0)
    with pytest.raises(InputError):
        adherence.control_adherence(app, days=adherence.MAX_DAYS + 1)
    with pytest.raises(NotFound):
        adherence.check_results(app, "chk-nonesuch")


def test_yesterdays_check_is_yesterdays_column(approved: App) -> None:
    """The day is the event's signed time: a check recorded now is today's, whatever
    ``now`` a caller passes for the window."""
    policies.check_policy(approved, live=False)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    found = adherence.control_adherence(approved, days=2, now=tomorrow)
    today = datetime.now(UTC).date()
    assert found.days == (today, tomorrow.date())
    assert {day for _, day in found.cells} == {today}
