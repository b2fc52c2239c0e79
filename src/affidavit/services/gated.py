"""Executing an approved request: each gated operation's service, called again with the
request's parameters and its authority.

The requester runs ``affidavit request execute ID`` (or ``POST /api/v1/requests/ID/execute``)
within the execution window. :func:`execute` checks the request
(:func:`~affidavit.services.requests.approved_authority`), then calls the operation's own
service as the requester (:meth:`App.acting_as`), with the parameters exactly as approved; the
service passes the gate with that authority and, in its last transaction, records
``request.executed`` after checking once more under the writer lock that the request is still
approved and was not executed by a concurrent call. A service that refuses (a backup still
retained, a hold placed meanwhile) leaves the request approved: it may be executed again
until its window ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from affidavit.models.approval import ApprovalRequest, ApprovalRule, GatedOperation
from affidavit.models.identity import Principal
from affidavit.models.permissions import Role
from affidavit.services import findings, identity, inventory, keys, policy, requests, roles
from affidavit.services.backup import retention
from affidavit.services.context import App
from affidavit.services.exports import run as export_runs
from affidavit.services.exports.samples import sweep_samples
from affidavit.services.requests import Authority
from affidavit.services.views import hold_json, policy_version_json, rotation_json

_Runner = Callable[[App, Principal, Mapping[str, Any], Authority], dict[str, Any]]


def _delete(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    receipt = retention.delete_backup(
        app, str(p["backup_id"]), reason=str(p["reason"]), authority=a
    )
    return receipt.to_json()


def _release(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    hold = retention.release_hold(
        app, str(p["backup_id"]), case_id=str(p["case_id"]), reason=str(p["reason"]), authority=a
    )
    return hold_json(hold)


def _rotate(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    return rotation_json(keys.rotate_keys(app, authority=a))


def _export(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    secret = keys.export_identity(app, str(p["backup_id"]), reason=str(p["reason"]), authority=a)
    return {"backup_id": str(p["backup_id"]), "identity": secret}


def _remove_source(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    inventory.remove_source(app, str(p["name"]), reason=str(p["reason"]), authority=a)
    return {"removed": str(p["name"])}


def _grant(app: App, who: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    grant = roles.grant_role(
        app, who, str(p["account"]), Role(str(p["role"])), authority=a, now=a.now
    )
    return grant.to_json()


def _revoke(app: App, who: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    roles.revoke_role(app, who, str(p["account"]), Role(str(p["role"])), authority=a, now=a.now)
    return {"account": str(p["account"]), "role": str(p["role"]), "revoked": True}


def _disable(app: App, who: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    account = identity.disable_account(
        app, who, str(p["account"]), reason=str(p["reason"]), authority=a, now=a.now
    )
    return {"account": account.to_json()}


def _approve_policy(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    return policy_version_json(policy.approve_policy(app, int(p["version"]), authority=a))


def _approve_exception(
    app: App, _: Principal, p: Mapping[str, Any], a: Authority
) -> dict[str, Any]:
    return findings.approve_exception(app, str(p["exception_id"]), authority=a).to_json()


def _rule_change(app: App, who: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    rule = requests.rule_change(
        app, who, ApprovalRule.from_json(p), reason="", authority=a, now=a.now
    )
    return rule.to_json()


def _export_run(app: App, _: Principal, p: Mapping[str, Any], a: Authority) -> dict[str, Any]:
    result = export_runs.run_export(
        app,
        str(p["spec"]),
        version=int(p["version"]),
        backup_id=str(p["backup_id"]),
        output=str(p["output"]),
        authority=a,
    )
    return result.to_json()


RUNNERS: Final[Mapping[GatedOperation, _Runner]] = {
    GatedOperation.BACKUP_DELETE: _delete,
    GatedOperation.HOLD_RELEASE: _release,
    GatedOperation.KEYS_ROTATE: _rotate,
    GatedOperation.KEYS_EXPORT_IDENTITY: _export,
    GatedOperation.SOURCE_REMOVE: _remove_source,
    GatedOperation.ROLE_GRANT: _grant,
    GatedOperation.ROLE_REVOKE: _revoke,
    GatedOperation.ACCOUNT_DISABLE: _disable,
    GatedOperation.POLICY_APPROVE: _approve_policy,
    GatedOperation.EXCEPTION_APPROVE: _approve_exception,
    GatedOperation.RULE_CHANGE: _rule_change,
    GatedOperation.EXPORT_RUN: _export_run,
}
"""How each gated operation is executed (a test holds the keys equal to the operations)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Executed:
    """An executed request and what its operation returned."""

    request: ApprovalRequest
    result: dict[str, Any]


def execute(
    app: App, principal: Principal, request_id: str, *, now: datetime | None = None
) -> Executed:
    """Execute the approved request ``request_id`` as its requester (see the module
    docstring); raises what the checks or the operation raise."""
    request, authority = requests.approved_authority(app, principal, request_id, now=now)
    with app.acting_as(principal):
        result = RUNNERS[request.operation](app, principal, request.params, authority)
    with app.read() as uow:
        every = requests.read_requests(uow)
    sweep_samples(Path(app.settings.home), every.values(), now=now)  # its sample, if any
    return Executed(request=every[request.id], result=result)
