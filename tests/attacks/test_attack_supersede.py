"""Attacks on approval-rule supersession (``models/approval.py: _supersede``,
``services/requests.py: rule_change``): a rule change ends the open requests of its
operation.

The world is test_approvals' (alice and carol: the only two administrators; dave, erin,
gina: security officers; frank: approver; bob: operator). What must hold: an authority taken
before a rule change is not honoured after it (execution racing the change loses); a rule
change event without its own ``at`` still supersedes (by the event's time); a change whose
``approval.request`` names another request does not spare the request it names unless that
request made it; and, a property that is by design, two administrators can end anybody's
open requests of an operation by re-stating its rule (recorded, and the requester asks
again)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.identity.homes import build_template, copied
from tests.unit.identity.test_approvals import People, _build, ledger_size
from tests.unit.identity.test_attacks_approvals_2 import (
    _ask_hold_release,
    _change_rule,
    _pending,
    _rule,
    _state,
)

from affidavit.errors import AccessDenied, InputError
from affidavit.models.approval import RULE_CHANGED, GatedOperation, RequestState, fold
from affidavit.models.permissions import Role
from affidavit.services import gated, requests, roles
from affidavit.services.policy_vouch import read_events


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return build_template(tmp_path_factory, "supersede-attacks", _build)


@pytest.fixture
def people(
    template: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[People]:
    with copied(template[0], tmp_path, monkeypatch) as (app, home):
        yield People(app, home, dict(template[1]))


def _events(people: People, *actions: str) -> list:  # type: ignore[type-arg]
    with people.app.read() as uow:
        return [e for action in actions for e in read_events(uow.ledger, action)]


def test_an_authority_taken_before_a_rule_change_is_refused_after_it(people: People) -> None:
    """alice's role grant is approved; she takes its authority, the rule for role grants is
    changed (carol approving), then she runs the grant with the authority she holds: the
    request is superseded in the very transaction that would execute it."""
    alice = people.login("alice")
    request_id = _pending(
        lambda: roles.grant_role(people.app, alice, "bob", Role.VIEWER, now=alice.mfa_at)
    )
    carol = people.login("carol")
    requests.approve(people.app, carol, request_id, now=carol.mfa_at)
    alice = people.login("alice")
    _, authority = requests.approved_authority(people.app, alice, request_id, now=alice.mfa_at)
    _change_rule(people, _rule(GatedOperation.ROLE_GRANT, 2, Role.ADMIN))
    alice = people.login("alice")
    size = ledger_size(people.home)
    with pytest.raises(AccessDenied, match="cancelled"):
        roles.grant_role(people.app, alice, "bob", Role.VIEWER, authority=authority,
                         now=alice.mfa_at)  # fmt: skip
    with pytest.raises(AccessDenied, match="cancelled"):
        gated.execute(people.app, alice, request_id, now=alice.mfa_at)
    assert ledger_size(people.home) == size
    assert Role.VIEWER not in roles.roles_of(people.app, alice, "bob")


def test_a_rule_change_without_its_at_still_supersedes_by_the_events_time(
    people: People,
) -> None:
    """Rule changes recorded before ``at`` was added (or an event stripped of it) fall back
    to the event's own time: they still end the requests filed before them."""
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    _change_rule(people, _rule(GatedOperation.HOLD_RELEASE, 2, Role.SECURITY_OFFICER))
    events = _events(people, "request.created", RULE_CHANGED)
    # the test clock is not the wall clock the event's time comes from: the event is given
    # its "at" as its time, as it would have had in a real run
    stripped = [
        replace(
            e,
            time=e.details["at"],
            details={k: v for k, v in e.details.items() if k != "at"},
        )
        if e.action == RULE_CHANGED
        else e
        for e in events
    ]
    assert any(e.action == RULE_CHANGED and "at" not in e.details for e in stripped)
    folded = fold(stripped).requests[request_id]
    assert folded.superseded is not None
    assert folded.state(erin.mfa_at) is RequestState.CANCELLED


def test_a_rule_change_naming_another_request_as_its_maker_spares_only_that_one(
    people: People,
) -> None:
    """A change event whose ``approval.request`` names erin's pending request (as it could
    only if the ledger were forged: such an event fails ``ledger verify``, and execution
    refuses a ledger that does not verify) spares that request and no other: the exception
    is exactly the request named, never the operation."""
    erin = people.login("erin")
    first = _ask_hold_release(people, erin)
    gina = people.login("gina")
    second = _ask_hold_release(people, gina, backup_id="bk-2")
    _change_rule(people, _rule(GatedOperation.HOLD_RELEASE, 2, Role.SECURITY_OFFICER))
    events = _events(people, "request.created", RULE_CHANGED)
    forged = [
        replace(e, details={**e.details, "approval": {"standing": "approved", "request": first}})
        if e.action == RULE_CHANGED
        else e
        for e in events
    ]
    folded = fold(forged).requests
    assert folded[first].superseded is None  # the forgery's only reach
    assert folded[second].superseded is not None


def test_restating_the_rule_in_force_is_refused_and_cancels_nothing(people: People) -> None:
    """A "change" that repeats the rule in force would change nothing but supersede every
    open request of its operation (approved ones included): a denial of service needing only
    the rule-change path. It is refused before it is asked for: nothing recorded, the
    approved request stays approved and executes."""
    erin = people.login("erin")
    request_id = _ask_hold_release(people, erin)
    dave = people.login("dave")
    requests.approve(people.app, dave, request_id, now=dave.mfa_at)
    assert _state(people, request_id, dave.mfa_at) is RequestState.APPROVED
    alice = people.login("alice")
    same = _rule(GatedOperation.HOLD_RELEASE, 1, Role.SECURITY_OFFICER)  # the default
    with pytest.raises(InputError, match="rule in force"):
        requests.rule_change(people.app, alice, same, reason="again", now=alice.mfa_at)
    erin = people.login("erin")
    assert _state(people, request_id, erin.mfa_at) is RequestState.APPROVED
