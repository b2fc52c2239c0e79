"""``POST /inventory`` (``inventory.run``): probe every (or the named) source and vault from
the server's host and record the inventory (``affidavit inventory``; an unreachable source is
a result, ``"reachable": false``, which the CLI turns into exit 3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import inventory
from affidavit.services.views import inventory_json

router = APIRouter(tags=["inventory"])


class InventoryRun(BaseModel):
    """Only these sources (default: every one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=100
    )


@router.post("/inventory")
def take(
    caller: Annotated[Caller, Depends(allow(Permission.INVENTORY_RUN))],
    body: InventoryRun | None = None,
) -> Response:
    """Probe and record (``inventory --json``)."""
    options = body or InventoryRun()
    with caller.acting() as app:
        result = inventory.take_inventory(app, source_names=options.sources)
    return reply(inventory_json(result))
