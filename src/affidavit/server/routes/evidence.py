"""``POST /evidence-packages`` (``evidence.build``): build a signed evidence package for a
period in the server's home (``affidavit evidence build``), answered with its summary and id;
``GET /evidence-packages/{evidence_package_id}`` (``evidence.verify``: whoever may check a
package may fetch it): the package's bytes, which the CLI writes to the file it was given.
Each download is an access-log entry naming the package (``evidence-package:ID``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, Response

from affidavit.models.period import Period
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import evidence

router = APIRouter(tags=["evidence"])


class Build(BaseModel):
    """What ``evidence build`` takes (``from``/``to``: ``YYYY-MM-DD`` or RFC 3339)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: str = Field(alias="from", min_length=1, max_length=64)
    end: str = Field(alias="to", min_length=1, max_length=64)
    framework: str | None = Field(default=None, max_length=64)


@router.post("/evidence-packages", status_code=201)
def build(
    caller: Annotated[Caller, Depends(allow(Permission.EVIDENCE_BUILD))], body: Build
) -> Response:
    """Build and record a package (``evidence build --json``, with the package's id)."""
    period = Period.parse(body.start, body.end)
    with caller.acting() as app:
        package_id, built = evidence.build_evidence_package(
            app, period=period, framework=body.framework
        )
    return reply({**built.to_json(), "package": package_id}, 201)


@router.get("/evidence-packages/{evidence_package_id}")
def download(
    caller: Annotated[Caller, Depends(allow(Permission.EVIDENCE_VERIFY))],
    evidence_package_id: str,
) -> Response:
    """The package's bytes (``application/gzip``)."""
    with caller.acting() as app:
        path = evidence.evidence_package(app, evidence_package_id)
    return FileResponse(
        path, media_type="application/gzip", filename=f"{evidence_package_id}.tar.gz"
    )
