"""``GET /sources``, ``GET /sources/{name}``: the registered sources (``source.read``);
``POST /dataset-classifications`` (``dataset.classify``): give a dataset its own
classification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.inventory import parse_classification
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


class Classification(BaseModel):
    """What ``dataset classify`` takes: ``SOURCE/DATASET``, the level and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1, max_length=600)
    level: str = Field(min_length=1, max_length=32)
    reason: str = Field(max_length=2000)


@router.post("/dataset-classifications")
def classify(
    caller: Annotated[Caller, Depends(allow(Permission.DATASET_CLASSIFY))], body: Classification
) -> Response:
    """Classify one dataset (``dataset classify --json``)."""
    level = parse_classification(body.level)
    with caller.acting() as app:
        dataset = inventory.classify_dataset(app, body.dataset, level, reason=body.reason)
    return reply(dataset_json(dataset))
