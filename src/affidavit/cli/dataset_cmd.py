"""``affidavit dataset classify``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
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
    """Give a dataset its own classification (until then it inherits its source's;
    remote-capable: --server)."""
    parsed = parse_classification(level)
    body = {"dataset": ref, "level": parsed.value, "reason": reason}
    data = client.remote_post(ctx, "/dataset-classifications", body)
    if data is None:
        with app_for(ctx) as application:
            data = dataset_json(inv.classify_dataset(application, ref, parsed, reason=reason))
    return print_result(
        data,
        f"{data['source']}/{data['name']} is now [bold]{data['classification']}[/bold].",
        json_out=json_out,
    )
