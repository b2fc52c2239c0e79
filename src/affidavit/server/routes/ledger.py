"""``GET /ledger/checkpoint``, ``GET /ledger/verify``, ``GET /ledger/proof/{seq}``,
``GET /ledger/entries``, ``GET /ledger/consistency``, ``GET /ledger/key`` (``ledger.read``):
the ledger's signed state, proofs, entries and verifier key (a proof's read is in the access
log as ``ledger-proof:SEQ``). Reading a checkpoint writes
nothing; saving or publishing one (``ledger checkpoint --out|--publish``, ``ledger.checkpoint``)
names places on the server's host and stays with its CLI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import ledger

router = APIRouter(tags=["ledger"])
Reader = Annotated[Caller, Depends(allow(Permission.LEDGER_READ))]


@router.get("/ledger/checkpoint")
def checkpoint(caller: Reader) -> Response:
    """The signed checkpoint of the whole ledger (``ledger checkpoint --json``)."""
    with caller.acting() as app:
        result = ledger.create_checkpoint(app)
    return reply(result.to_json())


@router.get("/ledger/verify")
def verify(caller: Reader, full: bool = False) -> Response:
    """Recompute every leaf and root and check the signatures with the home's key
    (``ledger verify --json``; a ledger that does not verify is a result, ``"ok": false``)."""
    with caller.acting() as app:
        report = ledger.verify_catalog(app, full=full)
    return reply(report.to_json())


@router.get("/ledger/proof/{seq}")
def proof(
    caller: Reader,
    seq: int,
    size: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """An RFC 9162 inclusion proof of entry ``seq`` in a signed checkpoint (``ledger proof
    --json``)."""
    with caller.acting() as app:
        result = ledger.inclusion_proof(app, seq, size=size)
    return reply(result.to_json())


@router.get("/ledger/entries")
def entries(
    caller: Reader,
    since: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Entries in sequence order, filtered by time and action (``ledger show --json``)."""
    with caller.acting() as app:
        found = ledger.show_events(app, since=since, action=action, limit=limit)
    return reply({"entries": [e.to_json() for e in found]})


@router.get("/ledger/consistency")
def consistency(caller: Reader, old_size: Annotated[int, Query(ge=1)]) -> Response:
    """An RFC 9162 consistency proof of the tree of ``old_size`` with the newest signed
    checkpoint (``ledger consistency --json``)."""
    with caller.acting() as app:
        result = ledger.consistency_proof(app, old_size)
    return reply(result.to_json())


@router.get("/ledger/key")
def key(caller: Reader) -> Response:
    """The verifier key of the server's ledger (``ledger key --json``)."""
    with caller.acting() as app:
        vkey = ledger.ledger_vkey(app.settings)
    return reply({"vkey": vkey})
