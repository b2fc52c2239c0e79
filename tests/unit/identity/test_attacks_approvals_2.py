"""Adversarial review of multi-party approval, second round: attempts that
test_attacks_approvals does not make.

The world is test_approvals' (alice and carol: the only two administrators; dave, erin,
gina: security officers; frank: approver; bob: operator). A test that passes is an attack
that was refused. A test marked ``xfail(strict=True)`` is an attack that worked: it asserts
what the docs promise, which the code does not deliver yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.unit.identity.homes import build_template, copied
from tests.unit.identity.test_approvals import PW, People, _build, ledger_size
from tests.unit.identity.test_attacks import CLIENT, T0, code, db

from affidavit.errors import AccessDenied, ApprovalPending, Error, InputError, NotFound
from affidavit.models.approval import ApprovalRule, GatedOperation, RequestState
from affidavit.models.identity import Principal
from affidavit.models.permissions import Role
from affidavit.server.routes.requests import RuleChange
from affidavit.services import access_reviews, gated, principals, requests, roles
from affidavit.services import identity as idn
from affidavit.services.backup import retention

DAY = timedelta(hours=24)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "approval-attacks-2", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]))


# -- helpers ---------------------------------------------------------------------------------


def _session(p: People, name: str) -> tuple[str, Principal]:
    """A fresh login of ``name`` at the next step: its session secret and principal."""
    at = T0 + p.at()
    password = "admin passphrase 1" if name == "alice" else PW
    grant = idn.login(p.app, name, password, code(p.secrets[name], at), client=CLIENT, now=at)
    return grant.secret, grant.principal


def _pending(call: object) -> str:
    with pytest.raises(ApprovalPending) as pending:
        call()  # type: ignore[operator]
    return str(pending.value.request["id"])


def _ask_hold_release(p: People, who: Principal, backup_id: str = "bk-1") -> str:
    return _pending(
        lambda: requests.gate(
            p.app,
            GatedOperation.HOLD_RELEASE,
            {"backup_id": backup_id, "case_id": "C-1", "reason": "case closed"},
            target=f"backup:{backup_id}",
            principal=who,
            now=who.mfa_at,
        )
    )


def _state(p: People, request_id: str, at: datetime | None) -> RequestState:
    alice = p.login("alice")
    assert at is not None
    return requests.get_request(p.app, alice, request_id).state(at)


def _approved_run(p: People, requester: str, approver: str, call: object) -> None:
    """``requester`` asks (``call(principal)``), ``approver`` approves, ``requester``
    executes."""
    who = p.login(requester)
    request_id = _pending(lambda: call(who))  # type: ignore[operator]
    judge = p.login(approver)
    requests.approve(p.app, judge, request_id, now=judge.mfa_at)
    who = p.login(requester)
    gated.execute(p.app, who, request_id, now=who.mfa_at)


def _revoke(p: People, name: str, role: Role) -> None:
    """alice revokes ``role`` from ``name``, carol approving."""
    _approved_run(
        p, "alice", "carol", lambda a: roles.revoke_role(p.app, a, name, role, now=a.mfa_at)
    )


def _rule(op: GatedOperation, approvers: int, role: Role) -> ApprovalRule:
    return ApprovalRule(
        operation=op, approvers=approvers, role=role, approval_window=DAY, execution_window=DAY
    )


def _change_rule(p: People, rule: ApprovalRule) -> None:
    _approved_run(
        p,
        "alice",
        "carol",
        lambda a: requests.rule_change(p.app, a, rule, reason="stricter", now=a.mfa_at),
    )


def _backup_row(p: People, backup_id: str) -> None:
    """A backup row in the catalog (holds need one); no ledger event concerns it."""
    with db(p.home) as con:
        con.execute(
            "INSERT INTO backups (id, source, vault, kind, format, status, started_at, "
            "retain_until) VALUES (?, NULL, 'v1', 'run', 'x', 'complete', "
            "'2026-12-01 12:00:00.000000', '2026-12-02 12:00:00.000000')",
            (backup_id,),
        )


def _active_holds(p: People, backup_id: str) -> list[str]:
    return [h.case_id for h in retention.list_holds(p.app, backup_id, active_only=True)]


# -- REFUSED attacks (these pass) ------------------------------------------------------------


def test_an_authority_taken_before_a_cancel_is_not_replayed_after_it(people: People) -> None:
    """alice holds the authority of her approved request, cancels the request (so the
    approver stops watching it), then runs the operation with the old authority."""
    alice = people.login("alice")
    request_id = _pending(
        lambda: roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    )
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    _, authority = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    requests.cancel(people.app, alice, request_id, reason="never mind", now=alice.mfa_at)
    carol = people.login("carol")
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="cancelled"):
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, authority=authority,
                         now=alice.mfa_at)  # fmt: skip
    with pytest.raises(AccessDenied, match="cancelled"):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    with pytest.raises(AccessDenied, match="cancelled"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert ledger_size(people.home) == size
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_a_requester_whose_role_was_revoked_after_approval_cannot_execute(
    people: People,
) -> None:
    """erin's hold release is approved by dave; then erin loses security_officer; her next
    session no longer executes it."""
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    dave = people.login("dave")
    requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    _revoke(people, "erin", Role.SECURITY_OFFICER)
    erin = people.login("erin")
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied):
        gated.execute(people.app, erin, request_id, now=erin.mfa_at)
    assert ledger_size(people.home) == size
    assert _state(people, request_id, erin.mfa_at) is RequestState.APPROVED


def test_a_session_opened_before_the_approvers_role_was_revoked_cannot_approve(
    people: People,
) -> None:
    """dave logs in (with MFA) while a security officer; his role is revoked; his still-open
    session tries to approve erin's hold release."""
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    secret, dave = _session(people, "dave")
    _revoke(people, "dave", Role.SECURITY_OFFICER)
    assert dave.mfa_at is not None
    at = dave.mfa_at + timedelta(minutes=3)  # within the step-up window
    stale = idn.authenticate_session(people.app, secret, now=at)
    assert Role.SECURITY_OFFICER not in stale.roles
    with pytest.raises(AccessDenied):
        requests.approve(people.app, stale, request_id, now=at)
    with pytest.raises(AccessDenied):
        requests.veto(people.app, stale, request_id, reason="spite", now=at)
    assert _state(people, request_id, at) is RequestState.PENDING


def test_the_account_a_revocation_concerns_cannot_veto_it(people: People) -> None:
    """carol may not approve her own revocation; neither may she kill it with a veto."""
    alice = people.login("alice")
    request_id = _pending(
        lambda: roles.revoke_role(people.app, alice, "carol", Role.ADMIN, now=alice.mfa_at)
    )
    carol = people.login("carol")
    with pytest.raises(AccessDenied, match="concerns them"):
        requests.veto(people.app, carol, request_id, reason="no", now=carol.mfa_at)
    assert _state(people, request_id, carol.mfa_at) is RequestState.PENDING


def test_who_made_a_backup_cannot_veto_its_hold_release(people: People) -> None:
    with people.app.change() as change:
        change.actor = "dave"
        change.record("backup.started", "backup:bk-1", {})
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    dave = people.login("dave")
    with pytest.raises(AccessDenied, match="concerns them"):
        requests.veto(people.app, dave, request_id, reason="mine", now=dave.mfa_at)
    assert _state(people, request_id, dave.mfa_at) is RequestState.PENDING


def test_an_approved_release_of_a_hold_released_meanwhile_is_refused(people: People) -> None:
    """The hold is released by other means before erin executes: the release is refused,
    nothing is recorded, and the request stays approved (as the docs say)."""
    _backup_row(people, "bk-1")
    retention.add_hold(people.app, "bk-1", case_id="C-1", reason="litigation")
    erin = people.login("erin")
    with people.app.acting_as(erin):
        request_id = _pending(
            lambda: retention.release_hold(people.app, "bk-1", case_id="C-1", reason="case closed")
        )
    dave = people.login("dave")
    requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    retention.release_hold(people.app, "bk-1", case_id="C-1", reason="closed locally")
    erin = people.login("erin")
    size = ledger_size(people.home)
    with pytest.raises(NotFound):
        gated.execute(people.app, erin, request_id, now=erin.mfa_at)
    assert ledger_size(people.home) == size
    assert _state(people, request_id, erin.mfa_at) is RequestState.APPROVED


def test_hostile_rule_bodies_are_refused_or_coerced_to_plain_integers() -> None:
    """POST /approval-rules bodies: huge, fractional, negative and out-of-range numbers are
    refused; JSON booleans become the integers 0/1 (never a bool that later reads as a
    different value); extra fields are refused; 0 approvers for rule changes, and a role that
    approves nothing, are refused when the rule is built."""
    base = (
        '{"operation": "%s", "approvers": %s, "role": "%s", '
        '"approval_window_s": %s, "execution_window_s": 300%s}'
    )
    for op, n, role, window, extra in (
        ("backup.delete", "1", "admin", "1e30", ""),
        ("backup.delete", "1", "admin", str(10**20), ""),
        ("backup.delete", "1", "admin", "299", ""),
        ("backup.delete", "1", "admin", "300.5", ""),
        ("backup.delete", "6", "admin", "300", ""),
        ("backup.delete", "-1", "admin", "300", ""),
        ("backup.delete", "1", "admin", "300", ', "standing": "approved"'),
        ("backup.delete", "1", "admin", "null", ""),
        ("nothing.gated", "1", "admin", "300", ""),
    ):
        with pytest.raises(ValidationError):
            RuleChange.model_validate_json(base % (op, n, role, window, extra))
    body = RuleChange.model_validate_json(base % ("backup.delete", "true", "admin", "300", ""))
    assert type(body.approvers) is int and body.approvers == 1
    zero = RuleChange.model_validate_json(
        base % ("approval.rule_change", "false", "admin", "300", "")
    )
    assert type(zero.approvers) is int
    with pytest.raises(InputError, match="at least one approver"):
        _rule(GatedOperation.RULE_CHANGE, zero.approvers, Role.ADMIN)
    with pytest.raises(InputError, match="approves nothing"):
        _rule(GatedOperation.BACKUP_DELETE, 1, Role.VIEWER)
    with pytest.raises(TypeError):  # a bool written into the ledger counts for nothing
        ApprovalRule.from_json(
            {
                "operation": "backup.delete",
                "approvers": True,
                "role": "admin",
                "approval_window_s": 300,
                "execution_window_s": 300,
            }
        )


# -- attacks that worked once, refused since (the last one: a known limit, documented) ----------


def test_tightening_a_rule_past_the_headcount_does_not_turn_approval_off(people: People) -> None:
    _change_rule(people, _rule(GatedOperation.BACKUP_DELETE, 5, Role.SECURITY_OFFICER))
    erin = people.login("erin")
    with pytest.raises(ApprovalPending):
        requests.gate(
            people.app,
            GatedOperation.BACKUP_DELETE,
            {"backup_id": "bk-9", "reason": "r"},
            target="backup:bk-9",
            principal=erin,
            now=erin.mfa_at,
        )


def test_one_admin_cannot_turn_approval_off_after_raising_the_rule_change_quorum(
    people: People,
) -> None:
    _change_rule(people, _rule(GatedOperation.RULE_CHANGE, 5, Role.ADMIN))
    alice = people.login("alice")
    zero = ApprovalRule(
        operation=GatedOperation.BACKUP_DELETE,
        approvers=0,
        role=Role.SECURITY_OFFICER,
        approval_window=DAY,
        execution_window=DAY,
    )
    with contextlib.suppress(ApprovalPending, AccessDenied):
        requests.rule_change(people.app, alice, zero, reason="alone", now=alice.mfa_at)
    rules = {r.operation: r for r in requests.list_rules(people.app, alice)}
    assert rules[GatedOperation.BACKUP_DELETE].approvers == 1


def test_the_reviewed_account_cannot_close_the_review_and_drop_its_revocation(
    people: People,
) -> None:
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    access_reviews.decide(
        people.app,
        dave,
        review.id,
        account="carol",
        role=Role.ADMIN,
        verdict="revoke",
        justification="carol has not administered anything in 90 days",
        now=dave.mfa_at,
    )
    carol = people.login("carol")
    try:
        closed = access_reviews.close_review(people.app, carol, review.id, now=carol.mfa_at)
    except AccessDenied:
        return  # refused: the attack failed
    assert closed.closed is not None
    pending = [o.request for o in closed.closed.outcomes if o.request]
    for request_id in pending:
        with contextlib.suppress(AccessDenied):
            requests.cancel(people.app, carol, request_id, now=carol.mfa_at)
        assert _state(people, request_id, carol.mfa_at) is not RequestState.CANCELLED
    assert pending


def test_a_break_glass_account_cannot_approve_an_earlier_request(people: People) -> None:
    alice = people.login("alice")
    request_id = _pending(
        lambda: roles.grant_role(people.app, alice, "bob", Role.ADMIN, now=alice.mfa_at)
    )
    assert alice.mfa_at is not None
    at = alice.mfa_at + timedelta(seconds=5)
    local = principals.local_principal(people.app)
    idn.break_glass(people.app, local, "alice2", PW, reason="every other admin lost TOTP",
                    now=at)  # fmt: skip
    first = idn.login(people.app, "alice2", PW, client=CLIENT, now=at)
    enrolment = idn.begin_totp(people.app, first.principal, "alice2", now=at)
    idn.confirm_totp(people.app, first.principal, "alice2", code(enrolment.secret, at), now=at)
    people.secrets["alice2"] = enrolment.secret
    alice2 = idn.login(
        people.app, "alice2", PW, code(enrolment.secret, at + timedelta(seconds=40)),
        client=CLIENT, now=at + timedelta(seconds=40),
    ).principal  # fmt: skip
    with pytest.raises(AccessDenied):
        requests.approve(people.app, alice2, request_id, now=alice2.mfa_at)


def test_a_stale_release_request_does_not_release_a_new_hold_of_the_same_case(
    people: People,
) -> None:
    _backup_row(people, "bk-1")
    retention.add_hold(people.app, "bk-1", case_id="C-1", reason="litigation")
    erin = people.login("erin")
    with people.app.acting_as(erin):
        request_id = _pending(
            lambda: retention.release_hold(people.app, "bk-1", case_id="C-1", reason="case closed")
        )
    dave = people.login("dave")
    requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    retention.release_hold(people.app, "bk-1", case_id="C-1", reason="closed locally")
    retention.add_hold(people.app, "bk-1", case_id="C-1", reason="case reopened")
    erin = people.login("erin")
    with contextlib.suppress(AccessDenied, NotFound, InputError):
        gated.execute(people.app, erin, request_id, now=erin.mfa_at)
    assert _active_holds(people, "bk-1") == ["C-1"]


def test_a_rule_tightened_while_a_request_waits_supersedes_it(people: People) -> None:
    """A request filed under the old rule (hold.release: 1 approver) before a tightening
    (2 security officers) is approved: it would go through on one approval. The tightening
    supersedes it (cancelled, naming the rule change): no approval or execution counts; the
    requester asks again, under the rule now in force."""
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    _change_rule(people, _rule(GatedOperation.HOLD_RELEASE, 2, Role.SECURITY_OFFICER))
    dave = people.login("dave")
    assert _state(people, request_id, dave.mfa_at) is RequestState.CANCELLED
    shown = requests.get_request(people.app, people.login("alice"), request_id)
    assert shown.superseded is not None
    assert shown.to_json(dave.mfa_at)["superseded_by_rule_change"] == shown.superseded
    with pytest.raises(Error):
        requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    erin = people.login("erin")
    with pytest.raises(Error):
        gated.execute(people.app, erin, request_id, now=erin.mfa_at)
    again = _ask_hold_release(people, erin)
    fresh = requests.get_request(people.app, people.login("alice"), again)
    assert (fresh.rule.approvers, fresh.rule.role) == (2, Role.SECURITY_OFFICER)
    assert fresh.state(erin.mfa_at) is RequestState.PENDING


def test_a_change_of_the_rule_for_rule_changes_supersedes_the_others_not_itself(
    people: People,
) -> None:
    """carol files a rule change; alice then changes the rule for rule changes (carol
    approving): alice's own request executes (it made the change), carol's, filed under the
    replaced rule, is superseded. A change of another operation's rule leaves it alone."""
    carol = people.login("carol")
    other = _pending(
        lambda: requests.rule_change(
            people.app,
            carol,
            _rule(GatedOperation.BACKUP_DELETE, 2, Role.APPROVER),
            reason="two approvers",
            now=carol.mfa_at,
        )
    )
    _change_rule(people, _rule(GatedOperation.HOLD_RELEASE, 2, Role.SECURITY_OFFICER))
    alice = people.login("alice")
    assert _state(people, other, alice.mfa_at) is RequestState.PENDING  # another operation
    _change_rule(
        people,
        ApprovalRule(
            operation=GatedOperation.RULE_CHANGE,
            approvers=1,
            role=Role.ADMIN,
            approval_window=2 * DAY,
            execution_window=DAY,
        ),
    )
    alice = people.login("alice")
    assert _state(people, other, alice.mfa_at) is RequestState.CANCELLED
    executed = [
        r
        for r in requests.list_requests(people.app, alice)
        if r.operation is GatedOperation.RULE_CHANGE and r.id != other
    ]
    assert executed and all(r.state(alice.mfa_at) is RequestState.EXECUTED for r in executed)
