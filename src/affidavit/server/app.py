"""The app factory: :func:`create_app` builds the versioned API (``/api/v1``) over the
services, with its one authorization choke point checked at build time
(:func:`check_gates`), the error replies, and the hardening layer outside everything.

The server opens one :class:`~affidavit.services.context.App` for its lifetime (its lifespan
opens it and closes it); each request authenticates through its route's gate and runs its
service as the authenticated principal (``Caller.acting``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from anyio import to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from affidavit import __version__
from affidavit.config import Settings
from affidavit.server import web
from affidavit.server.access import AccessLogging
from affidavit.server.gates import Gate
from affidavit.server.hardening import DEFAULT_MAX_BODY, Hardening
from affidavit.server.replies import install_handlers
from affidavit.server.routes import ROUTERS
from affidavit.server.routes import oidc as oidc_routes
from affidavit.services.context import SYNC_THREADS, open_app
from affidavit.services.oidc import logins_for

API_PREFIX: Final = "/api/v1"
OPENAPI_PATH: Final = f"{API_PREFIX}/openapi.json"
PUBLIC_DOCUMENTS: Final = frozenset({OPENAPI_PATH})
"""Routes FastAPI adds itself that anyone may read (they hold no gate): the OpenAPI
document. (No docs page: it would need scripts from elsewhere, which the strict
Content-Security-Policy refuses.)"""


class UngatedRoute(Exception):
    """A route declares no gate, or more than one: the app is not built."""


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One route of the API and the gate it declares."""

    method: str
    path: str
    gate: Gate


def _gates(route: APIRoute) -> list[Gate]:
    return [d.call for d in route.dependant.dependencies if isinstance(d.call, Gate)]


def check_gates(routes: Sequence[BaseRoute]) -> list[RouteRule]:
    """Every route (included routers flattened, with their prefixes) with its gate; raise
    :class:`UngatedRoute` for a route that declares none (or several), or for any other kind
    of route but the public documents."""
    rules: list[RouteRule] = []
    for context in iter_route_contexts(routes):
        route, path = context.original_route, context.path
        if isinstance(route, APIRoute) and path is not None:
            gates = _gates(route)
            methods = sorted(context.methods or ())
            if len(gates) != 1:
                raise UngatedRoute(
                    f"{methods} {path} declares {len(gates)} gates: every route declares "
                    "exactly one (allow(PERMISSION), allow_self(), allow_session() or PUBLIC; "
                    "affidavit.server.gates)"
                )
            rules += [RouteRule(m, path, gates[0]) for m in methods]
        elif path not in PUBLIC_DOCUMENTS:
            raise UngatedRoute(f"{path or route!r} is not an API route with a gate")
    return rules


def route_rules(app: FastAPI) -> list[RouteRule]:
    """The API's routes and their gates (checked)."""
    return check_gates(app.routes)


def create_app(
    settings: Settings, *, tls: bool = False, max_body: int = DEFAULT_MAX_BODY
) -> FastAPI:
    """The API over the home of ``settings``. ``tls``: it is served over HTTPS (adds HSTS).
    Raises :class:`UngatedRoute` when a route declares no gate."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        # synchronous routes, gates and access-log entries run on at most as many threads
        # as the catalog keeps connections: more threads than that only open connections
        # and contend for the GIL (requests beyond it wait their turn on the event loop)
        to_thread.current_default_thread_limiter().total_tokens = SYNC_THREADS
        with open_app(settings) as app:
            # a threaded server must not fork export workers (services/exports/parallel.py)
            app.no_fork = "a server runs an export's records in one process"
            api.state.affidavit = app
            yield

    api = FastAPI(
        title="affidavit",
        version=__version__,
        summary="Audit and certify backups of NoSQL databases: the authenticated API.",
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    for router in ROUTERS:
        api.include_router(router, prefix=API_PREFIX)
    api.include_router(web.router)  # the web pages, outside /api (docs/web.md)
    check_gates(api.routes)
    # single sign-on's provider and logins under way (None: no provider configured)
    setattr(api.state, oidc_routes.STATE_KEY, logins_for(settings))
    # each route's full template (with its router's prefix), for the access log
    api.state.route_templates = {
        id(context.original_route): context.path for context in iter_route_contexts(api.routes)
    }
    install_handlers(api)
    web.install(api)  # a page's error is a page; forms' tokens checked like the API's header
    api.add_middleware(Hardening, tls=tls, max_body=max_body, max_upload=settings.max_upload_bytes)
    api.add_middleware(AccessLogging)  # outermost: refused requests are logged too
    return api
