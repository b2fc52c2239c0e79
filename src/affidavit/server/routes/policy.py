"""``POST /policy/check`` (``policy.check``): evaluate every control and record the results;
``GET /policy/versions``, ``GET /policy/versions/{version}`` and ``GET /policy/effective``
(``policy.read``): the versions, one with its text; ``POST /policy/versions``
(``policy.propose``): propose a policy file's text (the client reads the file). Approving a
version is the gated ``POST /policy/versions/{version}/approve`` (``routes/custody.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import policy
from affidavit.services.views import policy_document_json, policy_version_json

router = APIRouter(tags=["policy"])
Reader = Annotated[Caller, Depends(allow(Permission.POLICY_READ))]


class PolicyCheck(BaseModel):
    """What ``policy check`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offline: bool = False


class Proposal(BaseModel):
    """A policy file: its name (for messages) and text (the service parses and checks it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    text: str


@router.post("/policy/check")
def check(
    caller: Annotated[Caller, Depends(allow(Permission.POLICY_CHECK))],
    body: PolicyCheck | None = None,
) -> Response:
    """Evaluate every control; record results and findings (``policy check --json``;
    findings are a result, ``"ok": false``)."""
    options = body or PolicyCheck()
    with caller.acting() as app:
        outcome = policy.check_policy(app, live=not options.offline)
    return reply(outcome.to_json())


@router.get("/policy/versions")
def versions(caller: Reader) -> Response:
    """Every version, oldest first, without its text (``policy list --json``)."""
    with caller.acting() as app:
        found = policy.policy_versions(app)
    return reply({"versions": [policy_version_json(v) for v in found]})


@router.get("/policy/versions/{version}")
def version(caller: Reader, version: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    """One version with its text (``policy show VERSION --json``)."""
    with caller.acting() as app:
        found = policy.policy_version(app, version)
    return reply(policy_document_json(found))


@router.get("/policy/effective")
def effective(caller: Reader) -> Response:
    """The newest approved version with its text (``policy show --json``)."""
    with caller.acting() as app:
        found = policy.policy_version(app)
    return reply(policy_document_json(found))


@router.post("/policy/versions", status_code=201)
def propose(
    caller: Annotated[Caller, Depends(allow(Permission.POLICY_PROPOSE))], body: Proposal
) -> Response:
    """Propose a new version; another person approves it (``policy propose --json``)."""
    with caller.acting() as app:
        proposed = policy.propose_policy_text(app, body.text, name=body.name)
    return reply(policy_version_json(proposed), 201)
