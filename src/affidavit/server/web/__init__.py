"""The web pages of ``affidavit serve``: server-rendered HTML over the same services as the
API (docs/web.md).

- :mod:`.routes`: the pages, each behind its gate like every API route;
- :mod:`.pages`: the templates' environment and the layout's context;
- :mod:`.dashboard`: the dashboard's figures, computed from the services' results;
- :mod:`.security`: anti-CSRF tokens in forms, the login form's token, safe redirects;
- :mod:`.errors`: a page's error is a page (a browser without a session goes to the login).

No script: the pages are HTML and one stylesheet, under a Content-Security-Policy that
allows nothing else (``hardening.PAGE_CSP``). Charts are SVG from
:mod:`affidavit.render.chart`, the component the evidence report uses.
"""

from __future__ import annotations

from fastapi import FastAPI

from affidavit.server.web.errors import install_page_errors
from affidavit.server.web.routes import router
from affidavit.server.web.security import FormTokens

__all__ = ["install", "router"]


def install(api: FastAPI) -> None:
    """Give ``api`` (which includes :data:`router`) the pages' error pages (wrapping the
    API's handlers: call after ``replies.install_handlers``) and the form-token layer (call
    before adding the hardening layer, so that it runs inside it, on the whole body)."""
    install_page_errors(api)
    api.add_middleware(FormTokens)
