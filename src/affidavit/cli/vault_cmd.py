"""``affidavit vault add|list|show``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, print_list, print_result, show, table
from affidavit.cli.state import app_for
from affidavit.cli.views import vault_json
from affidavit.services import inventory as inv

app = typer.Typer(
    help="Register and inspect vaults (where backups are stored).", no_args_is_help=True
)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short unique name, e.g. eu-vault.")],
    url: Annotated[str, typer.Option(help="file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX.")],
    region: Annotated[str | None, typer.Option(help="Region the vault is in.")] = None,
    immutable_days: Annotated[
        int | None,
        typer.Option(help="Days artifacts stay locked (S3 Object Lock, read-only files)."),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Register a vault (remote-capable: --server; a file:// URL then names a folder on the
    server's host)."""
    body = {"name": name, "url": url, "region": region, "immutable_days": immutable_days}
    data = client.remote_post(ctx, "/vaults", body)
    if data is None:
        with app_for(ctx) as application:
            data = vault_json(
                inv.add_vault(
                    application, name=name, url=url, region=region, immutable_days=immutable_days
                )
            )
    return print_result(
        data,
        f"Added vault [bold]{data['name']}[/bold] ({data['url']}).",
        json_out=json_out,
    )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """List the registered vaults (remote-capable: --server)."""
    found = client.view(
        ctx, "/vaults", local=lambda app: {"vaults": [vault_json(v) for v in inv.list_vaults(app)]}
    )
    return print_list(
        "Vaults",
        "vaults",
        found["vaults"],
        item_json=dict,
        columns=["name", "kind", "url", "region", "immutable days"],
        row=lambda v: [v["name"], v["kind"], v["url"], v["region"], v["immutable_days"]],
        json_out=json_out,
        empty="No vaults yet: `affidavit vault add --help`.",
    )


@app.command("show")
def show_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Vault name.")],
    json_out: JsonOpt = False,
) -> int:
    """Show one vault and probe its storage (reachability, protection; remote-capable:
    --server, probed from the server's host)."""
    data = client.view(
        ctx, client.route("vaults", name), local=lambda app: vault_json(*inv.get_vault(app, name))
    )
    if json_out:
        print_json(data)
        return 0
    rows = [[k, v] for k, v in data.items() if k != "probe"]
    rows += [[f"probe.{k}", v] for k, v in data["probe"].items()]
    show(table(f"Vault {data['name']}", ["field", "value"], rows))
    return 0
