"""Access reviews and the access controls on real state: what a review lists (roles held,
permissions used through the server and through authenticated local commands, unused roles),
decisions and their refusals (one's own access, a grant the review does not list, a closed
review), revocations applied through the approval path at close, a review event edited in the
catalog, and each ``access.*`` control passing and failing on a real home (facts gathered from
its ledger, rules evaluated under a parsed policy).

The people are made once per module (argon2 and TOTP logins take their time); each test works
on a copy of their home. Ledger events carry the wall clock's time, so the injected clock of
logins and reviews runs a little ahead of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.unit.identity.homes import build_template, clean_environment, copied
from tests.unit.identity.test_attacks import CLIENT, T0, code, db, events, make_world

from affidavit.config import load_settings
from affidavit.constants import Classification, EngineName
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    ApprovalPending,
    InputError,
    IntegrityError,
    NotFound,
)
from affidavit.models.access_review import (
    CLOSED,
    DECIDED,
    STARTED,
    Outcome,
    Verdict,
    fold,
)
from affidavit.models.governance import ExceptionStatus, PolicyException
from affidavit.models.identity import AccountKind, Principal
from affidavit.models.ledger import Event
from affidavit.models.permissions import ROUTE_PERMISSIONS, Permission, Role
from affidavit.policy.controls import CONTROL_IDS
from affidavit.policy.document import Policy, parse_policy
from affidavit.policy.rules import ControlResult, Status, evaluate
from affidavit.services import (
    access_log,
    access_reviews,
    gated,
    inventory,
    principals,
    requests,
    roles,
)
from affidavit.services import identity as idn
from affidavit.services.context import App, open_app
from affidavit.services.ledger import verify_catalog
from affidavit.services.policy_facts import gather_facts
from affidavit.services.setup import initialise

PW = "a long passphrase 42"
POLICY_TEXT = (Path(__file__).resolve().parents[1] / "policy" / "policy.toml").read_text("utf-8")
ACCESS = ("access.reviewed", "access.least_privilege", "access.mfa_enforced",
          "access.segregation_of_duties")  # fmt: skip


def _policy(days: int = 90) -> Policy:
    text = POLICY_TEXT.replace("[policy]\n", f"[policy]\naccess_review_max_days = {days}\n", 1)
    return parse_policy(text, controls=CONTROL_IDS)


@dataclass
class People:
    """alice, carol, hank: administrators (hank has no TOTP); dave: security officer; erin:
    operator *and* security officer; frank: approver; bob: operator (no TOTP); ci-bot: a
    service account (operator). The clock runs ahead of the wall clock by a step per use."""

    app: App
    home: Path
    secrets: dict[str, str]
    base: datetime
    t: int = 0

    def at(self) -> datetime:
        self.t += 1
        return self.base + timedelta(seconds=31 * self.t)

    def login(self, name: str) -> Principal:
        at = self.at()
        password = "admin passphrase 1" if name == "alice" else PW
        if name == "bob":
            password = "operator passphrase 22"
        secret = self.secrets.get(name)
        totp = code(secret, at) if secret else None
        return idn.login(self.app, name, password, totp, client=CLIENT, now=at).principal

    def check(self, *, days: int = 90, later: timedelta = timedelta(0)) -> list[ControlResult]:
        """The access controls over this home's facts (the ledger's), ``later`` from now."""
        now = self.at() + later
        facts = gather_facts(self.app, now=now, live=False)
        return [r for r in evaluate(facts, _policy(days)) if r.control in ACCESS]


def _enrol(app: App, name: str, at: datetime) -> str:
    first = idn.login(app, name, PW, client=CLIENT, now=at)
    enrolment = idn.begin_totp(app, first.principal, name, now=at)
    idn.confirm_totp(app, first.principal, name, code(enrolment.secret, at), now=at)
    idn.logout(app, first.principal)
    return enrolment.secret


def _build(app: App, home: Path) -> dict[str, str]:
    world = make_world(app, home)
    at = T0 + timedelta(seconds=61)
    idn.create_account(app, world.admin, "ci-bot", kind=AccountKind.SERVICE, now=at)
    roles.grant_role(app, world.admin, "ci-bot", Role.OPERATOR, now=at)
    grants = (("dave", Role.SECURITY_OFFICER), ("erin", Role.OPERATOR),
              ("erin", Role.SECURITY_OFFICER), ("frank", Role.APPROVER), ("carol", Role.ADMIN))  # fmt: skip
    for name in ("carol", "dave", "erin", "frank", "hank"):
        idn.create_account(app, world.admin, name, password=PW, now=at)
    for name, role in grants:  # nobody else could approve yet: recorded waivers
        roles.grant_role(app, world.admin, name, role, now=at)
    secrets = {"alice": world.secret}
    for name in ("carol", "dave", "erin", "frank"):
        secrets[name] = _enrol(app, name, at)
    # a second administrator now: hank's grant waits for carol's approval
    try:
        roles.grant_role(app, world.admin, "hank", Role.ADMIN, now=at)
    except ApprovalPending as pending:
        request_id = str(pending.request["id"])
    later = at + timedelta(seconds=31)
    carol = idn.login(app, "carol", PW, code(secrets["carol"], later), client=CLIENT, now=later)
    requests.approve(app, carol.principal, request_id, now=later)
    gated.execute(app, world.admin, request_id, now=later)
    inventory.add_source(app, name="shop", engine=EngineName.MONGODB,
                         uri="mongodb://127.0.0.1:9/shop", secret=None,
                         classification=Classification.INTERNAL)  # fmt: skip
    return secrets


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "reviews", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    base = datetime.now(UTC) + timedelta(minutes=1)
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]), base)


def _size(home: Path) -> int:
    with db(home) as con:
        return int(con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _requests(p: People, entries: list[tuple[str, str, str, str, str]]) -> None:
    """Record API requests in the access log: (identity, auth, method, route, outcome)."""
    started = datetime.now(UTC) - timedelta(hours=1)
    access_log.record(
        p.app,
        [
            access_log.request_entry(started=started, identity=who, auth_method=auth,
                                     method=method, route=route, outcome=outcome, status=200)
            for who, auth, method, route, outcome in entries
        ],
    )  # fmt: skip


def _grant(review: Any, account: str, role: Role) -> dict[str, Any]:
    usage = review.usage(account)
    assert usage is not None, account
    return {"used": usage.used, "unused": usage.unused_roles, "roles": usage.roles}


def _by(results: list[ControlResult], control: str) -> dict[str, ControlResult]:
    return {r.subject: r for r in results if r.control == control}


# -- the review ---------------------------------------------------------------------------------


def test_a_review_lists_roles_used_and_unused_from_both_logs(people: People) -> None:
    _requests(people, [
        ("dave", "session", "GET", "/api/v1/backups", "allowed"),
        ("dave", "session", "DELETE", "/api/v1/backups/{backup_id}", "denied"),  # not a use
        ("ci-bot", "token", "POST", "/api/v1/backups", "allowed"),
        ("frank", "none", "GET", "/api/v1/requests", "allowed"),  # not authenticated
        ("dave", "session", "GET", "/api/v1/not-a-route", "allowed"),
    ])  # fmt: skip
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, lookback_days=30, now=dave.mfa_at)
    assert review.state == "open" and review.lookback_days == 30
    assert {a.account for a in review.accounts} == {
        "alice", "bob", "carol", "dave", "erin", "frank", "hank", "ci-bot"
    }  # fmt: skip
    alice = review.usage("alice")
    assert alice is not None and alice.roles == (Role.ADMIN,)
    # alice's grants and account creations are authenticated ledger events (--as, like a login)
    assert {Permission.ROLE_GRANT, Permission.ACCOUNT_MANAGE} <= alice.used
    assert alice.unused_roles == ()
    assert _grant(review, "dave", Role.SECURITY_OFFICER)["used"] == {Permission.BACKUP_READ}
    assert Permission.BACKUP_DELETE in review.usage("dave").unused_permissions  # type: ignore[union-attr]
    assert _grant(review, "ci-bot", Role.OPERATOR)["used"] == {Permission.BACKUP_RUN}
    assert _grant(review, "bob", Role.OPERATOR)["unused"] == (Role.OPERATOR,)
    assert _grant(review, "frank", Role.APPROVER)["unused"] == (Role.APPROVER,)
    assert ("bob", Role.OPERATOR) in review.unused_grants
    assert review.unmapped == ("GET /api/v1/not-a-route",)
    assert any("bob: role operator unused" in f for f in review.findings())
    (started,) = events(people.home, STARTED)
    assert started["actor"] == "dave" and started["details"]["auth"] == "password+totp"
    assert started["subject"] == f"access-review:{review.id}"
    # the local OS user and an operator may not start one
    with pytest.raises(AccessDenied):
        access_reviews.start_review(people.app, principals.local_principal(people.app))
    with pytest.raises(AccessDenied):
        access_reviews.start_review(people.app, people.login("bob"))
    with pytest.raises(InputError, match="look-back"):
        access_reviews.start_review(people.app, dave, lookback_days=0, now=dave.mfa_at)


def test_decisions_are_refused_for_ones_own_access_and_grants_not_under_review(
    people: People,
) -> None:
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    frank = people.login("frank")
    size = _size(people.home)

    def decide(who: Principal, account: str, role: Role, verdict: str = "keep",
               why: str = "still on call") -> Any:  # fmt: skip
        return access_reviews.decide(people.app, who, review.id, account=account, role=role,
                                     verdict=verdict, justification=why)  # fmt: skip

    with pytest.raises(AccessDenied, match="their own access"):
        decide(dave, "dave", Role.SECURITY_OFFICER)
    with pytest.raises(InputError, match="not a grant of access review"):
        decide(dave, "bob", Role.ADMIN)
    with pytest.raises(InputError, match="not a grant of access review"):
        decide(dave, "nobody", Role.VIEWER)
    with pytest.raises(InputError, match="justification"):
        decide(dave, "bob", Role.OPERATOR, why="   ")
    with pytest.raises(NotFound):
        access_reviews.decide(people.app, dave, "ar-nope", account="bob", role="operator",
                              verdict="keep", justification="x")  # fmt: skip
    with pytest.raises(AccessDenied):  # frank approves, he does not review access
        decide(frank, "bob", Role.OPERATOR)
    assert _size(people.home) == size  # nothing recorded
    decided = decide(dave, "bob", Role.OPERATOR, "revoke", "no backups run in 90 days")
    decided = decide(dave, "bob", Role.OPERATOR, "keep", "changed my mind: on-call rota")
    assert decided.decisions[("bob", Role.OPERATOR)].verdict is Verdict.KEEP  # the later wins
    assert [e["details"]["decision"] for e in events(people.home, DECIDED)] == ["revoke", "keep"]


def test_closing_applies_revocations_through_the_approval_path(people: People) -> None:
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    for account, role, verdict in (("bob", Role.OPERATOR, "revoke"),
                                   ("frank", Role.APPROVER, "keep"),
                                   ("erin", Role.OPERATOR, "revoke")):  # fmt: skip
        access_reviews.decide(people.app, dave, review.id, account=account, role=role,
                              verdict=verdict, justification="quarterly review")  # fmt: skip
    size = _size(people.home)
    # a security officer cannot apply revocations (role.grant is an administrator's)
    with pytest.raises(AccessDenied, match=r"role\.grant"):
        access_reviews.close_review(people.app, dave, review.id, now=dave.mfa_at)
    assert _size(people.home) == size
    alice = people.login("alice")
    closed = access_reviews.close_review(people.app, alice, review.id, now=alice.mfa_at)
    assert closed.closed is not None and closed.closed.by == "alice"
    outcomes = {(o.account, o.role): o for o in closed.closed.outcomes}
    pending = outcomes[("bob", Role.OPERATOR)]
    assert pending.outcome is Outcome.PENDING and pending.request  # carol could approve
    assert outcomes[("frank", Role.APPROVER)].outcome is Outcome.KEPT
    assert outcomes[("erin", Role.OPERATOR)].outcome is Outcome.PENDING
    assert outcomes[("ci-bot", Role.OPERATOR)].outcome is Outcome.UNDECIDED
    (event,) = events(people.home, CLOSED)
    assert {o["request"] for o in event["details"]["outcomes"] if o["request"]} == {
        pending.request, outcomes[("erin", Role.OPERATOR)].request
    }  # fmt: skip
    # until the revocation is executed, least privilege reports it
    lp = _by(people.check(), "access.least_privilege")
    assert lp["account:bob"].status is Status.FAIL
    assert f"as request {pending.request}" in lp["account:bob"].message
    # another administrator approves; the requester executes
    assert pending.request is not None
    carol = people.login("carol")
    requests.approve(people.app, carol, pending.request, note="per review", now=carol.mfa_at)
    alice = people.login("alice")
    gated.execute(people.app, alice, pending.request, now=alice.mfa_at)
    assert Role.OPERATOR not in roles.roles_of(people.app, alice, "bob")
    assert "account:bob" not in _by(people.check(), "access.least_privilege")  # no role left
    # closing twice is refused, and records nothing
    size = _size(people.home)
    with pytest.raises(AlreadyExists, match="closed"):
        access_reviews.close_review(people.app, alice, review.id, now=alice.mfa_at)
    with pytest.raises(AlreadyExists, match="closed"):
        access_reviews.decide(people.app, dave, review.id, account="frank", role="approver",
                              verdict="revoke", justification="too late")  # fmt: skip
    assert _size(people.home) == size


def test_a_review_event_edited_in_the_catalog_is_detected(people: People) -> None:
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    access_reviews.decide(people.app, dave, review.id, account="frank", role="approver",
                          verdict="keep", justification="approves policy changes")  # fmt: skip
    assert verify_catalog(people.app).ok
    with db(people.home) as con:  # someone who can write the database but not sign
        seq, entry = con.execute(
            "SELECT seq, entry FROM ledger_entries WHERE action = ?", (DECIDED,)
        ).fetchone()
        forged = bytes(entry).replace(b'"decision":"keep"', b'"decision":"revoke"')
        assert forged != bytes(entry)
        con.execute("UPDATE ledger_entries SET entry = ? WHERE seq = ?", (forged, seq))
    report = verify_catalog(people.app)
    assert not report.ok and any(f.seq == seq for f in report.findings)
    alice = people.login("alice")
    with pytest.raises(IntegrityError, match="does not verify"):  # nothing is revoked on it
        access_reviews.close_review(people.app, alice, review.id, now=alice.mfa_at)
    assert Role.APPROVER in roles.roles_of(people.app, alice, "frank")


def _event(seq: int, action: str, actor: str, details: dict[str, Any]) -> Event:
    at = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=seq)
    return Event(seq=seq, time=at.isoformat().replace("+00:00", "Z"), actor=actor,
                 action=action, subject="access-review:ar-1",
                 details={"at": at.isoformat(), **details})  # fmt: skip


def test_the_fold_refuses_steps_the_rules_forbid_even_in_the_ledger() -> None:
    started = _event(1, STARTED, "dave", {
        "by_id": "D", "lookback_days": 90,
        "window": {"from": "2026-09-01T00:00:00+00:00", "to": "2026-12-01T00:00:00+00:00"},
        "accounts": [{"account": "bob", "account_id": "B", "kind": "human", "disabled": False,
                      "roles": ["operator"], "used": [], "oidc": ["https://idp", "u-1"]}],
    })  # fmt: skip

    def decided(seq: int, actor: str, by_id: str, **kw: Any) -> Event:
        details = {"account": "bob", "role": "operator", "decision": "revoke",
                   "justification": "unused", "by_id": by_id, **kw}  # fmt: skip
        return _event(seq, DECIDED, actor, details)

    steps = [
        started,
        decided(2, "bob", "B"),  # the reviewed account itself
        decided(3, "bobby", "B2", by_oidc=["https://idp", "u-1"]),  # its second account
        decided(4, "dave", "D", role="admin"),  # not a grant of the review
        decided(5, "dave", "D", justification=""),
        decided(6, "dave", "D"),  # counts
        _event(7, CLOSED, "alice", {"by_id": "A", "outcomes": []}),
        decided(8, "dave", "D", decision="keep"),  # after the close
        _event(9, CLOSED, "alice", {"by_id": "A", "outcomes": []}),  # twice
        _event(10, DECIDED, "dave", {}),
    ]
    orphan = replace(steps[5], subject="access-review:ar-2")
    folded = fold([*reversed(steps), orphan])
    review = folded.reviews["ar-1"]
    assert [d.seq for d in review.decisions.values()] == [6]
    assert review.closed is not None and review.closed.seq == 7
    assert len(review.problems) == 7, review.problems
    assert "decided on its own access" in review.problems[0]
    assert "not a grant" in review.problems[2]
    assert folded.orphans == ("access_review.decided #6 names no review",)


# -- the controls on real state -----------------------------------------------------------------


def test_access_reviewed_fails_without_a_closed_review_and_passes_within_the_period(
    people: People,
) -> None:
    check = _by(people.check(), "access.reviewed")
    assert check["access-review"].status is Status.FAIL
    assert "no access review was ever closed" in check["access-review"].message
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    check = _by(people.check(), "access.reviewed")
    assert check["access-review"].status is Status.FAIL  # open is not reviewed
    access_reviews.close_review(people.app, dave, review.id, now=dave.mfa_at)  # keeps all
    check = _by(people.check(), "access.reviewed")["access-review"]
    assert check.status is Status.PASS and review.id in check.message
    late = _by(people.check(days=30, later=timedelta(days=31)), "access.reviewed")
    assert late["access-review"].status is Status.FAIL
    assert "beyond the period of 30 days" in late["access-review"].message


def test_least_privilege_reports_conflicting_duties_and_undecided_unused_roles(
    people: People,
) -> None:
    lp = _by(people.check(), "access.least_privilege")
    assert lp["account:erin"].status is Status.FAIL  # operator + security officer
    assert "makes backups and deletes them" in lp["account:erin"].message
    assert lp["account:alice"].status is Status.PASS
    assert lp["account:bob"].status is Status.PASS  # no review yet: nothing undecided
    dave = people.login("dave")
    review = access_reviews.start_review(people.app, dave, now=dave.mfa_at)
    access_reviews.decide(people.app, dave, review.id, account="frank", role="approver",
                          verdict="keep", justification="approves the Q3 policy")  # fmt: skip
    access_reviews.close_review(people.app, dave, review.id, now=dave.mfa_at)
    lp = _by(people.check(), "access.least_privilege")
    assert lp["account:bob"].status is Status.FAIL  # unused, and nobody decided
    assert "unused in access review" in lp["account:bob"].message
    assert lp["account:frank"].status is Status.PASS  # unused, but kept with a reason
    assert lp["account:alice"].status is Status.PASS  # used what she holds


def test_mfa_enforced_reports_people_without_a_second_factor_and_password_only_actions(
    people: People,
) -> None:
    mfa = _by(people.check(), "access.mfa_enforced")
    assert mfa["account:alice"].status is Status.PASS
    assert {s for s, r in mfa.items() if r.status is Status.FAIL} == {"account:bob",
                                                                      "account:hank"}  # fmt: skip
    assert "account:ci-bot" not in mfa  # a service account authenticates with tokens only
    # hank, an administrator with a password alone, asks to remove a source; carol approves
    hank = people.login("hank")
    with people.app.acting_as(hank), pytest.raises(ApprovalPending) as pending:
        inventory.remove_source(people.app, "shop", reason="decommissioned")
    request_id = pending.value.request["id"]
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    gated.execute(people.app, people.login("hank"), request_id)
    (removed,) = events(people.home, "source.removed")
    assert removed["details"]["auth"] == "password"
    mfa = _by(people.check(), "access.mfa_enforced")
    failed = mfa[f"ledger:{removed['seq']}"]
    assert failed.status is Status.FAIL and "with a password alone" in failed.message


def test_segregation_of_duties_reports_waivers_local_mode_and_break_glass(
    people: People,
) -> None:
    sod = _by(people.check(), "access.segregation_of_duties")
    waived = [e["seq"] for e in events(people.home, "approval.waived")]
    assert waived and {f"ledger:{s}" for s in waived} <= set(sod)
    assert all(sod[f"ledger:{s}"].status is Status.FAIL for s in waived)
    # a gated operation in local mode: nothing enforced, reported as not authenticated
    inventory.remove_source(people.app, "shop", reason="gone")
    (removed,) = events(people.home, "source.removed")
    assert "auth" not in removed["details"]
    # a break-glass (recorded as the break-glass path records it)
    with people.app.change() as change:
        glass = change.record("identity.break_glass", "account:zed",
                              {"account": "zed", "reason": "every admin lost their TOTP",
                               "os_user": "root", "auth": "local-os-user"})  # fmt: skip
    results = people.check()
    sod = _by(results, "access.segregation_of_duties")
    local = sod[f"ledger:{removed['seq']}"]
    assert local.status is Status.FAIL and "not authenticated (local mode)" in local.message
    broken = sod[f"ledger:{glass.seq}"]
    assert broken.status is Status.FAIL and "every admin lost their TOTP" in broken.message
    # an approved exception accepts one waiver (and only it)
    now = datetime.now(UTC)
    accepted = PolicyException(
        id="X-1", control="access.segregation_of_duties", subject=f"ledger:{waived[0]}",
        reason="set-up by the only administrator", requested_by="alice", requested_at=now,
        expires_at=now + timedelta(days=30), status=ExceptionStatus.APPROVED,
        approved_by="carol", approved_at=now,
    )  # fmt: skip
    facts = gather_facts(people.app, now=people.at(), live=False)
    excepted = _by(evaluate(facts, _policy(), [accepted]), "access.segregation_of_duties")
    assert excepted[f"ledger:{waived[0]}"].status is Status.EXCEPTED
    assert excepted[f"ledger:{waived[1]}"].status is Status.FAIL
    # once the period has passed, nothing is left to report
    sod = _by(people.check(days=1, later=timedelta(days=2)), "access.segregation_of_duties")
    assert list(sod) == ["access-events"] and sod["access-events"].status is Status.PASS


def test_without_accounts_the_access_controls_have_nothing_to_judge_but_local_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch)
    home = tmp_path / "home"
    initialise(load_settings(home=home))
    with open_app(load_settings(home=home)) as app:
        facts = gather_facts(app, live=False)
    results = [r for r in evaluate(facts, _policy()) if r.control in ACCESS]
    statuses = {r.control: r.status for r in results}
    assert statuses == {
        "access.reviewed": Status.NOT_APPLICABLE,
        "access.least_privilege": Status.NOT_APPLICABLE,
        "access.mfa_enforced": Status.NOT_APPLICABLE,
        "access.segregation_of_duties": Status.PASS,
    }


# -- the route table ---------------------------------------------------------------------------


def test_the_route_table_is_the_servers_gates(tmp_path: Path) -> None:
    """A review maps an access-log route to the permission its gate asks for with a pure table
    (the services do not import the server); it must be the server's own."""
    server = pytest.importorskip("affidavit.server.app")
    rules = server.route_rules(server.create_app(load_settings(home=tmp_path / "h")))
    gates = {f"{r.method} {r.path}": r.gate.permission for r in rules}
    assert dict(ROUTE_PERMISSIONS) == gates, (
        f"missing: {sorted(set(gates) - set(ROUTE_PERMISSIONS))}; "
        f"stale: {sorted(set(ROUTE_PERMISSIONS) - set(gates))}; "
        f"wrong: {sorted(k for k in gates if k in ROUTE_PERMISSIONS and gates[k] != ROUTE_PERMISSIONS[k])}"
    )
