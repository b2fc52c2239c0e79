"""``affidavit due`` and ``affidavit run-due``: the verification and drill cadence."""

from __future__ import annotations

from typing import Annotated

import typer

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
    verify_sample_every_hours, verify_full_every_days, drill_every_days)."""
    with app_for(ctx) as application:
        items = schedule.due(application, include_upcoming=all_)
    if json_out:
        print_json(
            {
                "due": sum(1 for i in items if i.is_due),
                "overdue": sum(1 for i in items if i.is_due and i.overdue),
                "items": [i.to_json() for i in items],
            }
        )
        return 0
    if not items:
        show("Nothing is due.")
        return 0
    show(
        table(
            "Scheduled checks" if all_ else "Due checks",
            ["check", "backup", "source", "last done", "due at", "state"],
            [
                [
                    i.kind.value,
                    i.backup_id,
                    i.source,
                    when(i.last_done_at) or "never",
                    when(i.due_at),
                    ("OVERDUE" if i.overdue else "due") if i.is_due else "scheduled",
                ]
                for i in items
            ],
        )
    )
    return 0


def run_due(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Run every due verification and drill (for cron or a systemd timer); alert on failures
    and on overdue checks that could not run. Exit 1 when anything failed."""
    with app_for(ctx) as application, reporting(json_out) as reporter:
        result = schedule.run_due(application, reporter)
    if json_out:
        print_json(result.to_json())
        return 0 if result.ok else 1
    if not result.results:
        show("Nothing was due.")
        return 0
    show(
        table(
            "run-due",
            ["check", "backup", "outcome", "id", "message", "alert"],
            [
                [
                    r.item.kind.value,
                    r.item.backup_id,
                    r.outcome.value,
                    r.check_id,
                    r.message,
                    r.alert_id,
                ]
                for r in result.results
            ],
        )
    )
    return 0 if result.ok else 1
