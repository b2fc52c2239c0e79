"""Engagements and evidence requests are their ledger events: the fold applies the rules
again (forged steps count for nothing), the SLA is judged from them, and the control
``audit.requests_within_sla`` fails every request that missed its due date, by id."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tests.unit.policy.test_rules import POLICY, healthy

from affidavit.models.audit import RequestState, fold, sla_status
from affidavit.models.ledger import Event
from affidavit.policy.rules import Status, evaluate

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
AUDITOR, OWNER = "acc-auditor", "acc-owner"


class Ledger:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, action: str, subject: str, actor: str, at: datetime, **details: Any) -> Event:
        event = Event(seq=len(self.events), time=at.isoformat(), actor=actor, action=action,
                      subject=subject, details={**details, "at": at.isoformat()})  # fmt: skip
        self.events.append(event)
        return event


def _engagement(ledger: Ledger) -> None:
    ledger.add("audit.opened", "audit:ae-1", "admin", T0, framework="soc2",
               window={"from": "2026-07-01T00:00:00+00:00", "to": "2026-10-01T00:00:00+00:00"},
               expires_at=(T0 + timedelta(days=30)).isoformat(), auditor="auditor",
               auditor_id=AUDITOR, by_id="acc-admin")  # fmt: skip


def _request(ledger: Ledger, rid: str, due: date, at: datetime = T0) -> None:
    ledger.add("audit.request_opened", f"audit-request:{rid}", "auditor", at, engagement="ae-1",
               title=f"request {rid}", due=due.isoformat(), items=[], by_id=AUDITOR)  # fmt: skip


def _step(ledger: Ledger, action: str, rid: str, by: str, at: datetime, **d: Any) -> None:
    name = "auditor" if by == AUDITOR else "owner"
    ledger.add(action, f"audit-request:{rid}", name, at, by_id=by, **d)


def test_the_workflow_folds_back_and_forged_steps_count_for_nothing() -> None:
    ledger = Ledger()
    _engagement(ledger)
    _request(ledger, "r1", date(2026, 11, 5))
    at = T0 + timedelta(hours=1)
    _step(ledger, "audit.request_answered", "r1", AUDITOR, at, submit=True)  # the auditor
    _step(ledger, "audit.request_accepted", "r1", OWNER, at)  # not the auditor, and too soon
    _step(ledger, "audit.request_answered", "r1", OWNER, at, submit=True, artifacts=[])
    _step(ledger, "audit.request_accepted", "r1", OWNER, at)  # the owner judging itself
    _step(ledger, "audit.request_accepted", "r1", AUDITOR, at)
    _step(ledger, "audit.request_closed", "r1", AUDITOR, at)
    _step(ledger, "audit.request_message", "r1", OWNER, at, text="after the close")
    _step(ledger, "audit.request_answered", "r2", OWNER, at, submit=True)  # names no request
    folded = fold(reversed(ledger.events))  # any order
    request = folded.requests["r1"]
    assert request.state is RequestState.CLOSED
    assert [t.kind for t in request.thread] == ["submit", "accept", "close"]
    assert len(request.problems) == 4, request.problems
    assert folded.orphans == ("audit.request_answered #9 names no evidence request",)
    # a request raised by someone else than the auditor, or after the expiry, is no request
    _request(ledger, "r3", date(2026, 11, 5))
    ledger.events[-1] = replace(ledger.events[-1], details={**ledger.events[-1].details,
                                                            "by_id": OWNER})  # fmt: skip
    _request(ledger, "r4", date(2026, 12, 30), at=T0 + timedelta(days=31))
    folded = fold(ledger.events)
    assert "r3" not in folded.requests
    assert "r4" not in folded.requests
    assert folded.engagements["ae-1"].state(T0 + timedelta(days=31)).value == "expired"


def test_the_sla_and_its_control() -> None:
    ledger = Ledger()
    _engagement(ledger)
    due = date(2026, 11, 5)
    for rid in ("in-time", "late", "waiting", "returned", "future"):
        _request(ledger, rid, due if rid != "future" else date(2026, 11, 20))
    on_time = datetime(2026, 11, 5, 23, 0, tzinfo=UTC)
    _step(ledger, "audit.request_answered", "in-time", OWNER, on_time, submit=True)
    _step(ledger, "audit.request_answered", "late", OWNER, on_time + timedelta(hours=2),
          submit=True)  # fmt: skip
    _step(ledger, "audit.request_answered", "returned", OWNER, on_time, submit=True)
    _step(ledger, "audit.request_returned", "returned", AUDITOR, on_time, text="not it")
    now = datetime(2026, 11, 8, tzinfo=UTC)
    requests = fold(ledger.events).requests
    assert sla_status(requests["in-time"], now)[0] is True
    assert sla_status(requests["late"], now)[0] is False
    assert sla_status(requests["waiting"], now)[0] is False
    assert "overdue" in sla_status(requests["waiting"], now)[1]
    assert sla_status(requests["returned"], now)[0] is False
    assert sla_status(requests["future"], now)[0] is None
    facts = replace(healthy(), now=now, audit_requests=tuple(requests.values()))
    results = [r for r in evaluate(facts, POLICY) if r.control == "audit.requests_within_sla"]
    by_subject = {r.subject: r.status for r in results}
    assert by_subject == {
        "audit-request:in-time": Status.PASS,
        "audit-request:late": Status.FAIL,
        "audit-request:waiting": Status.FAIL,
        "audit-request:returned": Status.FAIL,
    }
    none = [r for r in evaluate(healthy(), POLICY) if r.control == "audit.requests_within_sla"]
    assert [r.status for r in none] == [Status.NOT_APPLICABLE]
