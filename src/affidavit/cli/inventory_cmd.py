"""``affidavit inventory``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, show, table
from affidavit.cli.state import app_for
from affidavit.cli.views import inventory_json
from affidavit.services import inventory as inv


def inventory(
    ctx: typer.Context,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Only this source (repeatable).")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Probe every source and vault: reachability, engine version, datasets with record
    counts and classification, vault region and immutability. Exit 3 when a source is
    unreachable. Remote-capable: --server (the server's host probes them)."""
    data = client.remote_post(ctx, "/inventory", {"sources": source} if source else {})
    if data is None:
        with app_for(ctx) as application:
            data = inventory_json(inv.take_inventory(application, source_names=source))
    if json_out:
        print_json(data)
    else:
        render_inventory(data)
    return 3 if any(not s["reachable"] for s in data["sources"]) else 0


def render_inventory(result: Mapping[str, Any]) -> None:
    """The inventory as three tables, from its JSON view."""
    show(
        table(
            "Sources",
            [
                "source",
                "engine",
                "version",
                "reachable",
                "uri",
                "classification",
                "region",
                "owner",
            ],
            [
                [
                    s["name"],
                    s["engine"],
                    s["server"]["version"] if s["server"] else None,
                    "[green]yes[/green]" if s["reachable"] else f"[red]no[/red]: {s['error']}",
                    s["uri"],
                    s["classification"],
                    s["region"],
                    s["owner"],
                ]
                for s in result["sources"]
            ],
        )
    )
    show(
        table(
            "Datasets",
            ["source", "dataset", "records", "classification"],
            [
                [
                    d["source"],
                    d["name"],
                    f"{d['records']:,}" if d["records"] is not None else None,
                    d["classification"] + (" (inherited)" if d["classification_inherited"] else ""),
                ]
                for s in result["sources"]
                for d in s["datasets"]
            ],
        )
    )
    show(
        table(
            "Vaults",
            ["vault", "url", "region", "immutable days", "reachable", "protection"],
            [
                [
                    v["name"],
                    v["url"],
                    v["region"],
                    v["immutable_days"],
                    "[green]yes[/green]"
                    if v["probe"]["reachable"]
                    else f"[red]no[/red]: {v['probe']['detail']}",
                    v["probe"]["immutability"],
                ]
                for v in result["vaults"]
            ],
        )
    )
