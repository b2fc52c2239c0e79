"""``affidavit backup run|ingest|list|show|delete``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, print_list, show, table, when
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.cli.views import backup_json
from affidavit.errors import InputError
from affidavit.services import backup as backups

app = typer.Typer(help="Take, ingest, list and delete backups.", no_args_is_help=True)

VaultOpt = Annotated[
    str | None, typer.Option("--vault", help="Vault to store into (default: the only one).")
]
RetainOpt = Annotated[
    int | None,
    typer.Option("--retain-days", help="Retention in days (default: retention_days setting)."),
]


@app.command("run")
def run(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Registered source to back up.")],
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Only this dataset (repeatable).")
    ] = None,
    vault: VaultOpt = None,
    retain_days: RetainOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Take a point-in-time backup: MongoDB in the mongodump layout (snapshot reads), Redis as
    an RDB over the replication protocol; encrypted with age, locked in the vault until its
    retention date, fingerprinted while it streams, and signed. Remote-capable: --server (no
    progress bar then: the server answers when the backup is recorded)."""
    remote = client.remote(ctx)
    if remote is not None:
        body = {"source": source, "vault": vault, "datasets": dataset, "retain_days": retain_days}
        _report(remote.post("/backups", {k: v for k, v in body.items() if v is not None}), json_out)
        return 0
    with app_for(ctx) as application, reporting(json_out) as reporter:
        result = backups.run_backup(
            application,
            source,
            datasets=dataset,
            vault_name=vault,
            retain_days=retain_days,
            reporter=reporter,
        )
    _report(backup_json(result), json_out)
    return 0


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A mongodump folder, an --archive file or an RDB.")],
    fmt: Annotated[str, typer.Option("--format", help="mongodump|mongodump-archive|rdb")],
    source: Annotated[
        str | None, typer.Option("--source", help="The registered source it came from.")
    ] = None,
    vault: VaultOpt = None,
    retain_days: RetainOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Register a backup another tool made (mongodump, redis-cli --rdb, BGSAVE): check it,
    copy it into a vault (encrypted, locked) and fingerprint it. Remote-capable: --server
    uploads the file (a mongodump --archive or an RDB; a progress bar for a large one) and
    the server ingests it into its vault; a mongodump folder is ingested on the server's
    host only."""
    remote = client.remote(ctx)
    if remote is not None:
        if path.is_dir() or fmt == "mongodump":
            raise InputError(
                "through the server, backup ingest takes one file (a mongodump --archive or "
                "an RDB), not a mongodump folder",
                hint="make one file of it (mongodump --archive=FILE --format "
                "mongodump-archive), or ingest the folder on the server's host",
            )
        with reporting(json_out) as reporter:
            upload = remote.upload(path, reporter=reporter)
        body = {"upload": upload, "name": path.name, "format": fmt, "source": source,
                "vault": vault, "retain_days": retain_days}  # fmt: skip
        done = remote.post("/backups/ingests", {k: v for k, v in body.items() if v is not None})
        _report(done, json_out)
        return 0
    with app_for(ctx) as application, reporting(json_out) as reporter:
        result = backups.ingest_backup(
            application,
            path,
            fmt=fmt,
            source_name=source,
            vault_name=vault,
            retain_days=retain_days,
            reporter=reporter,
        )
    _report(backup_json(result), json_out)
    return 0


def _report(result: dict[str, Any], json_out: bool) -> None:
    """A backup just taken or ingested, from its JSON view (local and remote alike)."""
    if json_out:
        print_json(result)
        return
    show(
        f"Backup [bold]{result['backup_id']}[/bold] {result['status']}: "
        f"{len(result['artifacts'])} artifacts in vault {result['vault']}, "
        f"retained until {when(result['retain_until'])}."
    )
    show(
        table(
            None,
            ["dataset", "records", "fingerprint"],
            [[d["name"], f"{d['records']:,}", d["fingerprint"]] for d in result["datasets"]],
        )
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Argument(help="Only this source's backups.")] = None,
    json_out: JsonOpt = False,
) -> int:
    """The version history of backups, newest first (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/backups",
        params={"source": source},
        local=lambda app: {"backups": [backup_json(b) for b in backups.list_backups(app, source)]},
    )
    return print_list(
        "Backups",
        "backups",
        found["backups"],
        item_json=dict,
        columns=["id", "source", "status", "format", "started", "retain until", "records", "holds"],
        row=lambda b: [
            b["backup_id"],
            b["source"],
            b["status"],
            b["format"],
            when(b["started_at"]),
            when(b["retain_until"]),
            f"{sum(d['records'] for d in b['datasets']):,}",
            sum(1 for h in b["holds"] if h["active"]) or None,
        ],
        json_out=json_out,
        empty="No backups yet: `affidavit backup run SOURCE`.",
    )


@app.command("show")
def show_(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")],
    json_out: JsonOpt = False,
) -> int:
    """Everything recorded about one backup, including its signed envelope with --json
    (remote-capable: --server)."""
    data = client.view(
        ctx,
        client.route("backups", backup_id),
        local=lambda app: backup_json(backups.get_backup(app, backup_id), full=True),
    )
    if json_out:
        print_json(data)
        return 0
    skip = ("datasets", "artifacts", "holds", "envelope")
    rows = [[k, v] for k, v in data.items() if k not in skip]
    show(table(f"Backup {data['backup_id']}", ["field", "value"], rows))
    show(
        table(
            "Artifacts",
            ["path", "role", "size", "sha256 (stored)", "deleted"],
            [
                [a["path"], a["role"], f"{a['size']:,}", a["sha256"][:16], a["deleted"] or None]
                for a in data["artifacts"]
            ],
        )
    )
    show(
        table(
            "Datasets",
            ["dataset", "records", "fingerprint"],
            [[d["name"], f"{d['records']:,}", d["fingerprint"]] for d in data["datasets"]],
        )
    )
    return 0


@app.command("delete")
def delete(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the deletion receipt).")],
    json_out: JsonOpt = False,
) -> int:
    """Delete a backup's artifacts. Refused (exit 1) before its retention date or while any
    legal hold is active; the manifest and fingerprints stay on record. A gated operation:
    through the server it waits for a security officer's approval (exit 0, the request is
    printed; `affidavit request execute ID` then deletes). Remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.delete(client.route("backups", backup_id), {"reason": reason})
    else:
        with app_for(ctx) as application:
            receipt = backups.delete_backup(application, backup_id, reason=reason)
        data = receipt.to_json()
    if json_out:
        print_json(data)
    else:
        show(f"Deleted {len(data['removed'])} artifacts of {data['backup_id']}; manifest kept.")
    return 0
