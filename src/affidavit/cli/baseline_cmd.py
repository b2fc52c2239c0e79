"""``affidavit baseline approve|show``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from affidavit.cli.governance_views import baseline_json
from affidavit.cli.output import JsonOpt, plain, print_json, print_result, show, when
from affidavit.cli.state import app_for
from affidavit.errors import NotFound
from affidavit.services import baseline as svc

app = typer.Typer(
    help="The approved configuration of sources and vaults; `policy check` reports drift.",
    no_args_is_help=True,
)


@app.command("approve")
def approve(
    ctx: typer.Context,
    note: Annotated[str, typer.Option(help="Why this configuration is right (recorded).")],
    json_out: JsonOpt = False,
) -> int:
    """Read every source's and vault's security configuration now and approve it."""
    with app_for(ctx) as application:
        b = svc.approve_baseline(application, note=note)
    return print_result(
        baseline_json(b),
        f"Baseline {b.id} approved by {plain(b.approved_by)}: {len(b.content['sources'])} "
        f"source(s), {len(b.content['vaults'])} vault(s), policy version "
        f"{b.content['policy_version'] or '-'} (sha256 {b.sha256[:16]}...).",
        json_out=json_out,
    )


@app.command("show")
def show_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Print the baseline in force."""
    with app_for(ctx) as application:
        b = svc.latest_baseline(application)
    if b is None:
        raise NotFound("no baseline has been approved", hint="`affidavit baseline approve`")
    if json_out:
        print_json(baseline_json(b))
    else:
        show(f"Baseline {b.id}, approved {when(b.approved_at)} by {plain(b.approved_by)}:")
        typer.echo(json.dumps(b.content, indent=2, sort_keys=True))
    return 0
