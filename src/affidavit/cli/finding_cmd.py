"""``affidavit finding list|show|ack|resolve``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.governance_views import finding_order, finding_row
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
from affidavit.models.governance import ControlFinding, FindingStatus
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
    """List findings, most severe first (remote-capable: --server)."""
    wanted = None if show_all else (status or [FindingStatus.OPEN, FindingStatus.ACKNOWLEDGED])
    found = client.view(
        ctx,
        "/findings",
        params={"status": [s.value for s in wanted] if wanted else None},
        local=lambda app: {
            "findings": [f.to_json() for f in svc.list_findings(app, status=wanted)]
        },
    )["findings"]
    found.sort(key=finding_order)
    return print_list(
        "Findings",
        "findings",
        found,
        item_json=dict,
        columns=["id", "status", "severity", "control", "subject", "owner", "due", "detail"],
        row=finding_row,
        json_out=json_out,
    )


@app.command("show")
def show_(ctx: typer.Context, finding_id: IdArg, json_out: JsonOpt = False) -> int:
    """One finding with its remediation trail (remote-capable: --server)."""
    f = client.view(
        ctx,
        client.route("findings", finding_id),
        local=lambda app: svc.get_finding(app, finding_id).to_json(),
    )
    if json_out:
        print_json(f)
        return 0
    details: list[list[str | None]] = [
        ["control", plain(f["control"])],
        ["subject", plain(f["subject"])],
        ["status", f["status"]],
        ["severity", f["severity"]],
        ["owner", plain(f["owner"])],
        ["opened", when(f["opened_at"])],
        ["due", when(f["due_at"])],
        ["message", plain(f["message"])],
        ["evidence", plain(", ".join(f["evidence"]))],
    ]
    show(table(f"Finding {f['id']}", ["", ""], details))
    trail = [
        [when(s["at"]), plain(s["actor"]), s["status"], plain(s["note"]), s["seq"]]
        for s in f["trail"]
    ]
    show(table("Trail", ["at", "actor", "status", "note", "ledger seq"], trail))
    return 0


@app.command("ack")
def ack(ctx: typer.Context, finding_id: IdArg, note: NoteOpt, json_out: JsonOpt = False) -> int:
    """Acknowledge an open finding (someone owns the fix; remote-capable: --server)."""
    f = _step(ctx, finding_id, "ack", note, svc.acknowledge_finding)
    return print_result(f, f"Finding {f['id']} acknowledged.", json_out=json_out)


@app.command("resolve")
def resolve(ctx: typer.Context, finding_id: IdArg, note: NoteOpt, json_out: JsonOpt = False) -> int:
    """Resolve a finding, recording the corrective action. The next policy check reopens
    the control (as a new finding) if it still fails (remote-capable: --server)."""
    f = _step(ctx, finding_id, "resolve", note, svc.resolve_finding)
    return print_result(f, f"Finding {f['id']} resolved.", json_out=json_out)


def _step(
    ctx: typer.Context,
    finding_id: str,
    verb: str,
    note: str,
    local: Callable[..., ControlFinding],
) -> dict[str, Any]:
    """A finding's step (``ack``, ``resolve``) through the server, or ``local(app,
    finding_id, note=note)`` on this host; the finding's JSON view after it."""
    answer = client.remote_post(ctx, f"{client.route('findings', finding_id)}/{verb}",
                                {"note": note})  # fmt: skip
    if answer is not None:
        return dict(answer)
    with app_for(ctx) as application:
        return local(application, finding_id, note=note).to_json()
