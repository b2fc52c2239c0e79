"""``affidavit progress publish --out DIR|s3://BUCKET/PREFIX`` and ``progress verify FILE
--public-key VKEY``: the signed progress summary for stakeholders (docs/calendar.md,
"Published progress")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
from affidavit.cli.output import JsonOpt, print_result
from affidavit.errors import InputError
from affidavit.services import published_progress as svc

app = typer.Typer(
    help="Published progress: a signed summary of controls, findings and drills.",
    no_args_is_help=True,
)


@app.command("publish")
def publish(
    ctx: typer.Context,
    out: Annotated[
        str, typer.Option("--out", help="A folder, or s3://BUCKET/PREFIX.", show_default=False)
    ],
    days: Annotated[
        int, typer.Option("--days", help="Days of control results it covers.")
    ] = svc.DEFAULT_DAYS,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Sign the progress summary with the ledger key and publish it (recorded).
    Remote-capable: --server, to s3://BUCKET/PREFIX (the server publishes it from its host)."""
    if client.configured_server(ctx) is not None and not out.startswith("s3://"):
        raise InputError(
            f"`progress publish --out {out}` names a folder on this host: through the server, "
            "progress is published to s3://BUCKET/PREFIX only",
            hint=f"give --out s3://BUCKET/PREFIX, or unset {client.SERVER_ENV} and publish "
            "on the server's host",
        )
    data = client.remote_post(ctx, "/progress", {"destination": out, "days": days})
    if data is None:
        data = as_caller(
            ctx,
            lambda application, who: svc.publish_progress(
                application, who, out, days=days
            ).to_json(),
        )
    return print_result(
        data,
        f"Published {data['files'][0]}: {svc.summary_text(data['summary'])}.",
        json_out=json_out,
    )


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A published .dsse.json file.")],
    public_key: Annotated[
        str,
        typer.Option(help="The ledger's verifier key (text or a file holding it)."),
    ],
    json_out: JsonOpt = False,
) -> int:
    """Check a published summary offline with the ledger's public key. Exit codes: 0 it
    verifies; 1 changed or signed by another key; 2 not a summary / bad key."""
    report = svc.verify_progress(file, public_key)
    return print_result(
        report.to_json(),
        f"Verified: signed by {report.origin} (key {report.keyid}); "
        f"{svc.summary_text(report.summary)}.",
        json_out=json_out,
    )
