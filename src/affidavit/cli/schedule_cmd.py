"""``affidavit due`` and ``affidavit run-due``: the verification and drill cadence."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.cluster_options import ClusterCaOpt, ClusterCertOpt, ClusterKeyOpt
from affidavit.cli.output import JsonOpt, print_json, show, table, when
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.services import schedule


def due(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Also list checks that are not due yet.")
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """List the verifications and drills that are due or overdue (cadence settings:
    verify_sample_every_hours, verify_full_every_days, drill_every_days; remote-capable:
    --server)."""
    data = client.view(
        ctx,
        "/schedule/due",
        params={"all": "true" if all_ else None},
        local=lambda app: schedule.due_json(schedule.due(app, include_upcoming=all_)),
    )
    if json_out:
        print_json(data)
        return 0
    items = data["items"]
    if not items:
        show("Nothing is due.")
        return 0
    show(
        table(
            "Scheduled checks" if all_ else "Due checks",
            ["check", "backup", "source", "last done", "due at", "state"],
            [
                [
                    i["kind"],
                    i["backup_id"],
                    i["source"],
                    when(i["last_done_at"]) or "never",
                    when(i["due_at"]),
                    ("OVERDUE" if i["overdue"] else "due") if i["due"] else "scheduled",
                ]
                for i in items
            ],
        )
    )
    return 0


def run_due(
    ctx: typer.Context,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="URL",
            help="Check the segments of the due verifications on a Dask cluster, as "
            "`verify --cluster` does: tls://SCHEDULER:PORT (tcp:// only on loopback).",
        ),
    ] = None,
    cluster_ca: ClusterCaOpt = None,
    cluster_cert: ClusterCertOpt = None,
    cluster_key: ClusterKeyOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Run every due verification and drill (for cron or a systemd timer); alert on failures
    and on overdue checks that could not run. Exit 1 when anything failed (remote-capable:
    --server; no progress bar then). --cluster and its TLS files are local only; a
    scheduler that does not answer is exit 3 before anything runs."""
    if client.remote(ctx) is not None:
        client.local_only(
            "run-due", cluster=cluster, cluster_ca=cluster_ca, cluster_cert=cluster_cert,
            cluster_key=cluster_key,
        )  # fmt: skip
    result = client.remote_post(ctx, "/schedule/run-due", {})
    if result is None:
        from affidavit.services.verify.cluster import ClusterTls

        tls = ClusterTls(ca_file=cluster_ca, cert=cluster_cert, key=cluster_key)
        with app_for(ctx) as application, reporting(json_out) as reporter:
            result = schedule.run_due(
                application, reporter, cluster=cluster, cluster_tls=tls
            ).to_json()
    if json_out:
        print_json(result)
        return 0 if result["ok"] else 1
    if not result["results"]:
        show("Nothing was due.")
        return 0
    show(
        table(
            "run-due",
            ["check", "backup", "outcome", "id", "message", "alert"],
            [
                [
                    r["kind"],
                    r["backup_id"],
                    r["outcome"],
                    r["check_id"],
                    r["message"],
                    r["alert_id"],
                ]
                for r in result["results"]
            ],
        )
    )
    return 0 if result["ok"] else 1
