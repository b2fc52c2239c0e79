"""``affidavit due`` and ``affidavit run-due``: the verification and drill cadence."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli import client
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


def run_due(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Run every due verification and drill (for cron or a systemd timer); alert on failures
    and on overdue checks that could not run. Exit 1 when anything failed (remote-capable:
    --server; no progress bar then)."""
    result = client.remote_post(ctx, "/schedule/run-due", {})
    if result is None:
        with app_for(ctx) as application, reporting(json_out) as reporter:
            result = schedule.run_due(application, reporter).to_json()
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
