"""``GET /sources``, ``GET /sources/{name}``: the registered sources (``source.read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import inventory
from affidavit.services.views import dataset_json, source_json

router = APIRouter(tags=["sources"])
Reader = Annotated[Caller, Depends(allow(Permission.SOURCE_READ))]


@router.get("/sources")
def list_sources(caller: Reader) -> Response:
    """Every registered source (``source list --json``)."""
    with caller.acting() as app:
        found = inventory.list_sources(app)
    return reply({"sources": [source_json(s) for s in found]})


@router.get("/sources/{name}")
def show_source(caller: Reader, name: str) -> Response:
    """One source with the datasets the catalog knows of it (``source show --json``)."""
    with caller.acting() as app:
        source, datasets = inventory.get_source(app, name)
    return reply({**source_json(source), "datasets": [dataset_json(d) for d in datasets]})
