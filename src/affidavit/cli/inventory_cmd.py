"""``affidavit inventory``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli.output import JsonOpt, print_json, show, table
from affidavit.cli.state import app_for
from affidavit.cli.views import inventory_json
from affidavit.services import inventory as inv
from affidavit.services.inventory import Inventory


def inventory(
    ctx: typer.Context,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Only this source (repeatable).")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Probe every source and vault: reachability, engine version, datasets with record
    counts and classification, vault region and immutability. Exit 3 when a source is
    unreachable."""
    with app_for(ctx) as application:
        result = inv.take_inventory(application, source_names=source)
    if json_out:
        print_json(inventory_json(result))
    else:
        render_inventory(result)
    return 3 if result.unreachable else 0


def render_inventory(result: Inventory) -> None:
    """The inventory as three tables."""
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
                    s.test.source.name,
                    s.test.source.engine,
                    s.test.description.version if s.test.description else None,
                    "[green]yes[/green]" if s.test.reachable else f"[red]no[/red]: {s.test.error}",
                    s.test.source.uri,
                    s.test.source.classification,
                    s.test.source.region,
                    s.test.source.owner,
                ]
                for s in result.sources
            ],
        )
    )
    show(
        table(
            "Datasets",
            ["source", "dataset", "records", "classification"],
            [
                [
                    d.source,
                    d.name,
                    f"{d.records:,}" if d.records is not None else None,
                    f"{d.classification}" + (" (inherited)" if d.inherited else ""),
                ]
                for s in result.sources
                for d in s.datasets
            ],
        )
    )
    show(
        table(
            "Vaults",
            ["vault", "url", "region", "immutable days", "reachable", "protection"],
            [
                [
                    v.vault.name,
                    v.vault.url,
                    v.vault.region,
                    v.vault.immutable_days,
                    "[green]yes[/green]"
                    if v.probe.reachable
                    else f"[red]no[/red]: {v.probe.detail}",
                    v.probe.immutability,
                ]
                for v in result.vaults
            ],
        )
    )
