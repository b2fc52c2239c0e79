"""``affidavit audit open|list|show|close|remind`` and ``affidavit audit request ...``: audit
engagements scoped to one auditor and one window, and the evidence requests (PBC list) raised
in them (docs/audit.md).

The commands act as an authenticated account: ``--as NAME`` on the server's host (a login for
the one command); through the server (``--server``, after ``affidavit login``) as the account
logged in, the same services answering the API's ``/audit`` routes with the same output,
``--json`` and exit codes. ``audit request answer --file`` uploads each file first
(``POST /api/v1/uploads``). ``audit remind`` is meant for cron, like ``run-due``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
from affidavit.cli.output import JsonOpt, plain, print_json, show, table, when
from affidavit.models.audit import RequestState, state_of_request
from affidavit.services import audit, audit_files, audit_notify

app = typer.Typer(
    help="Audit engagements (an auditor's scoped, read-only window) and their evidence "
    "requests. Acts as --as NAME (a login for the one command).",
    no_args_is_help=True,
)
request_app = typer.Typer(
    help="Evidence requests (PBC list): raised by the engagement's auditor, answered by the "
    "evidence's owners, accepted, returned or closed by the auditor.",
    no_args_is_help=True,
)
app.add_typer(request_app, name="request")

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The engagement's id (ae-...).")]
RequestArg = Annotated[str, typer.Argument(metavar="ID", help="The request's id (pbc-...).")]


def _now() -> datetime:
    return datetime.now(UTC)


def _here_or_there(
    ctx: typer.Context, there: Callable[[client.Client], Any], here: Callable[[Any, Any], Any]
) -> Any:
    """``there(client)`` through the server in client mode, else ``here(app, principal)`` on
    this host as the ``--as`` account (:func:`as_caller`)."""
    remote = client.remote(ctx)
    return there(remote) if remote is not None else as_caller(ctx, here)


def _remote_get(ctx: typer.Context, path: str, **params: client.Param) -> Any | None:
    """``GET path?params`` through the server in client mode; None locally."""
    remote = client.remote(ctx)
    return None if remote is None else remote.get(path, **params)


def _engagement_rows(e: Mapping[str, Any]) -> list[Any]:
    return [
        plain(e["id"]),
        e["state"],
        plain(e["framework"]),
        f"{when(e['window']['from'])} .. {when(e['window']['to'])}",
        plain(e["auditor"]),
        when(e["expires_at"]),
    ]


_ENGAGEMENT_COLUMNS = ("id", "state", "framework", "window", "auditor", "expires")
_REQUEST_COLUMNS = ("id", "state", "due", "overdue", "title", "engagement")


def _request_row(r: Mapping[str, Any]) -> list[Any]:
    return [
        plain(r["id"]),
        r["state"],
        r["due"],
        "OVERDUE" if r["overdue"] else "",
        plain(r["title"]),
        plain(r["engagement"]),
    ]


def _print_engagement(data: Mapping[str, Any], json_out: bool, headline: str) -> int:
    if json_out:
        print_json(data)
        return 0
    show(headline)
    show(table(None, _ENGAGEMENT_COLUMNS, [_engagement_rows(data)]))
    return 0


def _print_request(data: Mapping[str, Any], json_out: bool, headline: str) -> int:
    if json_out:
        print_json(data)
        return 0
    show(headline)
    rows: list[list[Any]] = [
        ["state", data["state"]],
        ["engagement", plain(data["engagement"])],
        ["title", plain(data["title"])],
        ["detail", plain(data["detail"]) or None],
        ["due", data["due"] + (" (OVERDUE)" if data["overdue"] else "")],
        ["items", plain("; ".join(data["items"])) or None],
        ["opened", f"{plain(data['opened_by'])} at {when(data['opened_at'])}"],
    ]
    for entry in data["thread"]:
        handed = ", ".join(
            f"{a['kind']}:{a['ref']}" + (f" ({a['name']}, sha256 {a['sha256']})" if a.get("name")
                                         else "")
            for a in entry["artifacts"]
        )  # fmt: skip
        rows.append([entry["kind"], f"{plain(entry['by'])} at {when(entry['at'])}: "
                     f"{plain(entry['text'])} {plain(handed)}".strip()])  # fmt: skip
    for problem in data["problems"]:
        rows.append(["not counted", plain(problem)])
    show(table(f"Evidence request {plain(data['id'])}", ("", ""), rows))
    return 0


# -- engagements -------------------------------------------------------------------------------


@app.command("open")
def audit_open(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="Start of the window (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="End of the window (a date: included).")],
    framework: Annotated[str, typer.Option("--framework", help="e.g. soc2, iso-27001.")],
    auditor: Annotated[
        str, typer.Option("--auditor", help="The auditor's account: its name or e-mail.")
    ],
    expires: Annotated[
        str, typer.Option("--expires", help="When access ends (a date: the end of that day).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Open an audit engagement for an auditor account (audit.manage; remote-capable:
    --server)."""
    now = _now()
    body = {"from": start, "to": end, "framework": framework, "auditor": auditor,
            "expires": expires, "reason": reason}  # fmt: skip
    data = _here_or_there(
        ctx,
        lambda c: c.post("/audit/engagements", body),
        lambda a, who: audit.open_engagement(
            a, who, start=start, end=end, framework=framework, auditor=auditor,
            expires=expires, reason=reason, now=now,
        ).to_json(now),
    )  # fmt: skip
    return _print_engagement(
        data, json_out, f"Opened audit engagement {plain(data['id'])} for {plain(data['auditor'])}."
    )


@app.command("list")
def audit_list(
    ctx: typer.Context,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """The engagements you may see, newest first (an auditor: its own open ones;
    remote-capable: --server)."""
    now = _now()
    remote = _remote_get(ctx, "/audit/engagements")
    found = (
        remote["engagements"]
        if remote is not None
        else as_caller(
            ctx, lambda a, who: [e.to_json(now) for e in audit.list_engagements(a, who, now=now)]
        )
    )
    if json_out:
        print_json({"engagements": found})
        return 0
    if not found:
        show("No audit engagement you may see.")
        return 0
    show(table("Audit engagements", _ENGAGEMENT_COLUMNS, [_engagement_rows(e) for e in found]))
    return 0


@app.command("show")
def audit_show(
    ctx: typer.Context,
    engagement_id: IdArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """One engagement and its evidence requests (remote-capable: --server)."""
    now = _now()

    def view(a: Any, who: Any) -> dict[str, Any]:
        found = audit.get_engagement(a, who, engagement_id, now=now)
        requests = audit.list_requests(a, who, engagement=found.id, now=now)
        return {**found.to_json(now), "requests": [r.to_json(now) for r in requests]}

    data = _here_or_there(
        ctx, lambda c: c.get(client.route("audit", "engagements", engagement_id)), view
    )
    if json_out:
        print_json(data)
        return 0
    _print_engagement(data, False, f"Audit engagement {plain(data['id'])}")
    if data["requests"]:
        show(table("Evidence requests", _REQUEST_COLUMNS,
                   [_request_row(r) for r in data["requests"]]))  # fmt: skip
    return 0


@app.command("close")
def audit_close(
    ctx: typer.Context,
    engagement_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Close an engagement now: its auditor's access ends (audit.manage; remote-capable:
    --server)."""
    now = _now()
    path = client.route("audit", "engagements", engagement_id, "close")
    data = _here_or_there(
        ctx,
        lambda c: c.post(path, {"reason": reason}),
        lambda a, who: audit.close_engagement(a, who, engagement_id, reason=reason,
                                              now=now).to_json(now),
    )  # fmt: skip
    return _print_engagement(data, json_out, f"Closed audit engagement {plain(data['id'])}.")


@app.command("remind")
def audit_remind(
    ctx: typer.Context,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Send the reminders that are due (before the due date, and overdue) by e-mail and
    webhook; each is recorded once, so a rerun sends nothing twice. For cron (remote-capable:
    --server, schedule.run)."""
    now = _now()
    data = _here_or_there(
        ctx,
        lambda c: c.post("/audit/reminders", {}),
        lambda a, who: audit_notify.remind(a, who, now=now).to_json(),
    )
    if json_out:
        print_json(data)
        return 1 if data["failed"] else 0
    if not data["sent"] and not data["failed"]:
        show("No reminder is due.")
    for sent in data["sent"]:
        show(f"Reminded ({sent['kind']}) of {plain(sent['request'])} by "
             f"{plain(', '.join(sent['channels']))}.")  # fmt: skip
    for failed in data["failed"]:
        show(f"[red]Could not remind of {plain(failed['request'])}: {plain(failed['error'])}[/red]")
    return 1 if data["failed"] else 0


# -- evidence requests -------------------------------------------------------------------------


@request_app.command("open")
def request_open(
    ctx: typer.Context,
    engagement_id: IdArg,
    title: Annotated[str, typer.Option("--title", help="What is asked for, in a line.")],
    due: Annotated[str, typer.Option("--due", help="Due date (YYYY-MM-DD).")],
    detail: Annotated[str, typer.Option("--detail", help="More about it.")] = "",
    item: Annotated[
        list[str] | None, typer.Option("--item", help="One item wanted (repeatable).")
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Raise an evidence request (the engagement's auditor; remote-capable: --server)."""
    now = _now()
    body = {"engagement": engagement_id, "title": title, "detail": detail, "due": due,
            "items": item or []}  # fmt: skip
    data = _here_or_there(
        ctx,
        lambda c: c.post("/audit/requests", body),
        lambda a, who: audit.open_request(
            a, who, engagement_id, title=title, detail=detail, due=due, items=item or [],
            now=now,
        ).to_json(now),
    )  # fmt: skip
    return _print_request(data, json_out, f"Raised evidence request {plain(data['id'])}.")


@request_app.command("list")
def request_list(
    ctx: typer.Context,
    engagement: Annotated[
        str | None, typer.Option("--engagement", help="Only this engagement's.")
    ] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only in this state.")] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """The evidence requests you may see, by due date (remote-capable: --server)."""
    now = _now()
    wanted: RequestState | None = state_of_request(state) if state else None
    remote = _remote_get(ctx, "/audit/requests", engagement=engagement,
                         state=wanted.value if wanted else None)  # fmt: skip
    found = remote["requests"] if remote is not None else as_caller(
        ctx,
        lambda a, who: [r.to_json(now) for r in audit.list_requests(
            a, who, engagement=engagement, state=wanted, now=now)],
    )  # fmt: skip
    if json_out:
        print_json({"requests": found})
        return 0
    if not found:
        show("No evidence request you may see.")
        return 0
    show(table("Evidence requests", _REQUEST_COLUMNS, [_request_row(r) for r in found]))
    return 0


@request_app.command("show")
def request_show(
    ctx: typer.Context,
    request_id: RequestArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """One evidence request with its thread (remote-capable: --server)."""
    now = _now()
    data = _here_or_there(
        ctx,
        lambda c: c.get(client.route("audit", "requests", request_id)),
        lambda a, who: audit.get_request(a, who, request_id, now=now).to_json(now),
    )
    return _print_request(data, json_out, "")


@request_app.command("answer")
def request_answer(
    ctx: typer.Context,
    request_id: RequestArg,
    attestation: Annotated[
        list[str] | None, typer.Option("--attestation", help="An attestation's ledger seq.")
    ] = None,
    verification: Annotated[
        list[str] | None, typer.Option("--verification", help="A verification record's id.")
    ] = None,
    drill: Annotated[list[str] | None, typer.Option("--drill", help="A drill's id.")] = None,
    package: Annotated[
        list[str] | None, typer.Option("--package", help="An evidence package's id (ev-...).")
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="A file to upload (PDF, PNG, JPEG, text; 10 MiB at most)."),
    ] = None,
    vault: Annotated[
        str | None, typer.Option("--vault", help="The vault that keeps uploads.")
    ] = None,
    note: Annotated[str, typer.Option("--note", help="A note for the auditor.")] = "",
    partial: Annotated[
        bool, typer.Option("--partial", help="Work in progress: do not submit yet.")
    ] = False,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Answer an evidence request with artifacts and files (audit.respond). Remote-capable:
    --server, where each --file is checked here, then uploaded (POST /api/v1/uploads) and
    stored by the server as it stores a local file."""
    now = _now()
    handed = (
        [("attestation", x) for x in attestation or []]
        + [("verification", x) for x in verification or []]
        + [("drill", x) for x in drill or []]
        + [("evidence-package", x) for x in package or []]
    )
    remote = client.remote(ctx)
    if remote is not None:
        files = []
        for path in file or []:
            name, _, _ = audit_files.read_upload(path)  # refused here, before any upload
            files.append({"upload": remote.upload(path), "name": name})
        body = {"artifacts": [{"kind": k, "ref": r} for k, r in handed], "files": files,
                "vault": vault, "note": note, "submit": not partial}  # fmt: skip
        data = remote.post(client.route("audit", "requests", request_id, "answers"), body)
        return _print_request(data, json_out, f"Evidence request {plain(request_id)} is now "
                              f"{data['state']}.")  # fmt: skip
    data = as_caller(
        ctx,
        lambda a, who: audit_files.answer_with_files(
            a, who, request_id, files=file or [], vault=vault, artifacts=handed, text=note,
            submit=not partial, now=now,
        ).to_json(now),
    )  # fmt: skip
    return _print_request(data, json_out, f"Evidence request {plain(request_id)} is now "
                          f"{data['state']}.")  # fmt: skip


def _auditor_step(ctx: typer.Context, request_id: str, verb: str, text: str,
                  json_out: bool) -> int:  # fmt: skip
    now = _now()
    steps = {"accept": audit.accept, "close": audit.close_request}
    remote = client.remote(ctx)
    if remote is not None:
        route = {"accept": "accept", "close": "close", "return": "return", "message": "messages"}
        field = {"return": "reason", "message": "text"}.get(verb, "note")
        data = remote.post(client.route("audit", "requests", request_id, route[verb]),
                           {field: text})  # fmt: skip
        return _print_request(data, json_out, f"Evidence request {plain(request_id)} is "
                              f"{data['state']}.")  # fmt: skip

    def run(a: Any, who: Any) -> dict[str, Any]:
        if verb == "return":
            return audit.return_request(a, who, request_id, reason=text, now=now).to_json(now)
        if verb == "message":
            return audit.message(a, who, request_id, text=text, now=now).to_json(now)
        return steps[verb](a, who, request_id, note=text, now=now).to_json(now)

    data = as_caller(ctx, run)
    return _print_request(data, json_out, f"Evidence request {plain(request_id)} is "
                          f"{data['state']}.")  # fmt: skip


@request_app.command("accept")
def request_accept(
    ctx: typer.Context,
    request_id: RequestArg,
    note: Annotated[str, typer.Option("--note", help="A note (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Accept the submitted answer (the engagement's auditor)."""
    return _auditor_step(ctx, request_id, "accept", note, json_out)


@request_app.command("return")
def request_return(
    ctx: typer.Context,
    request_id: RequestArg,
    reason: Annotated[str, typer.Option("--reason", help="What is missing (recorded).")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Return the submitted answer to its owners (the engagement's auditor)."""
    return _auditor_step(ctx, request_id, "return", reason, json_out)


@request_app.command("close")
def request_close(
    ctx: typer.Context,
    request_id: RequestArg,
    note: Annotated[str, typer.Option("--note", help="A note (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Close an accepted or returned request (the engagement's auditor)."""
    return _auditor_step(ctx, request_id, "close", note, json_out)


@request_app.command("message")
def request_message(
    ctx: typer.Context,
    request_id: RequestArg,
    text: Annotated[str, typer.Option("--text", help="The message.")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Add a message to the request's thread (its auditor, or audit.respond)."""
    return _auditor_step(ctx, request_id, "message", text, json_out)
