"""``GET /health``: whether the server answers (public; says nothing else)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from affidavit.server.gates import PUBLIC
from affidavit.server.replies import reply

router = APIRouter(tags=["health"])


@router.get("/health")
def health(_: Annotated[None, Depends(PUBLIC)]) -> Response:
    """The server is up."""
    return reply({"status": "ok"})
