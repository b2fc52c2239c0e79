"""``POST /progress`` (``progress.publish``): sign the progress summary with the ledger key and
publish it to an S3 prefix (``affidavit progress publish --out s3://BUCKET/PREFIX``), recorded
as on the host (docs/calendar.md, "Published progress").

Only an ``s3://`` destination is taken through the API: a folder would be one on the
server's host, which a client may not write into (a folder publication stays with the host's
CLI). ``progress verify`` reads no state and runs on the client."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import published_progress

router = APIRouter(tags=["progress"])


class Publication(BaseModel):
    """Where to publish (``s3://BUCKET/PREFIX``) and how many days of results it covers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: str = Field(min_length=1, max_length=2000)
    days: int = published_progress.DEFAULT_DAYS


def remote_destination(destination: str) -> str:
    """``destination`` when the server may publish there (an S3 prefix); else
    :class:`InputError`."""
    if not destination.startswith("s3://"):
        raise InputError(
            "through the server, progress is published to s3://BUCKET/PREFIX only: a folder "
            "would be one on the server's host",
            hint="give --out s3://BUCKET/PREFIX, or publish to a folder on the server's host "
            "with its CLI",
        )
    return destination


@router.post("/progress", status_code=201)
def publish(
    caller: Annotated[Caller, Depends(allow(Permission.PROGRESS_PUBLISH))], body: Publication
) -> Response:
    """Sign, publish and record (``progress publish --json``)."""
    destination = remote_destination(body.destination)
    with caller.acting() as app:
        published = published_progress.publish_progress(
            app, caller.principal, destination, days=body.days
        )
    return reply(published.to_json(), 201)
