"""Multi-party approval, attacked: self-approval, a second account of the same person, service
accounts and tokens, stale MFA, the wrong role, counting one person twice, vetoed, expired and
replayed requests, executing someone else's request, and steps the rules forbid written into
the ledger. Each refusal leaves the catalog and the ledger as they were. The clock is
injected; the catalog is the real SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.identity.homes import build_template, copied
from tests.unit.identity.test_attacks import CLIENT, T0, code, db, events, make_world

from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalPending,
    InputError,
    IntegrityError,
    StepUpRequired,
)
from affidavit.models.approval import (
    DEFAULT_RULES,
    ApprovalRule,
    GatedOperation,
    RequestState,
    fold,
)
from affidavit.models.identity import AccountKind, Principal
from affidavit.models.ledger import Event
from affidavit.models.permissions import Permission, Role
from affidavit.services import gated, requests, roles
from affidavit.services import identity as idn
from affidavit.services.context import App

PW = "a long passphrase 42"


@dataclass
class People:
    """alice and carol: administrators; dave, erin and gina: security officers; frank: approver;
    bob: operator (no TOTP); ci-bot: a service account (operator, with a token). Everyone but
    bob and ci-bot has TOTP enrolled. ``t`` is a clock that moves on by a time step per use."""

    app: App
    home: Path
    secrets: dict[str, str]
    t: int = 0

    def at(self) -> timedelta:
        self.t += 1
        return timedelta(minutes=10, seconds=31 * self.t)

    def login(self, name: str, extra: timedelta = timedelta(0)) -> Principal:
        """A fresh login (MFA now) of ``name``, at the next step (+ ``extra``)."""
        at = T0 + self.at() + extra
        password = "admin passphrase 1" if name == "alice" else PW
        return idn.login(
            self.app, name, password, code(self.secrets[name], at), client=CLIENT, now=at
        ).principal


def ledger_size(home: Path) -> int:
    with db(home) as con:
        return int(con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _enrol(app: App, name: str, at: object) -> str:
    first = idn.login(app, name, PW, client=CLIENT, now=at)  # type: ignore[arg-type]
    enrolment = idn.begin_totp(app, first.principal, name, now=at)  # type: ignore[arg-type]
    idn.confirm_totp(app, first.principal, name, code(enrolment.secret, at), now=at)  # type: ignore[arg-type]
    idn.logout(app, first.principal)
    return enrolment.secret


def _build(app: App, home: Path) -> dict[str, str]:
    world = make_world(app, home)
    at = T0 + timedelta(seconds=61)
    idn.create_account(app, world.admin, "ci-bot", kind=AccountKind.SERVICE, now=at)
    roles.grant_role(app, world.admin, "ci-bot", Role.OPERATOR, now=at)
    for name, role in (  # carol last: until then alice is the only administrator
        ("dave", Role.SECURITY_OFFICER),
        ("erin", Role.SECURITY_OFFICER),
        ("gina", Role.SECURITY_OFFICER),
        ("frank", Role.APPROVER),
        ("carol", Role.ADMIN),  # she may not approve her own grant: waived too
    ):
        idn.create_account(app, world.admin, name, password=PW, now=at)
        roles.grant_role(app, world.admin, name, role, now=at)  # alone: waived
    secrets = {"alice": world.secret}
    for name in ("carol", "dave", "erin", "gina", "frank"):
        secrets[name] = _enrol(app, name, at)
    return secrets


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "approvals", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]))


def _ask_grant(p: People, requester: Principal, name: str = "bob") -> str:
    with pytest.raises(ApprovalPending) as pending:
        roles.grant_role(p.app, requester, name, Role.VIEWER, now=requester.mfa_at)
    return str(pending.value.request["id"])


def _state(p: People, request_id: str, principal: Principal) -> RequestState:
    request = requests.get_request(p.app, principal, request_id)
    assert principal.mfa_at is not None
    return request.state(principal.mfa_at)


def test_the_waivers_while_setting_up_were_recorded(people: People) -> None:
    """Before a second administrator could approve, the grants ran with the waiver on
    record (loud, never silent)."""
    waived = events(people.home, "approval.waived")
    assert [e["details"]["operation"] for e in waived][:2] == ["role.grant", "role.grant"]
    assert "0 could approve" in waived[0]["details"]["waiver"]
    granted = [e for e in events(people.home, "role.granted") if e["subject"] == "account:carol"]
    assert granted[0]["details"]["approval"]["standing"] == "waived"


def test_a_grant_waits_for_another_admin_then_the_requester_executes_it(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    with db(people.home) as con:
        assert con.execute(
            "SELECT count(*) FROM role_grants g JOIN accounts a ON a.id = g.account_id "
            "WHERE a.name = 'bob' AND g.role = 'viewer'"
        ).fetchone() == (0,)
    carol = people.login("carol")
    approved = requests.approve(people.app, carol, request_id, note="ok", now=carol.mfa_at)
    assert approved.state(carol.mfa_at) is RequestState.APPROVED  # type: ignore[arg-type]
    alice = people.login("alice")
    done = gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert done.result["role"] == "viewer"
    assert done.request.state(alice.mfa_at) is RequestState.EXECUTED  # type: ignore[arg-type]
    assert Role.VIEWER in roles.roles_of(people.app, alice, "bob")
    granted = events(people.home, "role.granted")[-1]
    assert granted["details"]["approval"] == {"standing": "approved", "request": request_id}
    executed = events(people.home, "request.executed")
    assert [e["subject"] for e in executed] == [f"request:{request_id}"]
    assert executed[0]["actor"] == "alice"


def test_nobody_approves_their_own_request_and_nothing_changes(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="their own request"):
        requests.approve(people.app, alice, request_id, now=alice.mfa_at)
    with pytest.raises(AccessDenied, match="their own request"):
        requests.veto(people.app, alice, request_id, reason="no", now=alice.mfa_at)
    assert ledger_size(people.home) == size
    assert _state(people, request_id, alice) is RequestState.PENDING


def test_a_second_account_of_the_same_oidc_subject_cannot_approve(people: People) -> None:
    """carol's account and alice's are linked to the same subject of one identity provider:
    one person, two accounts. carol's approval of alice's request is refused, and carol
    does not count as an approver who could (so the request waits for nobody else)."""
    with db(people.home) as con:
        con.execute(
            "UPDATE accounts SET oidc_issuer = 'https://idp.example', oidc_subject = 'u-1' "
            "WHERE name IN ('alice', 'carol')"
        )
    alice = people.login("alice")
    # no other administrator than the same person: the grant runs with a waiver
    roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    assert "0 could approve" in events(people.home, "approval.waived")[-1]["details"]["waiver"]
    # a request created while carol was separate cannot be approved once linked
    with db(people.home) as con:
        con.execute("UPDATE accounts SET oidc_subject = NULL WHERE name = 'carol'")
    alice = people.login("alice")
    request_id = _ask_grant(people, alice, "frank")
    with db(people.home) as con:
        con.execute("UPDATE accounts SET oidc_subject = 'u-1' WHERE name = 'carol'")
    carol = people.login("carol")
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="second account"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert ledger_size(people.home) == size


def test_service_accounts_and_tokens_never_approve(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    bot = Principal(
        name="ci-bot",
        kind=AccountKind.SERVICE,
        method=idn.AuthMethod.TOKEN,
        account_id="x",
        roles=frozenset({Role.ADMIN}),
        permissions=frozenset({Permission.REQUEST_APPROVE}),
        mfa_at=alice.mfa_at,
    )
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="only a person"):
        requests.approve(people.app, bot, request_id, now=alice.mfa_at)
    assert ledger_size(people.home) == size


def test_approving_needs_a_fresh_mfa_check(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol")
    assert carol.mfa_at is not None
    with pytest.raises(StepUpRequired):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at + timedelta(minutes=6))
    assert _state(people, request_id, carol) is RequestState.PENDING


def test_an_approver_of_another_role_cannot_approve(people: People) -> None:
    """A role grant needs another administrator: a security officer or an approver (who may
    approve other operations) is refused."""
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    for name in ("dave", "frank"):
        who = people.login(name)
        with pytest.raises(AccessDenied, match="takes the role admin"):
            requests.approve(people.app, who, request_id, now=who.mfa_at)
    bob = Principal(
        name="bob", kind=AccountKind.HUMAN, method=idn.AuthMethod.PASSWORD, account_id="b"
    )
    with pytest.raises(AccessDenied):  # no request.approve at all
        requests.approve(people.app, bob, request_id, now=alice.mfa_at)


def _change_rule(p: People, rule: ApprovalRule) -> None:
    alice = p.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        requests.rule_change(p.app, alice, rule, reason="two eyes more", now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    carol = p.login("carol")
    requests.approve(p.app, carol, request_id, now=carol.mfa_at)
    alice = p.login("alice")
    gated.execute(p.app, alice, request_id, now=alice.mfa_at)


def test_each_person_counts_once(people: People) -> None:
    rule = ApprovalRule(
        operation=GatedOperation.HOLD_RELEASE,
        approvers=2,
        role=Role.SECURITY_OFFICER,
        approval_window=timedelta(hours=24),
        execution_window=timedelta(hours=24),
    )
    _change_rule(people, rule)
    alice = people.login("alice")
    listed = {r.operation: r for r in requests.list_rules(people.app, alice)}
    assert listed[GatedOperation.HOLD_RELEASE].approvers == 2
    # the gate itself: erin asks; dave approves once, then again (refused), still pending
    erin = people.login("erin")
    with pytest.raises(ApprovalPending) as pending:
        requests.gate(
            people.app,
            GatedOperation.HOLD_RELEASE,
            {"backup_id": "bk-1", "case_id": "c", "reason": "r"},
            target="backup:bk-1",
            principal=erin,
            now=erin.mfa_at,
        )
    request_id = str(pending.value.request["id"])
    dave = people.login("dave")
    requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    dave = people.login("dave")
    with pytest.raises(AccessDenied, match="counts once"):
        requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    assert _state(people, request_id, dave) is RequestState.PENDING


def test_a_vetoed_request_is_never_executed(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol")
    with pytest.raises(InputError, match="needs a reason"):
        requests.veto(people.app, carol, request_id, reason=" ", now=carol.mfa_at)
    requests.veto(people.app, carol, request_id, reason="bob needs no access", now=carol.mfa_at)
    alice = people.login("alice")
    carol = people.login("carol")
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="vetoed"):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    with pytest.raises(AccessDenied, match="vetoed"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert ledger_size(people.home) == size
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_expiry_rejects_and_is_recorded_once(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol", extra=timedelta(hours=25))
    with pytest.raises(AccessDenied, match="expired"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert [e["subject"] for e in events(people.home, "request.expired")] == [
        f"request:{request_id}"
    ]
    carol = people.login("carol", extra=timedelta(hours=26))
    with pytest.raises(AccessDenied, match="expired"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert len(events(people.home, "request.expired")) == 1
    assert _state(people, request_id, carol) is RequestState.EXPIRED


def test_an_approved_request_not_executed_in_time_expires(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice", extra=timedelta(hours=25))
    with pytest.raises(AccessDenied, match="expired"):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_only_the_requester_executes_and_only_once(people: People) -> None:
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    carol = people.login("carol")
    with pytest.raises(AccessDenied, match=r"only 'alice'"):
        gated.execute(people.app, carol, request_id, now=carol.mfa_at)
    with pytest.raises(AccessDenied, match=r"only 'alice'"):
        requests.cancel(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="executed"):  # a replay
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert ledger_size(people.home) == size


def test_an_authority_for_one_operation_does_not_open_another(people: People) -> None:
    """The authority an approved request gives is for its parameters only: handing it to
    another grant is refused, and an authority whose request is not approved is refused
    under the writer lock (rolling the operation back)."""
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    _, authority = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    with pytest.raises(AccessDenied, match=r"another role\.grant"):
        roles.grant_role(people.app, alice, "frank", Role.VIEWER, authority=authority,
                         now=alice.mfa_at)  # fmt: skip
    requests.cancel(people.app, alice, request_id, now=alice.mfa_at)
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="cancelled"):
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, authority=authority,
                         now=alice.mfa_at)  # fmt: skip
    assert ledger_size(people.home) == size
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_the_people_a_grant_or_a_backup_concerns_may_not_approve(people: People) -> None:
    """The account a grant is for never approves it; whoever started or completed a backup
    never approves its deletion, hold release or key export."""
    alice = people.login("alice")
    # carol, the only other administrator, is who the grant is for: nobody could approve it
    roles.grant_role(people.app, alice, "carol", Role.VIEWER, now=alice.mfa_at)
    waived = events(people.home, "approval.waived")[-1]
    assert (waived["subject"], "0 could approve" in waived["details"]["waiver"]) == (
        "account:carol",
        True,
    )
    with people.app.change() as change:
        change.actor = "dave"
        change.record("backup.started", "backup:bk-7", {})
    with people.app.read() as uow:
        excluded = requests.excluded_approvers(
            uow, GatedOperation.BACKUP_DELETE, {"backup_id": "bk-7", "reason": "r"}
        )
    assert excluded == frozenset({"dave"})
    erin = people.login("erin")
    with pytest.raises(ApprovalPending) as pending:
        requests.gate(
            people.app,
            GatedOperation.BACKUP_DELETE,
            {"backup_id": "bk-7", "reason": "r"},
            target="backup:bk-7",
            principal=erin,
            now=erin.mfa_at,
        )
    dave = people.login("dave")
    with pytest.raises(AccessDenied, match="concerns them"):
        requests.approve(people.app, dave, str(pending.value.request["id"]), now=dave.mfa_at)


def test_a_lone_approver_who_made_the_backup_leaves_a_waiver(people: People) -> None:
    """dave started bk-8 and gina completed it; erin asks to delete it: the two other security
    officers may not approve, so the operation would run on a recorded waiver."""
    with people.app.change() as change:
        change.actor = "dave"
        change.record("backup.started", "backup:bk-8", {})
    with people.app.change() as change:
        change.actor = "gina"
        change.record("backup.completed", "backup:bk-8", {})
    erin = people.login("erin")
    allowed = requests.gate(
        people.app,
        GatedOperation.BACKUP_DELETE,
        {"backup_id": "bk-8", "reason": "r"},
        target="backup:bk-8",
        principal=erin,
        now=erin.mfa_at,
    )
    assert allowed.standing is requests.Standing.WAIVED
    assert allowed.waiver is not None and "0 could approve" in allowed.waiver


def test_local_mode_is_not_gated_and_says_so(people: People) -> None:
    allowed = requests.gate(
        people.app,
        GatedOperation.BACKUP_DELETE,
        {"backup_id": "bk-1", "reason": "r"},
        target="backup:bk-1",
    )
    assert allowed.standing is requests.Standing.LOCAL
    assert allowed.event_details() == {}


def test_the_rule_for_rule_changes_always_keeps_an_approver() -> None:
    with pytest.raises(InputError, match="at least one approver"):
        ApprovalRule(
            operation=GatedOperation.RULE_CHANGE,
            approvers=0,
            role=Role.ADMIN,
            approval_window=timedelta(hours=1),
            execution_window=timedelta(hours=1),
        )
    with pytest.raises(InputError, match="approves nothing"):
        ApprovalRule(
            operation=GatedOperation.BACKUP_DELETE,
            approvers=1,
            role=Role.AUDITOR,
            approval_window=timedelta(hours=1),
            execution_window=timedelta(hours=1),
        )
    assert set(DEFAULT_RULES) == set(GatedOperation) == set(gated.RUNNERS)


def _event(seq: int, action: str, actor: str, details: dict[str, object]) -> Event:
    return Event(
        seq=seq,
        time=(T0 + timedelta(minutes=seq)).isoformat().replace("+00:00", "Z"),
        actor=actor,
        action=action,
        subject="request:rq-1",
        details=details,
    )


def test_steps_the_rules_forbid_count_for_nothing_even_in_the_ledger() -> None:
    """Events written by something other than the services (a ledger holding them fails
    ``ledger verify``; here they are handed to the fold directly): the requester's own
    approval, a second approval by the same account, an approval after the window, and a
    step of a request never created, are listed and not counted."""
    rule = DEFAULT_RULES[GatedOperation.ROLE_GRANT].to_json()
    created = {
        "operation": "role.grant",
        "target": "account:bob",
        "params": {"account": "bob", "role": "viewer"},
        "params_sha256": "0" * 64,
        "requester_id": "a-1",
        "rule": {**rule, "approvers": 2},
        "excluded": ["bob"],
    }
    folded = fold(
        [
            _event(1, "request.created", "alice", created),
            _event(2, "request.approved", "alice", {"account_id": "a-1"}),
            _event(3, "request.approved", "bob", {"account_id": "b-1"}),
            _event(4, "request.approved", "carol", {"account_id": "c-1"}),
            _event(5, "request.approved", "carol", {"account_id": "c-1"}),
            _event(6, "request.executed", "alice", {"account_id": "a-1"}),
            _event(
                7, "request.approved", "dave", {"account_id": "d-1", "at": "2026-12-09T00:00:00Z"}
            ),
            Event(
                seq=8,
                time="2026-12-01T13:00:00Z",
                actor="x",
                action="request.approved",
                subject="request:rq-none",
            ),
        ]
    )
    request = folded.requests["rq-1"]
    assert [a.name for a in request.approvals] == ["carol"]
    assert len(request.problems) == 5
    assert request.state(T0 + timedelta(hours=1)) is RequestState.PENDING
    assert folded.orphans == ("request.approved #8 names no request",)


def test_no_catalog_edit_makes_an_approval(people: People) -> None:
    """A request is its ledger events: there is no row to edit into an approved state, and
    editing a request.created entry's bytes breaks the ledger (``ledger verify``)."""
    alice = people.login("alice")
    request_id = _ask_grant(people, alice)
    with db(people.home) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any("request" in t for t in tables)
    with db(people.home) as con:
        con.execute(
            "UPDATE ledger_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), "
            "'\"approvers\":1', '\"approvers\":0') AS BLOB) WHERE action = 'request.created'"
        )
    alice = people.login("alice")
    with pytest.raises(IntegrityError, match="does not verify"):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_a_subject_once_linked_elsewhere_is_never_linked_again(people: People) -> None:
    """alice was linked to a subject through affidavit (ledgered); with her link cleared in
    the catalog behind affidavit's back, carol still cannot be linked to it: the ledger
    remembers whose it was."""
    alice = people.login("alice")
    idn.link_oidc(people.app, alice, "alice", issuer="https://idp.example", subject="u-7",
                  now=alice.mfa_at)  # fmt: skip
    with db(people.home) as con:
        con.execute("UPDATE accounts SET oidc_subject = NULL, oidc_issuer = NULL")
    size = ledger_size(people.home)
    with pytest.raises(AlreadyExists, match="linked to another account before"):
        idn.link_oidc(people.app, alice, "carol", issuer="https://idp.example", subject="u-7",
                      now=alice.mfa_at)  # fmt: skip
    assert ledger_size(people.home) == size
