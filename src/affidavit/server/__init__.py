"""``affidavit serve``: the authenticated REST API (``/api/v1``) over the same services the
CLI uses (L5: imports services, models, errors, constants and config only).

- :mod:`.app`: :func:`create_app`, and the build-time check that every route declares a gate;
- :mod:`.gates`: the one authorization choke point (credentials, CSRF, permission, MFA);
- :mod:`.routes`: one router per resource;
- :mod:`.replies`: JSON answers and the error-to-HTTP mapping;
- :mod:`.hardening`: security headers, body limits, the last catch.

- :mod:`.run`: serving it with uvicorn (``affidavit serve``).

``docs/server.md`` describes how to run it, the authentication methods and the routes. The
package imports nothing here, so that the CLI can offer ``serve`` (and its help) without
FastAPI and uvicorn installed (the ``server`` extra); ``serve`` says what to install.
"""
