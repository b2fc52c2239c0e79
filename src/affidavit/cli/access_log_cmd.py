"""``affidavit access-log show|verify|export|expire``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.log_views import print_log_verification
from affidavit.cli.output import JsonOpt, plain, print_json, print_result, show, table
from affidavit.cli.state import app_for, state
from affidavit.errors import InputError
from affidavit.services import access_log as svc

app = typer.Typer(
    help="The access log: who asked for what, from where (its own signed Merkle log).",
    no_args_is_help=True,
)


@app.command("show")
def show_(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this RFC 3339 time (or date).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only entries before this RFC 3339 time (or date).")
    ] = None,
    identity: Annotated[
        str | None, typer.Option(help="Only entries of this identity (account name).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many: the newest that match.")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """List access-log entries in sequence order (expired ones by what is left of them;
    remote-capable: --server)."""
    found = client.view(
        ctx,
        "/access-log",
        params={"since": since, "until": until, "identity": identity,
                "limit": None if limit is None else str(limit)},
        local=lambda app: {"entries": [
            item.to_json()
            for item in svc.show(app, since=since, until=until, identity=identity, limit=limit)
        ]},
    )  # fmt: skip
    if json_out:
        print_json(found)
        return 0
    if not found["entries"]:
        show("no access-log entries match")
        return 0
    rows = []
    for entry in found["entries"]:
        if "route" not in entry:  # expired, or not an access entry: what is left of it
            what = (
                "[red]not an access entry[/red]" if entry.get("invalid") else "[dim]expired[/dim]"
            )
            rows.append([entry["seq"], entry["time"], what, None, None, plain(entry["action"]),
                         None, plain(entry["outcome"]), None])  # fmt: skip
            continue
        device = entry["device"]
        where = " ".join(
            part for part in (entry["client_ip"], device["type"], device["os"], device["browser"])
            if part
        )  # fmt: skip
        status = entry["status"]
        rows.append(
            [
                entry["seq"],
                entry["time"],
                plain(entry["identity"]),
                plain(entry["auth_method"]),
                plain(where),
                plain(f"{entry['method']} {entry['route']}"),
                plain(entry["subject"]),
                entry["outcome"] + (f" {status}" if status is not None else ""),
                f"{entry['latency_us'] / 1000:.1f}",
            ]
        )
    show(
        table(
            "Access log",
            ["seq", "time", "identity", "auth", "client", "request", "subject", "outcome", "ms"],
            rows,
        )
    )
    return 0


@app.command("verify")
def verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify this export file instead of the catalog."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Verifier key (vkey) of the ledger, or a file holding it. Default: this home's.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Recompute every leaf and root, check every checkpoint and its signature, and report
    every discrepancy. Exit 1 when the access log does not verify (remote-capable: --server,
    with the server's key; --file and --public-key run locally only)."""
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only("access-log verify", file=file, public_key=public_key)
        data = remote.get("/access-log/verify")
    elif file is not None:
        data = svc.verify_file(file, vkey=public_key, settings=state(ctx).settings).to_json()
    else:
        with app_for(ctx) as application:
            data = svc.verify(application, vkey=public_key).to_json()
    return print_log_verification(
        data,
        json_out=json_out,
        log_name="access log",
        signed="signed as",
        unsigned=" (nothing recorded yet)",
    )


@app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The JSON Lines file to write (must not exist).")],
    json_out: JsonOpt = False,
) -> int:
    """Export the access log (entries, checkpoints, the verifier key) for an auditor, who
    checks it with `access-log verify --file F --public-key K` (recorded in the ledger).
    Remote-capable: --server (the server writes it; it is downloaded to --out and its SHA-256
    checked against the one recorded)."""
    data = client.remote_export(ctx, "/access-log/exports", out)
    if data is None:
        with app_for(ctx) as application:
            data = svc.export(application, out).to_json()
    return print_result(
        data,
        f"Exported {data['entries']} entries ({data['expired']} expired) and "
        f"{data['checkpoints']} checkpoints to {data['path']} (sha256 {data['sha256']}).",
        json_out=json_out,
    )


@app.command("expire")
def expire(
    ctx: typer.Context,
    older_than_days: Annotated[
        int | None,
        typer.Option(
            "--older-than-days",
            help="Drop the payloads of entries older than this. Default: the setting "
            "access_log_retention_days (400).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Apply the retention policy: entries past it lose their payload and keep their leaf
    hash, so the log still verifies (recorded in the ledger as access_log.expired).
    Remote-capable: --server."""
    if older_than_days is not None and not 1 <= older_than_days <= 36500:
        raise InputError(
            f"--older-than-days {older_than_days} is not between 1 and 36500",
            hint="give the retention period in whole days, e.g. --older-than-days 400",
        )
    period = None if older_than_days is None else timedelta(days=older_than_days)
    data = client.remote_post(ctx, "/access-log/expire", {"older_than_days": older_than_days})
    if data is None:
        with app_for(ctx) as application:
            data = svc.expire(application, older_than=period).to_json()
    if data["count"] == 0:
        message = f"nothing to expire: no entry with a payload is older than {data['older_than']}"
    else:
        message = (
            f"expired {data['count']} entries (seq {data['first']}..{data['last']}, older than "
            f"{data['older_than']}); recorded at ledger seq {data['ledger_seq']}"
        )
    return print_result(data, message, json_out=json_out)
