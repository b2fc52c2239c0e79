"""``affidavit baseline approve|show``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, plain, print_json, print_result, show, when
from affidavit.cli.state import app_for
from affidavit.services import baseline as svc
from affidavit.services.views import baseline_json

app = typer.Typer(
    help="The approved configuration of sources and vaults; `policy check` reports drift.",
    no_args_is_help=True,
)


@app.command("approve")
def approve(
    ctx: typer.Context,
    note: Annotated[str, typer.Option(help="Why this configuration is right (recorded).")],
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Read every source's and vault's security configuration now and approve it
    (remote-capable: --server, with a fresh TOTP check)."""
    data = client.remote_post(ctx, "/baselines", {"note": note}, code)
    if data is None:
        with app_for(ctx) as application:
            data = baseline_json(svc.approve_baseline(application, note=note))
    content = data["content"]
    return print_result(
        data,
        f"Baseline {data['id']} approved by {plain(data['approved_by'])}: "
        f"{len(content['sources'])} source(s), {len(content['vaults'])} vault(s), policy version "
        f"{content['policy_version'] or '-'} (sha256 {data['sha256'][:16]}...).",
        json_out=json_out,
    )


@app.command("show")
def show_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Print the baseline in force (remote-capable: --server)."""
    data = client.view(
        ctx, "/baseline", local=lambda app: baseline_json(svc.baseline_in_force(app))
    )
    if json_out:
        print_json(data)
    else:
        show(f"Baseline {data['id']}, approved {when(data['approved_at'])} by "
             f"{plain(data['approved_by'])}:")  # fmt: skip
        typer.echo(json.dumps(data["content"], indent=2, sort_keys=True))
    return 0
