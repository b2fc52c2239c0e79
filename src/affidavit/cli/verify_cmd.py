"""``affidavit verify BACKUP`` and ``affidavit verify list``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from affidavit.cli import client
from affidavit.cli.cluster_options import ClusterCaOpt, ClusterCertOpt, ClusterKeyOpt
from affidavit.cli.output import JsonOpt, print_json, print_list, show, table, when
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.cli.views import verification_json
from affidavit.services import verify as verifier
from affidavit.services.verify.cluster import ClusterTls

_DEFAULT = "run"
_HELP = ("--help", "-h")


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it is not a subcommand name, goes to ``run``:
    ``affidavit verify BACKUP`` is ``affidavit verify run BACKUP``, and ``verify list`` still
    lists."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in _HELP:
            args = [_DEFAULT, *args]
        result: list[str] = super().parse_args(ctx, args)
        return result


app = typer.Typer(
    cls=DefaultCommandGroup,
    help=(
        "Verify backups: integrity, content, and against the live source.\n\n"
        "Usage: `affidavit verify BACKUP [--against-source] [--sample PERCENT] "
        "[--workers N | --cluster tls://SCHEDULER:8786] [--json]` "
        "checks one backup (the same as `affidavit verify run BACKUP ...`); "
        "`affidavit verify list [BACKUP] [--json]` lists recorded verifications.\n\n"
        "Exit codes: 0 the backup verified; 1 findings (listed); 2 bad input; "
        "3 the vault or source could not be read.\n\n"
        "Remote-capable (--server): the server verifies against its own vault and answers "
        "when the result is recorded (no progress bar meanwhile; --workers and --cluster "
        "are local only)."
    ),
    no_args_is_help=True,
)


@app.command(_DEFAULT)
def run(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")],
    against_source: Annotated[
        bool,
        typer.Option(
            "--against-source",
            help="Also fingerprint the live source now and name the records that differ "
            "(MongoDB: changes after the backup seen in the oplog are drift, not failures).",
        ),
    ] = False,
    sample: Annotated[
        float | None,
        typer.Option(
            "--sample",
            metavar="PERCENT",
            help="Check a random PERCENT (0 < p <= 100) of the data artifacts; the seed is "
            "recorded. Signature, manifest, metadata and indexes are always checked.",
        ),
    ] = None,
    seed: Annotated[
        str | None,
        typer.Option(
            "--seed", help="Repeat the sample of an earlier verification (with --sample)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            help="Segments checked at a time for artifacts with a segment table "
            "(default: the cores available).",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="URL",
            help="Check the segments on a Dask cluster: tls://SCHEDULER:PORT (the backup's "
            "payload key travels to its workers; tcp:// only to a scheduler on loopback). "
            "The workers must see the vault (docs/scale.md).",
        ),
    ] = None,
    cluster_ca: ClusterCaOpt = None,
    cluster_cert: ClusterCertOpt = None,
    cluster_key: ClusterKeyOpt = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also recompute the whole-file and plaintext SHA-256s of artifacts with a "
            "segment table, even when the ledger vouches a deep verification of the same "
            "signed manifest (which makes later runs fast; docs/verification.md).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Verify a backup: signed manifest, every artifact's size, SHA-256, decryption and
    plaintext SHA-256, and its content re-fingerprinted against the manifest. Every finding is
    reported, and the result is signed and recorded in the ledger. Artifacts with a segment
    table are verified fast (every segment's SHA-256, every chunk decrypted and
    authenticated, the content re-fingerprinted) when the ledger records that the backup's
    writer proved its tables against the whole-file digests, or a passed deep verification of
    the same signed manifest; --deep recomputes the whole-file and plaintext digests too
    (setting verify_first_run = "deep": the first verification of each backup is deep).

    Remote-capable (--server): the server runs it against its vault and answers when the
    result is recorded; no progress is shown meanwhile (a large backup takes its time: the
    client waits up to an hour). --workers and --cluster are local only."""
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only(
            "verify", workers=workers, cluster=cluster, cluster_ca=cluster_ca,
            cluster_cert=cluster_cert, cluster_key=cluster_key,
        )  # fmt: skip
        body = {
            "against_source": against_source,
            "sample_percent": sample,
            "seed": seed,
            "deep": deep or None,
        }
        data = remote.post(
            client.route("backups", backup_id, "verify"),
            {k: v for k, v in body.items() if v is not None},
        )
        if json_out:
            print_json(data)
        else:
            _show(data)
        return 0 if data["ok"] else 1
    with app_for(ctx) as application, reporting(json_out) as reporter:
        result = verifier.verify_backup(
            application,
            backup_id,
            against_source=against_source,
            sample_percent=sample,
            seed=seed,
            workers=workers,
            cluster=cluster,
            cluster_tls=ClusterTls(ca_file=cluster_ca, cert=cluster_cert, key=cluster_key),
            reporter=reporter,
            deep=deep,
        )
    data = verification_json(result)
    if json_out:
        print_json(data)
    else:
        _show(data)
    return 0 if result.ok else 1


@app.command("list")
def list_(
    ctx: typer.Context,
    backup_id: Annotated[
        str | None, typer.Argument(metavar="[BACKUP]", help="Only this backup's verifications.")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Recorded verifications, newest first: time, result, duration, kind, findings
    (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/verifications",
        local=lambda app: {
            "verifications": [
                verification_json(v, brief=True)
                for v in verifier.list_verifications(app, backup_id)
            ]
        },
        params={"backup": backup_id},
    )
    return print_list(
        "Verifications",
        "verifications",
        found["verifications"],
        item_json=dict,
        columns=["id", "backup", "time", "result", "seconds", "kind", "findings"],
        row=lambda v: [
            v["id"],
            v["backup_id"],
            when(v["started_at"]),
            "ok" if v["ok"] else "FAILED",
            f"{v['seconds']:.1f}",
            v["kind"],
            v["findings_count"] or None,
        ],
        json_out=json_out,
        empty="No verifications yet: `affidavit verify BACKUP`.",
    )


def _show(v: dict[str, Any]) -> None:
    """A verification from its JSON view (local and remote alike)."""
    coverage = v["coverage"] or {}
    checked = coverage.get("artifacts_checked", 0)
    total = coverage.get("artifacts_total", 0)
    verdict = "[bold green]verified[/bold green]" if v["ok"] else "[bold red]FAILED[/bold red]"
    mode = v.get("mode", "deep")
    if v.get("vouched_by") is not None and v.get("vouched_by_action") == "backup.completed":
        mode = f"fast: tables proven when written, ledger seq {v['vouched_by']}"
    elif v.get("vouched_by") is not None:
        mode = f"fast after the deep verification at ledger seq {v['vouched_by']}"
    show(
        f"Backup [bold]{v['backup_id']}[/bold] {verdict} ({v['kind']}, {mode}, {checked} of "
        f"{total} artifacts, {v['seconds']:.1f}s); recorded as {v['id']}."
    )
    if v["sample_seed"]:
        show(f"Sample seed {v['sample_seed']} ({v['sample_percent']:g}%): repeat with --seed.")
    if v["findings"]:
        show(
            table(
                "Findings",
                ["code", "subject", "message"],
                [[f["code"], f["subject"], f["message"]] for f in v["findings"]],
            )
        )
