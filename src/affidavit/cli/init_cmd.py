"""``affidavit init``."""

from __future__ import annotations

import typer

from affidavit.cli.output import print_json, show
from affidavit.cli.state import state
from affidavit.services.setup import initialise


def init(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> int:
    """Create (or upgrade) the affidavit home and its catalog. Safe to run again."""
    result = initialise(state(ctx).settings)
    if json_out:
        print_json(
            {
                "home": str(result.home),
                "catalog": result.catalog,
                "created_home": result.created_home,
                "schema_before": result.schema_before,
                "schema": result.schema_after,
                "changed": result.changed,
            }
        )
        return 0
    if result.schema_before is None:
        show(f"Initialised {result.home} (catalog schema {result.schema_after}).")
    elif result.changed:
        show(
            f"Upgraded the catalog in {result.home}: "
            f"{result.schema_before} -> {result.schema_after}."
        )
    else:
        show(f"{result.home} is up to date (catalog schema {result.schema_after}).")
    return 0
