"""``affidavit exception add|approve|revoke|list``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.governance_views import exception_json, exception_row
from affidavit.cli.output import (
    JsonOpt,
    plain,
    print_list,
    print_result,
    when,
)
from affidavit.cli.state import app_for
from affidavit.models.period import parse_moment
from affidavit.services import findings as svc

app = typer.Typer(
    help="Exceptions: a subject may fail a control until a date, approved by a second person.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(metavar="EXCEPTION", help="Exception id (X-...).")]


@app.command("add")
def add(
    ctx: typer.Context,
    control: Annotated[str, typer.Argument(help="Control id, e.g. backup.immutable.")],
    subject: Annotated[
        str, typer.Argument(help="Subject as `policy check` names it, or '*' for all.")
    ],
    reason: Annotated[str, typer.Option(help="Why the exception is acceptable.")],
    expires: Annotated[
        str, typer.Option(help="When it ends: YYYY-MM-DD (UTC, through that day) or RFC 3339.")
    ],
    json_out: JsonOpt = False,
) -> int:
    """Request an exception; it applies once another person approves it (remote-capable:
    --server)."""
    until = parse_moment(expires, flag="--expires", end_of_day=True)  # a date: through that day
    body = {"control": control, "subject": subject, "reason": reason, "expires": until.isoformat()}
    data = client.remote_post(ctx, "/exceptions", body)
    if data is None:
        with app_for(ctx) as application:
            data = exception_json(
                svc.request_exception(application, control, subject, reason=reason, expires=until)
            )
    return print_result(
        data,
        f"Exception {data['id']} requested for {plain(data['control'])} on "
        f"{plain(data['subject'])} until {when(data['expires_at'])}. Another person approves it "
        f"with `affidavit exception approve {data['id']}`.",
        json_out=json_out,
    )


@app.command("approve")
def approve(ctx: typer.Context, exc_id: IdArg, json_out: JsonOpt = False) -> int:
    """Approve an exception someone else requested. A gated operation (docs/approvals.md):
    through the server a second approver confirms it; remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.post(f"{client.route('exceptions', exc_id)}/approve")
    else:
        with app_for(ctx) as application:
            data = exception_json(svc.approve_exception(application, exc_id))
    return print_result(
        data,
        f"Exception {data['id']} approved until {when(data['expires_at'])}.",
        json_out=json_out,
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    exc_id: IdArg,
    reason: Annotated[str, typer.Option(help="Why it ends early.")],
    json_out: JsonOpt = False,
) -> int:
    """Withdraw an exception before it expires (remote-capable: --server)."""
    data = client.remote_post(ctx, f"{client.route('exceptions', exc_id)}/revoke",
                              {"reason": reason})  # fmt: skip
    if data is None:
        with app_for(ctx) as application:
            data = exception_json(svc.revoke_exception(application, exc_id, reason=reason))
    return print_result(data, f"Exception {data['id']} revoked.", json_out=json_out)


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """List exceptions (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/exceptions",
        local=lambda app: {"exceptions": [exception_json(e) for e in svc.list_exceptions(app)]},
    )["exceptions"]
    return print_list(
        "Exceptions",
        "exceptions",
        found,
        item_json=dict,
        columns=[
            "id",
            "control",
            "subject",
            "status",
            "requested by",
            "approved by",
            "expires",
            "reason",
        ],
        row=exception_row,
        json_out=json_out,
    )
