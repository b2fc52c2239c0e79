"""``affidavit source add|list|show|test|remove``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from affidavit.cli import client
from affidavit.cli.output import (
    JsonOpt,
    error,
    print_json,
    print_list,
    print_result,
    show,
    table,
    when,
)
from affidavit.cli.state import app_for
from affidavit.cli.views import dataset_json, source_json, source_test_json
from affidavit.models.inventory import parse_classification, parse_engine
from affidavit.services import inventory as inv
from affidavit.services.context import App
from affidavit.services.secrets import make_secret_ref

app = typer.Typer(help="Register and inspect database sources.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short unique name, e.g. orders-db.")],
    engine: Annotated[str, typer.Option(help="Database engine: mongodb|redis.")],
    uri: Annotated[str, typer.Option(help="Connection URI, without a password.")],
    classification: Annotated[
        str, typer.Option(help="Default classification: public|internal|confidential|restricted.")
    ],
    secret_env: Annotated[
        str | None, typer.Option(help="Environment variable that holds the password.")
    ] = None,
    secret_file: Annotated[
        str | None, typer.Option(help="File (mode 0600) that holds the password.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Region the source runs in.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner's e-mail address.")] = None,
    json_out: JsonOpt = False,
) -> int:
    """Register a source. Passwords never go in the URI: reference them with
    --secret-env or --secret-file; they are read only when affidavit connects
    (remote-capable: --server, where they name a variable of the server's process or a file
    on the server's host by its absolute path)."""
    eng = parse_engine(engine)
    level = parse_classification(classification)
    body = {
        "name": name,
        "engine": eng.value,
        "uri": uri,
        "classification": level.value,
        "secret_env": secret_env,
        "secret_file": secret_file,
        "region": region,
        "owner": owner,
    }
    data = client.remote_post(ctx, "/sources", body)
    if data is None:
        secret = make_secret_ref(env=secret_env, file=secret_file)
        with app_for(ctx) as application:
            data = source_json(
                inv.add_source(
                    application,
                    name=name,
                    engine=eng,
                    uri=uri,
                    secret=secret,
                    classification=level,
                    region=region,
                    owner=owner,
                )
            )
    return print_result(
        data,
        f"Added source [bold]{data['name']}[/bold] ({data['engine']}, {data['classification']}).",
        json_out=json_out,
    )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """List the registered sources (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/sources",
        local=lambda app: {"sources": [source_json(s) for s in inv.list_sources(app)]},
    )
    return print_list(
        "Sources",
        "sources",
        found["sources"],
        item_json=dict,
        columns=["name", "engine", "uri", "secret", "classification", "region", "owner"],
        row=lambda s: [
            s["name"],
            s["engine"],
            s["uri"],
            s["secret"],
            s["classification"],
            s["region"],
            s["owner"],
        ],
        json_out=json_out,
        empty="No sources yet: `affidavit source add --help`.",
    )


@app.command("show")
def show_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Source name.")],
    json_out: JsonOpt = False,
) -> int:
    """Show one source and the datasets the catalog knows of it (remote-capable: --server)."""

    def local(app: App) -> dict[str, Any]:
        source, datasets = inv.get_source(app, name)
        return {**source_json(source), "datasets": [dataset_json(d) for d in datasets]}

    data = client.view(ctx, client.route("sources", name), local=local)
    if json_out:
        print_json(data)
        return 0
    fields = [[k, v] for k, v in data.items() if k != "datasets"]
    show(table(f"Source {data['name']}", ["field", "value"], fields))
    show(_dataset_table(data["datasets"]))
    return 0


@app.command("test")
def check_connection(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Source name.")],
    json_out: JsonOpt = False,
) -> int:
    """Connect to a source, describe its server and count its datasets (records nothing).
    Exit 3 when it cannot be reached (remote-capable: --server, connecting from the server's
    host)."""
    result = client.remote_post(ctx, client.route("sources", name, "test"), {})
    if result is None:
        with app_for(ctx) as application:
            result = source_test_json(inv.test_source(application, name))
    if json_out:
        print_json(result)
    elif result["reachable"]:
        desc = result["server"] or {}
        show(
            f"[green]reachable[/green]: {result['source']} runs {desc.get('engine')} "
            f"{desc.get('version')} (tls={desc.get('tls')}, auth={desc.get('auth_required')})"
        )
        show(table(None, ["dataset", "records"], [[d["name"], d["records"]]
                                                  for d in result["datasets"]]))  # fmt: skip
    if not result["reachable"]:
        if not json_out:
            what = "is unreachable" if result["exit_code"] == 3 else "cannot be tested"
            error(f"{result['source']} {what}: {result['error']}", result["hint"])
        return int(result["exit_code"])
    return 0


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Source name.")],
    reason: Annotated[str, typer.Option(help="Why the source is removed (recorded).")],
    json_out: JsonOpt = False,
) -> int:
    """Unregister a source (recorded in the ledger with the reason). A gated operation
    (docs/approvals.md); remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        remote.delete(client.route("sources", name), {"reason": reason})
    else:
        with app_for(ctx) as application:
            inv.remove_source(application, name, reason=reason)
    return print_result({"removed": name}, f"Removed source {name}.", json_out=json_out)


def _dataset_table(datasets: list[dict[str, Any]]) -> Table:
    """The datasets table, from the datasets' JSON views."""
    return table(
        "Datasets",
        ["dataset", "records", "classification", "seen"],
        [
            [
                d["name"],
                d["records"],
                d["classification"] + (" (inherited)" if d["classification_inherited"] else ""),
                when(d["discovered_at"]),
            ]
            for d in datasets
        ],
    )
