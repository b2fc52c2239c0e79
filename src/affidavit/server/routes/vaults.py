"""``GET /vaults`` and ``GET /vaults/{name}`` (``vault.read``): the registered vaults, and one
with a fresh probe of its storage from the server's host; ``POST /vaults`` (``vault.manage``):
register one (a ``file://`` URL names a folder on the server's host)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import inventory
from affidavit.services.views import vault_json

router = APIRouter(tags=["vaults"])


@router.get("/vaults")
def list_vaults(caller: Annotated[Caller, Depends(allow(Permission.VAULT_READ))]) -> Response:
    """Every registered vault (``vault list --json``)."""
    with caller.acting() as app:
        found = inventory.list_vaults(app)
    return reply({"vaults": [vault_json(v) for v in found]})


@router.get("/vaults/{name}")
def show_vault(
    caller: Annotated[Caller, Depends(allow(Permission.VAULT_READ))], name: str
) -> Response:
    """One vault and its probe (``vault show --json``)."""
    with caller.acting() as app:
        vault, probe = inventory.get_vault(app, name)
    return reply(vault_json(vault, probe))


class NewVault(BaseModel):
    """What ``vault add`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=4000)
    region: str | None = Field(default=None, max_length=200)
    immutable_days: int | None = None


@router.post("/vaults", status_code=201)
def add_vault(
    caller: Annotated[Caller, Depends(allow(Permission.VAULT_MANAGE))], body: NewVault
) -> Response:
    """Register a vault (``vault add --json``)."""
    with caller.acting() as app:
        vault = inventory.add_vault(
            app,
            name=body.name,
            url=body.url,
            region=body.region,
            immutable_days=body.immutable_days,
        )
    return reply(vault_json(vault), 201)
