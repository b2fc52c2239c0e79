"""``affidavit ledger key|checkpoint|proof|export|show|verify``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.log_views import print_log_verification
from affidavit.cli.output import JsonOpt, print_json, print_result, show, table
from affidavit.cli.state import app_for, state
from affidavit.services import ledger as svc

app = typer.Typer(
    help="The tamper-evident ledger: checkpoints, proofs, export and verification.",
    no_args_is_help=True,
)


@app.command("key")
def key(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Print the verifier key (vkey) that checks this ledger's checkpoints (remote-capable:
    --server, the server's)."""
    remote = client.remote(ctx)
    if remote is not None:
        vkey = str(remote.get("/ledger/key")["vkey"])
    else:
        vkey = svc.ledger_vkey(state(ctx).settings)
    if json_out:
        print_json({"vkey": vkey})
    else:
        typer.echo(vkey)
    return 0


@app.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option(help="Also save the signed checkpoint to this file.")
    ] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            help="Publish to a witness: a folder or s3://BUCKET/PREFIX (recorded in the ledger)."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Print a signed checkpoint (C2SP signed note) of the whole ledger (remote-capable:
    --server; --out and --publish name places on this host and stay local)."""
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only("ledger checkpoint", out=out, publish=publish)
        data = remote.get("/ledger/checkpoint")
    else:
        with app_for(ctx) as application:
            data = svc.create_checkpoint(application, out=out, publish=publish).to_json()
    if json_out:
        print_json(data)
        return 0
    typer.echo(data["note"], nl=False)
    if data["published"]:
        show(f"[dim]published to {data['published']}[/dim]")
    if data["out"]:
        show(f"[dim]saved to {data['out']}[/dim]")
    return 0


@app.command("proof")
def proof(
    ctx: typer.Context,
    seq: Annotated[int, typer.Option("--seq", min=0, help="Sequence number of the entry.")],
    size: Annotated[
        int | None,
        typer.Option(min=0, help="Tree size of a stored checkpoint (default: the newest)."),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Prove that an entry is in a signed checkpoint (RFC 9162 inclusion proof;
    remote-capable: --server, the read is in the access log as ``ledger-proof:SEQ``)."""
    data = client.view(
        ctx,
        client.route("ledger", "proof", str(seq)),
        params={"size": None if size is None else str(size)},
        local=lambda app: svc.inclusion_proof(app, seq, size=size).to_json(),
    )
    return _print_proof(
        data,
        f"Inclusion of seq {data['seq']} in the tree of {data['tree_size']}",
        {"entry": "entry", "leaf hash": "leaf_hash", "root": "root"},
        json_out=json_out,
    )


@app.command("consistency")
def consistency(
    ctx: typer.Context,
    old_size: Annotated[
        int, typer.Option("--old-size", min=1, help="Tree size of an older checkpoint.")
    ],
    json_out: JsonOpt = False,
) -> int:
    """Prove that the tree of an older size is a prefix of the newest signed checkpoint
    (RFC 9162 consistency proof): nothing before it was changed or removed (remote-capable:
    --server)."""
    data = client.view(
        ctx,
        "/ledger/consistency",
        params={"old_size": str(old_size)},
        local=lambda app: svc.consistency_proof(app, old_size).to_json(),
    )
    return _print_proof(
        data,
        f"Consistency of the tree of {data['old_size']} with the tree of {data['new_size']}",
        {"old root": "old_root", "new root": "new_root"},
        json_out=json_out,
    )


def _print_proof(
    data: dict[str, Any], title: str, fields: dict[str, str], *, json_out: bool
) -> int:
    """A verified proof: ``data`` as JSON, or a table titled ``title`` of ``fields`` (label ->
    key in ``data``), each hash of the proof, and that it verified."""
    if json_out:
        print_json(data)
        return 0
    rows: list[list[Any]] = [[label, data[k]] for label, k in fields.items()]
    rows += [[f"proof[{i}]", h] for i, h in enumerate(data["proof"])]
    rows.append(["verified", "yes"])
    show(table(title, ["field", "value"], rows))
    return 0


@app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The JSON Lines file to write (must not exist).")],
    json_out: JsonOpt = False,
) -> int:
    """Export every entry and checkpoint for an auditor (recorded in the ledger).
    Remote-capable: --server (the server writes it; it is downloaded to --out and its SHA-256
    checked against the one recorded)."""
    data = client.remote_export(ctx, "/ledger/exports", out)
    if data is None:
        with app_for(ctx) as application:
            data = svc.export_ledger(application, out).to_json()
    return print_result(
        data,
        f"Exported {data['entries']} entries and {data['checkpoints']} checkpoints to "
        f"{data['path']} (sha256 {data['sha256']}).",
        json_out=json_out,
    )


@app.command("show")
def show_(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this RFC 3339 time.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only entries with this action.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many (the oldest that match).")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """List ledger entries in sequence order (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/ledger/entries",
        params={"since": since, "action": action, "limit": None if limit is None else str(limit)},
        local=lambda app: {
            "entries": [
                e.to_json() for e in svc.show_events(app, since=since, action=action, limit=limit)
            ]
        },
    )
    if json_out:
        print_json(found)
        return 0
    rows = []
    for ev in found["entries"]:
        if ev.get("invalid"):
            rows.append([ev["seq"], None, None, "[red]invalid entry[/red]", None, None])
            continue
        details = json.dumps(ev["details"], ensure_ascii=False, separators=(",", ":"))
        rows.append([ev["seq"], ev["time"], ev["actor"], ev["action"], ev["subject"], details])
    show(table("Ledger", ["seq", "time", "actor", "action", "subject", "details"], rows))
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
            "--public-key", help="Verifier key (vkey), or a file holding it. Default: this home's."
        ),
    ] = None,
    old: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="A signed checkpoint saved earlier (detects rewrites)."),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Also parse and re-canonicalise every entry (slower).")
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Recompute every leaf and root, check the signatures, and report every discrepancy.
    Exit 1 when the ledger does not verify (remote-capable: --server, with the server's key;
    --file, --public-key and --checkpoint name this host's files and run locally only)."""
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only("ledger verify", file=file, public_key=public_key, checkpoint=old)
        data = remote.get("/ledger/verify", full="true" if full else None)
    elif file is not None:
        report = svc.verify_export(
            file,
            vkey=public_key,
            settings=state(ctx).settings,
            old_checkpoint=old,
            full=full,
        )
        data = report.to_json()
    else:
        with app_for(ctx) as application:
            report = svc.verify_catalog(application, vkey=public_key, old_checkpoint=old, full=full)
        data = report.to_json()
    return print_log_verification(data, json_out=json_out, log_name="ledger", signed="signed by")


@app.command("recover")
def recover(
    ctx: typer.Context,
    reason: Annotated[
        str, typer.Option("--reason", help="What was lost and why (recorded in the ledger).")
    ],
    json_out: JsonOpt = False,
) -> int:
    """Go on after the catalog was genuinely lost or restored from an older copy (loudly).

    The signer refuses to sign a catalog whose ledger does not extend the tree it last signed
    (HOME/keys/ledger.signed). When the entries are intact and only the checkpoints are gone,
    this stores the remembered checkpoint again; when the catalog is an older copy (or empty),
    it forks from the catalog's own signed checkpoint, archives the remembered one beside the
    key and records how many entries were lost. See docs/operations.md before running it.
    """
    with app_for(ctx) as application:
        result = svc.recover_ledger(application, reason=reason)
    if json_out:
        print_json(result.to_json())
        return 0
    if result.kind == "checkpoint-restored":
        show(
            f"restored the checkpoint of {result.signed_size} entries; recorded at seq {result.seq}"
        )
    else:
        show(
            f"[yellow]forked[/yellow]: the catalog holds {result.catalog_size} entries, the key "
            f"had signed {result.signed_size}; {result.lost} entries are lost. Recorded as seq "
            f"{result.seq}; the old checkpoint is kept at {result.archived}"
        )
    return 0
