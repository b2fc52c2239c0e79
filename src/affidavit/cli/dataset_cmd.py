"""``affidavit dataset classify``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli.output import JsonOpt, print_result
from affidavit.cli.state import app_for
from affidavit.cli.views import dataset_json
from affidavit.models.inventory import parse_classification
from affidavit.services import inventory as inv

app = typer.Typer(help="Classify datasets.", no_args_is_help=True)


@app.command("classify")
def classify(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="SOURCE/DATASET", help="e.g. orders-db/shop.orders")
    ],
    level: Annotated[str, typer.Argument(help="public|internal|confidential|restricted")],
    reason: Annotated[str, typer.Option(help="Why this level (recorded in the ledger).")],
    json_out: JsonOpt = False,
) -> int:
    """Give a dataset its own classification (until then it inherits its source's)."""
    parsed = parse_classification(level)
    with app_for(ctx) as application:
        dataset = inv.classify_dataset(application, ref, parsed, reason=reason)
    return print_result(
        dataset_json(dataset),
        f"{dataset.source}/{dataset.name} is now [bold]{dataset.classification}[/bold].",
        json_out=json_out,
    )
