"""Adversarial review of multi-party approval: attempts to get around the gate.

The world is test_approvals' (alice and carol: the only two administrators; dave, erin,
gina: security officers; frank: approver; bob: operator). A test that PASSES is an attack
that was refused. A test that FAILS is an attack that worked: it asserts the behaviour the
docs promise ("one administrator cannot remove the others and then act on waivers"; "nobody
approves their own request"), which the code does not deliver yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.unit.identity.homes import build_template, copied
from tests.unit.identity.test_approvals import PW, People, _build, ledger_size
from tests.unit.identity.test_attacks import CLIENT, code, db, events

from affidavit.cli.output import plain
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalPending,
    InputError,
    StepUpRequired,
)
from affidavit.models.approval import DEFAULT_RULES, ApprovalRule, GatedOperation, RequestState
from affidavit.models.permissions import Role
from affidavit.services import gated, principals, requests, roles
from affidavit.services import identity as idn

ALICE_PW = "admin passphrase 1"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "approval-attacks", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]))


IDP = "https://idp.example"


def _login(p: People, name: str, at: datetime, password: str | None = None) -> idn.Principal:
    secret = p.secrets.get(name)
    pw = password or (ALICE_PW if name == "alice" else PW)
    return idn.login(
        p.app, name, pw, code(secret, at) if secret else None, client=CLIENT, now=at
    ).principal


def _grant_bob_viewer_must_wait(p: People, alice: idn.Principal) -> None:
    """alice's next grant must wait for another administrator, not run on a waiver."""
    before = len(events(p.home, "approval.waived"))
    with pytest.raises(ApprovalPending):
        roles.grant_role(p.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    assert len(events(p.home, "approval.waived")) == before


def _carol_is_disabled(p: People) -> bool:
    with p.app.read() as uow:
        return uow.identities.account("carol").disabled


# -- SUCCESSFUL attacks (these tests fail until fixed) ---------------------------------------


def test_one_admin_cannot_disable_the_only_other_admin_on_a_waiver(people: People) -> None:
    """account.disable excludes its target from approving; with two administrators nobody
    else could approve, so alice disables carol alone on a waiver, then acts alone."""
    alice = people.login("alice")
    with pytest.raises((ApprovalPending, AccessDenied)):
        idn.disable_account(people.app, alice, "carol", reason="gone rogue", now=alice.mfa_at)
    assert not _carol_is_disabled(people)


def test_one_admin_cannot_revoke_the_only_other_admin_on_a_waiver(people: People) -> None:
    alice = people.login("alice")
    with pytest.raises((ApprovalPending, AccessDenied)):
        roles.revoke_role(people.app, alice, "carol", Role.ADMIN, now=alice.mfa_at)
    assert Role.ADMIN in roles.roles_of(people.app, alice, "carol")


def test_resetting_the_other_admins_totp_does_not_open_a_waiver(people: People) -> None:
    """`user totp-reset` is not gated, and an account without TOTP (or OIDC) does not count
    as able to approve: resetting carol's TOTP leaves alice alone, on waivers."""
    alice = people.login("alice")
    with contextlib.suppress(ApprovalPending, AccessDenied):  # gating it would be one fix
        idn.reset_totp(people.app, alice, "carol", now=alice.mfa_at)
    _grant_bob_viewer_must_wait(people, alice)


def test_oidc_links_cannot_make_another_admin_the_same_person(people: People) -> None:
    """linked_subjects() unions every subject an account was ever linked to. alice (who holds
    account.manage) links carol to s-1, relinks carol to s-2, then links herself to s-1:
    carol now counts as alice's second account, and alice acts alone on waivers."""
    alice = people.login("alice")
    for name, subject in (("carol", "s-1"), ("carol", "s-2"), ("alice", "s-1")):
        try:
            idn.link_oidc(people.app, alice, name, issuer=IDP, subject=subject, now=alice.mfa_at)
        except (ApprovalPending, AccessDenied, AlreadyExists):
            break  # a subject ever linked to another account is refused
    _grant_bob_viewer_must_wait(people, alice)


def test_a_requester_cannot_take_over_the_approver_and_approve_herself(people: People) -> None:
    """alice asks for a grant; she sets carol's password and resets carol's TOTP (neither is
    gated), logs in as carol, enrols a TOTP of her own for carol, and approves her request as
    carol; then executes it."""
    alice = people.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        roles.grant_role(people.app, alice, "bob", Role.ADMIN, now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    assert alice.mfa_at is not None
    t = alice.mfa_at
    hijacked = "hijacked passphrase 99"
    try:
        idn.set_password(people.app, alice, "carol", hijacked, now=t)
        idn.reset_totp(people.app, alice, "carol", now=t)
        carol = _login(people, "carol", t + timedelta(seconds=40), hijacked)  # no TOTP now
        enrolment = idn.begin_totp(people.app, carol, "carol", now=t + timedelta(seconds=40))
        idn.confirm_totp(
            people.app,
            carol,
            "carol",
            code(enrolment.secret, t + timedelta(seconds=40)),
            now=t + timedelta(seconds=40),
        )
        people.secrets["carol"] = enrolment.secret
        carol = _login(people, "carol", t + timedelta(seconds=75), hijacked)
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    except (AccessDenied, ApprovalPending, StepUpRequired):
        pass  # refused somewhere along the way: the attack failed
    alice = _login(people, "alice", t + timedelta(seconds=110))
    with pytest.raises((AccessDenied, StepUpRequired)):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert Role.ADMIN not in roles.roles_of(people.app, alice, "bob")


# -- REFUSED attacks (these pass) ------------------------------------------------------------


def test_two_concurrent_executions_run_the_operation_once(people: People) -> None:
    """Both executions get an authority before either runs; the second is refused under the
    writer lock when it seals, and its operation rolls back."""
    alice = people.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    _, first = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    _, second = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    roles.grant_role(people.app, alice, "bob", Role.VIEWER, authority=first, now=alice.mfa_at)
    with db(people.home) as con:  # so that the second run reaches its seal
        con.execute(
            "DELETE FROM role_grants WHERE role = 'viewer' AND account_id = "
            "(SELECT id FROM accounts WHERE name = 'bob')"
        )
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="executed"):
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, authority=second,
                         now=alice.mfa_at)  # fmt: skip
    assert ledger_size(people.home) == size
    assert len([e for e in events(people.home, "request.executed")
                if e["subject"] == f"request:{request_id}"]) == 1  # fmt: skip


def test_an_approved_authority_does_not_carry_other_parameters(people: People) -> None:
    """The authority of an approved disablement of frank cannot disable carol."""
    alice = people.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        idn.disable_account(people.app, alice, "frank", reason="left", now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    _, authority = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    with pytest.raises(AccessDenied, match=r"another account\.disable"):
        idn.disable_account(people.app, alice, "carol", reason="left", authority=authority,
                            now=alice.mfa_at)  # fmt: skip
    assert not _carol_is_disabled(people)


def test_the_local_os_user_cannot_change_a_rule(people: People) -> None:
    """requests.rule_change needs approval.rules: the unauthenticated local user has none,
    so no unapproved approval.rule_changed event can be written through the service."""
    local = principals.local_principal(people.app)
    rule = DEFAULT_RULES[GatedOperation.BACKUP_DELETE]
    zero = ApprovalRule(
        operation=rule.operation,
        approvers=0,
        role=rule.role,
        approval_window=rule.approval_window,
        execution_window=rule.execution_window,
    )
    with pytest.raises(AccessDenied):
        requests.rule_change(people.app, local, zero, reason="x")


def test_an_excluded_or_self_approval_is_refused_after_a_relink(people: People) -> None:
    """carol, once linked to alice's subject and relinked elsewhere, still may not approve
    alice's request (the ledger remembers the old link)."""
    alice = people.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    idn.link_oidc(people.app, alice, "alice", issuer=IDP, subject="a-1", now=alice.mfa_at)
    idn.link_oidc(people.app, alice, "alice", issuer=IDP, subject="a-2", now=alice.mfa_at)
    with pytest.raises(AlreadyExists, match="linked to another account before"):
        idn.link_oidc(people.app, alice, "carol", issuer=IDP, subject="a-1", now=alice.mfa_at)
    with db(people.home) as con:  # written behind affidavit's back instead
        con.execute(
            "UPDATE accounts SET oidc_issuer = ?, oidc_subject = 'a-1' WHERE name = 'carol'",
            (IDP,),
        )
    carol = people.login("carol")
    with pytest.raises(AccessDenied, match="second account"):
        requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    assert (
        requests.get_request(people.app, alice, request_id).state(
            alice.mfa_at  # type: ignore[arg-type]
        )
        is RequestState.PENDING
    )


def test_break_glass_refuses_any_authenticated_principal(people: People) -> None:
    alice = people.login("alice")
    with pytest.raises(AccessDenied, match="on the host"):
        idn.break_glass(people.app, alice, "mallory", PW, reason="x" * 40, now=alice.mfa_at)


def test_a_huge_note_is_refused_and_control_characters_are_escaped_on_output(
    people: People,
) -> None:
    alice = people.login("alice")
    with pytest.raises(ApprovalPending) as pending:
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    request_id = str(pending.value.request["id"])
    carol = people.login("carol")
    with pytest.raises(InputError):
        requests.approve(people.app, carol, request_id, note="x" * 501, now=carol.mfa_at)
    done = requests.approve(
        people.app, carol, request_id, note="ok\x1b]0;pwned\x07\u202e", now=carol.mfa_at
    )
    shown = plain(done.approvals[0].note) or ""
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    with pytest.raises(Exception, match="no approval request"):
        requests.get_request(people.app, alice, "../" + request_id)
