"""``affidavit keys status|rotate|export-identity``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, show, table, when
from affidavit.cli.state import app_for
from affidavit.services import keys
from affidavit.services.views import rotation_json

app = typer.Typer(help="Key-encryption keys that protect backup keys.", no_args_is_help=True)


@app.command("status")
def status(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """KEK versions, their ages, how many backup keys each wraps, and when rotation is due
    (remote-capable: --server)."""
    data = client.view(ctx, "/keys/status", local=lambda app: keys.key_status(app).to_json())
    versions = data["versions"]
    if json_out:
        print_json(data)
        return 0
    overdue = " [red](overdue)[/red]" if data["overdue"] else ""
    show(
        f"KEK {data['kek_id']}: current version {data['current_version']}; "
        f"next rotation due {when(data['next_rotation_due'])}{overdue}"
    )
    show(
        table(
            None,
            ["version", "created", "retired", "backup keys"],
            [
                [v["version"], v["created_at"][:19], v["retired_at"], v["wrapped_backup_keys"]]
                for v in versions
            ],
        )
    )
    return 0


@app.command("rotate")
def rotate(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Create a new KEK version and re-wrap every backup key under it (no data is
    re-encrypted); older versions are retired. Recorded in the ledger. A gated operation
    (docs/approvals.md); remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        result = remote.post("/keys/rotate")
    else:
        with app_for(ctx) as application:
            result = rotation_json(keys.rotate_keys(application))
    if json_out:
        print_json(result)
    else:
        show(
            f"Rotated {result['kek_id']}: v{result['old_version']} -> v{result['new_version']}; "
            f"{result['rewrapped']} backup keys and {result.get('rewrapped_totp', 0)} TOTP "
            f"secrets re-wrapped; retired {result['retired'] or 'none'}."
        )
    return 0


@app.command("export-identity")
def export_identity(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")],
    reason: Annotated[str, typer.Option(help="Why the key is disclosed (recorded).")],
) -> int:
    """Print the backup's age identity (AGE-SECRET-KEY-...) so that `age -d -i FILE` decrypts
    its artifacts without affidavit. The disclosure is recorded in the ledger first. A gated
    operation (docs/approvals.md); remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        answer = remote.post(f"{client.route('backups', backup_id)}/identity", {"reason": reason})
        identity = str(answer["identity"])
    else:
        with app_for(ctx) as application:
            identity = keys.export_identity(application, backup_id, reason=reason)
    print(identity)  # the one output, for a pipe into a file
    return 0
