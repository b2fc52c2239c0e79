"""Serving the API with uvicorn (the one module that imports it): the bind and TLS rules.

The server binds the loopback address by default. It refuses an address other hosts can
reach without TLS (``--tls-cert``/``--tls-key``): passwords, TOTP codes and session secrets
would cross the network in the clear. ``unsafe_no_tls`` overrides that for a server behind a
TLS-terminating proxy on the same host; it is logged loudly at every start.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from affidavit.config import Settings
from affidavit.errors import InputError
from affidavit.server.http_limits import protocol
from affidavit.server.workers import MAX_WORKERS, serve_workers
from affidavit.services.context import open_app

log = logging.getLogger("affidavit.server")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8443


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this host can reach
    it. Any other name counts as reachable from elsewhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Where and how to serve."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    unsafe_no_tls: bool = False
    workers: int = 1

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    def check(self) -> list[str]:
        """Raise :class:`InputError` for options that must not be served; return the warnings
        to show loudly (an unsafe switch in use)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError(
                "--tls-cert and --tls-key go together", hint="give both, or neither on loopback"
            )
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise InputError(f"{path} is not a readable file", hint="check the TLS files")
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port} is not a TCP port", hint="1..65535")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InputError(
                f"--workers {self.workers} is out of range",
                hint=f"1..{MAX_WORKERS}; the default is the cores available",
            )
        if self.tls or is_loopback(self.host):
            return []
        if not self.unsafe_no_tls:
            raise InputError(
                f"refusing to serve on {self.host}, which other hosts can reach, without TLS",
                hint="give --tls-cert and --tls-key; behind a TLS proxy on this host, "
                "--unsafe-no-tls",
            )
        return [
            f"UNSAFE: serving on {self.host} WITHOUT TLS (--unsafe-no-tls): passwords, TOTP "
            "codes and session secrets cross the network in the clear unless a TLS proxy on "
            "this host terminates every connection"
        ]


def serve(settings: Settings, options: ServeOptions) -> int:
    """Run the API until interrupted (SIGINT, SIGTERM); the exit status. Checks the home's
    catalog first, so that a missing or outdated home fails here with its own message. With
    ``options.workers`` > 1 the app is served from that many forked processes
    (:mod:`affidavit.server.workers`)."""
    try:
        import uvicorn

        from affidavit.server.app import create_app
    except ModuleNotFoundError as exc:
        raise InputError(
            f"`affidavit serve` needs the Python package {exc.name!r}",
            hint="install the server extra: pip install 'affidavit[server]'",
        ) from exc

    for warning in options.check():
        log.warning("%s", warning)
    with open_app(settings) as app:
        catalog = app.catalog.describe()
    if catalog.startswith("sqlite"):
        log.warning(
            "the catalog is the embedded SQLite file (%s): fine for one host; a production "
            "server keeps it on PostgreSQL (--catalog-url)",
            catalog,
        )
    config = uvicorn.Config(
        create_app(settings, tls=options.tls),
        host=options.host,
        port=options.port,
        ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
        ssl_keyfile=str(options.tls_key) if options.tls_key else None,
        server_header=False,
        proxy_headers=False,  # the client address is the peer's, never a header's claim
        lifespan="on",
        log_level="info",
        access_log=False,  # the access log is affidavit's own (server/access.py)
        http=protocol(),  # httptools with a bound on a request's head
    )
    if options.workers > 1:
        return serve_workers(config, options.workers)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3
