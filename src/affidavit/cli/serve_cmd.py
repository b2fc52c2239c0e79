"""``affidavit serve``: the authenticated REST API over this home (docs/server.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli.state import state
from affidavit.server import run as server


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback by default; others need TLS).")
    ] = server.DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="TCP port.")] = server.DEFAULT_PORT,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) to serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")
    ] = None,
    unsafe_no_tls: Annotated[
        bool,
        typer.Option(
            "--unsafe-no-tls",
            help="Unsafe: serve a non-loopback address without TLS (only behind a TLS proxy "
            "on this host); logged loudly.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Worker processes serving requests (forked; each with its own catalog "
            "connections). One process uses one core: on PostgreSQL give the cores the "
            "server may use.",
        ),
    ] = 1,
) -> int:
    """Serve the REST API (/api/v1) over this home: people and automation authenticate
    (password + TOTP sessions, API tokens) and every request is authorized by role."""
    options = server.ServeOptions(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        unsafe_no_tls=unsafe_no_tls,
        workers=workers,
    )
    options.check()  # refused before anything is opened
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    return server.serve(state(ctx).settings, options)  # logs an unsafe switch, every start
