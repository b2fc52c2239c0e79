"""``affidavit calendar [show] [--from --to] [--json]``, ``calendar ics [--out FILE]``,
``calendar add TITLE --due DATE [--every P1Y]`` and ``calendar remove ID``: the governance
calendar (docs/calendar.md). Remote-capable (--server): ``GET /api/v1/calendar``,
``/calendar.ics`` and ``/calendar/deadlines``; ``calendar ics --out`` writes the feed on this
host."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
from affidavit.cli.output import JsonOpt, plain, print_json, print_result, show
from affidavit.cli.state import app_for
from affidavit.errors import InputError
from affidavit.services import calendar as svc
from affidavit.services.calendar_ics import render_ics

app = typer.Typer(
    help="The governance calendar: what recurs or falls due (docs/calendar.md).",
    invoke_without_command=True,
)

FromOpt = Annotated[
    str | None, typer.Option("--from", help="First day shown (YYYY-MM-DD).", show_default=False)
]
ToOpt = Annotated[
    str | None, typer.Option("--to", help="Last day shown (YYYY-MM-DD).", show_default=False)
]
_STYLE = {"overdue": "bold red", "due": "yellow", "upcoming": "", "done": "dim"}


def _month_tables(items: Sequence[dict[str, Any]]) -> list[Table]:
    tables = []
    for month, group in groupby(items, key=lambda i: str(i["due"])[:7]):
        title = datetime.strptime(month, "%Y-%m").strftime("%B %Y")
        tbl = Table(title=title, title_justify="left", header_style="bold", expand=False)
        for column in ("due", "state", "kind", "title", "every", "owner", "record"):
            tbl.add_column(column, overflow="fold")
        for item in group:
            style = _STYLE[item["state"]]
            due = str(item["due"])
            shown = due if item["all_day"] else due[:16].replace("T", " ") + "Z"
            state = item["state"].upper() if item["state"] == "overdue" else item["state"]
            tbl.add_row(
                shown,
                state,
                item["kind"],
                plain(item["title"]),
                item["recurrence"] or "",
                plain(item["owner"]) or "",
                plain(item["link"]) or "",
                style=style or None,
            )
        tables.append(tbl)
    return tables


def _render(data: dict[str, Any], json_out: bool) -> int:
    if json_out:
        print_json(data)
        return 0
    items = data["items"]
    if not items:
        show("Nothing falls due in this window.")
        return 0
    counts = data["counts"]
    show(*_month_tables(items))
    show(
        f"{len(items)} item(s): [bold red]{counts['overdue']} overdue[/bold red], "
        f"{counts['due']} due, {counts['upcoming']} upcoming, {counts['done']} done."
    )
    return 0


@app.callback()
def calendar(
    ctx: typer.Context,
    start: FromOpt = None,
    end: ToOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Everything that recurs or falls due, by month, overdue items first in red (the same
    as `calendar show`)."""
    if ctx.invoked_subcommand is not None:
        return 0
    return show_calendar(ctx, start, end, json_out)


@app.command("show")
def show_calendar(
    ctx: typer.Context,
    start: FromOpt = None,
    end: ToOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Everything that recurs or falls due in the window, grouped by month
    (remote-capable: --server)."""
    low, high = svc.window(start, end)
    data = client.view(
        ctx,
        "/calendar",
        params={"from": start, "to": end},
        local=lambda application: svc.build_calendar(application, start=low, end=high).to_json(),
    )
    return _render(data, json_out)


@app.command("ics")
def ics(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the feed to this file (default: stdout).", dir_okay=False
        ),
    ] = None,
    start: FromOpt = None,
    end: ToOpt = None,
) -> int:
    """The calendar as an iCalendar (RFC 5545) feed for calendar clients (remote-capable:
    --server; --out is written on this host)."""
    low, high = svc.window(start, end)
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.fetch("/calendar.ics", params={"from": start, "to": end})
    else:
        with app_for(ctx) as application:
            data = render_ics(svc.build_calendar(application, start=low, end=high))
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        out.expanduser().write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from exc
    show(f"Wrote {out} ({data.count(b'BEGIN:VEVENT')} events).")
    return 0


@app.command("add")
def add(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(metavar="TITLE", help="What falls due.")],
    due: Annotated[str, typer.Option("--due", help="When (YYYY-MM-DD).")],
    every: Annotated[
        str | None,
        typer.Option("--every", help="Recurs: an ISO 8601 duration (P1Y, P6M, P3M, P2W, P30D)."),
    ] = None,
    detail: Annotated[str, typer.Option("--detail", help="What it is about.")] = "",
    owner: Annotated[str | None, typer.Option("--owner", help="Who answers for it.")] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Enter a regulatory deadline (administrators; recorded in the ledger only;
    remote-capable: --server)."""
    body = {"title": title, "due": due, "every": every, "detail": detail, "owner": owner}
    data = client.remote_post(ctx, "/calendar/deadlines", body)
    if data is None:
        data = as_caller(
            ctx,
            lambda application, who: svc.add_deadline(
                application, who, title=title, due=due, every=every, detail=detail, owner=owner
            ).to_json(),
        )
    every_text = f", every {data['every']}" if data["every"] else ""
    return print_result(
        data,
        f"Deadline {data['id']} added: {plain(data['title'])} on {data['due']}{every_text}.",
        json_out=json_out,
    )


@app.command("remove")
def remove(
    ctx: typer.Context,
    deadline_id: Annotated[str, typer.Argument(metavar="ID", help="The deadline's id (dl-...).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (met, withdrawn ...).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Remove a regulatory deadline (administrators; recorded in the ledger; remote-capable:
    --server)."""
    path = client.route("calendar", "deadlines", deadline_id)
    data = client.remote_post(ctx, path, {"reason": reason}, method="DELETE")
    if data is None:
        data = as_caller(
            ctx,
            lambda application, who: svc.remove_deadline(
                application, who, deadline_id, reason=reason
            ).to_json(),
        )
    return print_result(data, f"Deadline {data['id']} removed.", json_out=json_out)
