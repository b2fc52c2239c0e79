"""Access reviews over the API (``affidavit access review ...``; docs/identities.md, "Access
reviews"): ``GET /access-reviews`` and ``GET /access-reviews/{access_review_id}``
(``account.read``), ``POST /access-reviews`` (start), ``POST
/access-reviews/{access_review_id}/decisions`` (keep or revoke one grant) and ``POST
/access-reviews/{access_review_id}/close`` (``access.review``).

Closing a review that revokes anything also needs ``role.grant`` and a fresh MFA check: the
service asks for them (403, ``step_up_required`` when the check is stale), and hands each
revocation to the approval path, whose pending requests the closed review names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import access_reviews

router = APIRouter(tags=["access reviews"])
Reader = Annotated[Caller, Depends(allow(Permission.ACCOUNT_READ))]
Reviewer = Annotated[Caller, Depends(allow(Permission.ACCESS_REVIEW))]


class ReviewStart(BaseModel):
    """What ``access review start`` takes (the service checks the window's bounds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lookback_days: int = access_reviews.DEFAULT_LOOKBACK_DAYS


class Decision(BaseModel):
    """One grant's decision (the service checks the role, the verdict and the text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=64)
    decision: str = Field(min_length=1, max_length=16)
    justification: str = Field(max_length=2000)


@router.get("/access-reviews")
def list_reviews(caller: Reader) -> Response:
    """Every review, newest first (``access review show --json``)."""
    with caller.acting() as app:
        found = access_reviews.list_reviews(app, caller.principal)
    return reply({"reviews": [r.to_json() for r in found]})


@router.get("/access-reviews/{access_review_id}")
def show_review(caller: Reader, access_review_id: str) -> Response:
    """One review (``access review show ID --json``)."""
    with caller.acting() as app:
        review = access_reviews.get_review(app, caller.principal, access_review_id)
    return reply(review.to_json())


@router.post("/access-reviews", status_code=201)
def start_review(caller: Reviewer, body: ReviewStart | None = None) -> Response:
    """Start a review of every account holding a role (``access review start --json``)."""
    options = body or ReviewStart()
    with caller.acting() as app:
        review = access_reviews.start_review(
            app, caller.principal, lookback_days=options.lookback_days
        )
    return reply(review.to_json(), 201)


@router.post("/access-reviews/{access_review_id}/decisions")
def decide(caller: Reviewer, access_review_id: str, body: Decision) -> Response:
    """Keep or revoke one grant, never one's own (``access review decide --json``)."""
    with caller.acting() as app:
        review = access_reviews.decide(
            app,
            caller.principal,
            access_review_id,
            account=body.account,
            role=body.role,
            verdict=body.decision,
            justification=body.justification,
        )
    return reply(review.to_json())


@router.post("/access-reviews/{access_review_id}/close")
def close(caller: Reviewer, access_review_id: str) -> Response:
    """Close a review and apply its revocations through the approval path (``access review
    close --json``)."""
    with caller.acting() as app:
        review = access_reviews.close_review(app, caller.principal, access_review_id)
    return reply(review.to_json())
