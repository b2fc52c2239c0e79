"""``affidavit finding list|show|ack|resolve``."""

from __future__ import annotations

from typing import Annotated

import typer

from affidavit.cli.governance_views import finding_row
from affidavit.cli.output import (
    JsonOpt,
    plain,
    print_json,
    print_list,
    print_result,
    show,
    table,
    when,
)
from affidavit.cli.state import app_for
from affidavit.models.governance import FindingStatus
from affidavit.services import findings as svc

app = typer.Typer(
    help="Findings of policy checks: open -> acknowledged -> resolved, with a trail.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(metavar="FINDING", help="Finding id (F-...).")]
NoteOpt = Annotated[str, typer.Option(help="What was done, and why (recorded).")]


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        list[FindingStatus] | None,
        typer.Option(help="Only these statuses (repeatable). Default: open and acknowledged."),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved findings.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """List findings, most severe first."""
    wanted = None if show_all else (status or [FindingStatus.OPEN, FindingStatus.ACKNOWLEDGED])
    with app_for(ctx) as application:
        found = svc.list_findings(application, status=wanted)
    found.sort(key=lambda f: (f.severity.rank, f.due_at, f.id))
    return print_list(
        "Findings",
        "findings",
        found,
        item_json=lambda f: f.to_json(),
        columns=["id", "status", "severity", "control", "subject", "owner", "due", "detail"],
        row=finding_row,
        json_out=json_out,
    )


@app.command("show")
def show_(ctx: typer.Context, finding_id: IdArg, json_out: JsonOpt = False) -> int:
    """One finding with its remediation trail."""
    with app_for(ctx) as application:
        f = svc.get_finding(application, finding_id)
    if json_out:
        print_json(f.to_json())
        return 0
    details: list[list[str | None]] = [
        ["control", plain(f.control)],
        ["subject", plain(f.subject)],
        ["status", f.status.value],
        ["severity", f.severity.value],
        ["owner", plain(f.owner)],
        ["opened", when(f.opened_at)],
        ["due", when(f.due_at)],
        ["message", plain(f.message)],
        ["evidence", plain(", ".join(f.evidence))],
    ]
    show(table(f"Finding {f.id}", ["", ""], details))
    show(
        table(
            "Trail",
            ["at", "actor", "status", "note", "ledger seq"],
            [[when(s.at), plain(s.actor), s.status.value, plain(s.note), s.seq] for s in f.trail],
        )
    )
    return 0


@app.command("ack")
def ack(ctx: typer.Context, finding_id: IdArg, note: NoteOpt, json_out: JsonOpt = False) -> int:
    """Acknowledge an open finding (someone owns the fix)."""
    with app_for(ctx) as application:
        f = svc.acknowledge_finding(application, finding_id, note=note)
    return print_result(f.to_json(), f"Finding {f.id} acknowledged.", json_out=json_out)


@app.command("resolve")
def resolve(ctx: typer.Context, finding_id: IdArg, note: NoteOpt, json_out: JsonOpt = False) -> int:
    """Resolve a finding, recording the corrective action. The next policy check reopens
    the control (as a new finding) if it still fails."""
    with app_for(ctx) as application:
        f = svc.resolve_finding(application, finding_id, note=note)
    return print_result(f.to_json(), f"Finding {f.id} resolved.", json_out=json_out)
