"""``affidavit hold add|release|list``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_list, print_result, when
from affidavit.cli.state import app_for
from affidavit.cli.views import hold_json
from affidavit.services import backup as backups

app = typer.Typer(help="Legal holds: backups that must not be deleted.", no_args_is_help=True)

BackupArg = Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")]
CaseOpt = Annotated[str, typer.Option("--case", help="Case or matter id.")]


@app.command("add")
def add(
    ctx: typer.Context,
    backup_id: BackupArg,
    case: CaseOpt,
    reason: Annotated[str, typer.Option(help="Why the backup is held.")],
    json_out: JsonOpt = False,
) -> int:
    """Place a legal hold on a backup (remote-capable: --server)."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.post(
            client.route("backups", backup_id, "holds"), {"case": case, "reason": reason}
        )
    else:
        with app_for(ctx) as application:
            data = hold_json(backups.add_hold(application, backup_id, case_id=case, reason=reason))
    return print_result(
        data, f"Hold {data['case']} placed on {data['backup_id']}.", json_out=json_out
    )


@app.command("release")
def release(
    ctx: typer.Context,
    backup_id: BackupArg,
    case: CaseOpt,
    reason: Annotated[str, typer.Option(help="Why the hold ends.")],
    json_out: JsonOpt = False,
) -> int:
    """Release a legal hold (a gated operation: through the server, or with identities in
    use, it waits for a security officer's approval; remote-capable: --server)."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.post(
            f"{client.route('backups', backup_id, 'holds', case)}/release", {"reason": reason}
        )
    else:
        with app_for(ctx) as application:
            data = hold_json(
                backups.release_hold(application, backup_id, case_id=case, reason=reason)
            )
    return print_result(
        data, f"Hold {data['case']} on {data['backup_id']} released.", json_out=json_out
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    backup_id: Annotated[str | None, typer.Argument(metavar="[BACKUP]", help="Backup id.")] = None,
    active: Annotated[bool, typer.Option(help="Only active holds.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """List holds (of one backup; remote-capable: --server)."""
    found = client.view(
        ctx,
        "/holds",
        params={"backup": backup_id, "active": "true" if active else None},
        local=lambda app: {
            "holds": [hold_json(h) for h in backups.list_holds(app, backup_id, active_only=active)]
        },
    )["holds"]
    return print_list(
        "Holds",
        "holds",
        found,
        item_json=dict,
        columns=["backup", "case", "reason", "placed", "by", "released"],
        row=lambda h: [
            h["backup_id"],
            h["case"],
            h["reason"],
            when(h["created_at"]),
            h["created_by"],
            when(h["released_at"]),
        ],
        json_out=json_out,
    )
