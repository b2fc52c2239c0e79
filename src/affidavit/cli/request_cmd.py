"""``affidavit request ...``: multi-party approval of destructive and disclosing operations.

A gated operation (backup deletion, hold release, key rotation and export, source removal,
role grants and revocations, account disablement, policy and exception approval, approval
rule changes) asked for by an authenticated identity becomes a request; other people approve
or veto it here, and the requester executes it once approved (docs/approvals.md).

Every command runs through the server in client mode (``--server``/``AFFIDAVIT_SERVER``, after
``affidavit login``), or locally with ``--as NAME`` (a login for the one command).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
from affidavit.cli.output import JsonOpt, plain, print_json, show, table, when
from affidavit.errors import InputError
from affidavit.models.approval import ApprovalRule, GatedOperation, RequestState
from affidavit.models.permissions import Role
from affidavit.services import gated, requests
from affidavit.services.exports import preview as export_preview

app = typer.Typer(
    help="Multi-party approval: requests for gated operations, their approval, veto and "
    "execution, and the approval rules. Through the server (after `affidavit login`) or "
    "locally with --as NAME.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The request's id (rq-...).")]
CodeOpt = client.StepUpCodeOpt


def _now() -> datetime:
    return datetime.now(UTC)


def _summary(r: Mapping[str, Any]) -> list[Any]:
    rule = r["rule"]
    return [
        plain(r["id"]),
        r["state"],
        plain(r["operation"]),
        plain(r["target"]),
        plain(r["requested_by"]),
        f"{len(r['approvals'])}/{rule['approvers']} {rule['role']}",
        when(r["approve_by"]) if r["state"] == "pending" else when(r["execute_by"]),
    ]


_COLUMNS = ("id", "state", "operation", "target", "asked by", "approvals", "until")


def _show_request(data: Mapping[str, Any], json_out: bool, headline: str) -> int:
    if json_out:
        print_json(data)
        return 0
    show(headline)
    show(table(None, _COLUMNS, [_summary(data)]))
    return 0


@app.command("list")
def request_list(
    ctx: typer.Context,
    state: Annotated[
        RequestState | None, typer.Option("--state", help="Only requests in this state.")
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """The requests, newest first (remote-capable: --server)."""
    remote = client.remote(ctx)
    if remote is not None:
        found = remote.get("/requests", state=state.value if state else None)["requests"]
    else:
        found = as_caller(
            ctx,
            lambda app, who: [
                r.to_json(_now()) for r in requests.list_requests(app, who, state=state)
            ],
        )
    if json_out:
        print_json({"requests": found})
        return 0
    if not found:
        show("No approval request" + (f" is {state.value}." if state else " yet."))
        return 0
    show(table("Approval requests", _COLUMNS, [_summary(r) for r in found]))
    return 0


@app.command("show")
def request_show(
    ctx: typer.Context,
    request_id: IdArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """One request with its parameters, approvals and deadlines (remote-capable)."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.get(client.route("requests", request_id))
    else:
        data = as_caller(
            ctx,
            lambda app, who: export_preview.request_view(
                app, who, requests.get_request(app, who, request_id), _now()
            ),
        )
    if json_out:
        print_json(data)
        return 0
    rows = [
        ["state", data["state"]],
        ["operation", plain(data["operation"])],
        ["target", plain(data["target"])],
        [
            "parameters",
            plain(", ".join(f"{k}={v}" for k, v in data["params"].items() if k != "preview")),
        ],
        ["reason", plain(data["reason"]) or None],
        ["asked by", f"{plain(data['requested_by'])} at {when(data['created_at'])}"],
        [
            "rule",
            f"{data['rule']['approvers']} approver(s) of role {data['rule']['role']}",
        ],
        ["approve by", when(data["approve_by"])],
        ["execute by", when(data["execute_by"])],
        ["may not approve", plain(", ".join(data["excluded"])) or None],
    ]
    for a in data["approvals"]:
        rows.append(["approved", f"{plain(a['name'])} at {when(a['at'])} {plain(a['note'])}"])
    for key in ("vetoed", "cancelled", "executed"):
        step = data[key]
        if step:
            rows.append([key, f"{plain(step['name'])} at {when(step['at'])} {plain(step['note'])}"])
    for problem in data["problems"]:
        rows.append(["not counted", plain(problem)])
    preview = data.get("preview")
    if preview:  # an export run: what the approver sees of its output
        rows.append(["counts", plain(json.dumps(preview["counts"], sort_keys=True))])
        for record in preview["sample"] or []:
            rows.append(["sample", plain(json.dumps(record, ensure_ascii=False))])
        if preview["sample_withheld"]:
            rows.append(["sample", f"withheld: {plain(preview['sample_withheld'])}"])
    show(table(f"Request {plain(data['id'])}", ("", ""), rows))
    return 0


def _judge(
    ctx: typer.Context,
    request_id: str,
    *,
    veto: bool,
    text: str,
    code: str | None,
    json_out: bool,
) -> int:
    verb = "veto" if veto else "approve"
    answer = client.remote_post(
        ctx,
        f"{client.route('requests', request_id)}/{verb}",
        {"reason" if veto else "note": text},
        code,
    )
    if answer is None:
        answer = as_caller(
            ctx,
            lambda app, who: (
                requests.veto(app, who, request_id, reason=text)
                if veto
                else requests.approve(app, who, request_id, note=text)
            ).to_json(_now()),
        )
    state = answer["state"]
    headline = (
        f"Vetoed request {plain(request_id)}: it can never be executed."
        if veto
        else f"Approved request {plain(request_id)}; it is now {state}"
        + (f": {plain(answer['requested_by'])} may execute it." if state == "approved" else ".")
    )
    return _show_request(answer, json_out, headline)


@app.command("approve")
def request_approve(
    ctx: typer.Context,
    request_id: IdArg,
    note: Annotated[str, typer.Option("--note", help="Why you approve (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: CodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Approve someone else's request (the rule's role, a fresh TOTP check, once)."""
    return _judge(
        ctx,
        request_id,
        veto=False,
        text=note,
        code=code,
        json_out=json_out,
    )


@app.command("veto")
def request_veto(
    ctx: typer.Context,
    request_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded; required).")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: CodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Veto a pending or approved request: it can never be executed."""
    return _judge(
        ctx,
        request_id,
        veto=True,
        text=reason,
        code=code,
        json_out=json_out,
    )


@app.command("cancel")
def request_cancel(
    ctx: typer.Context,
    request_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Withdraw your own request."""
    answer = client.remote_post(
        ctx, f"{client.route('requests', request_id)}/cancel", {"reason": reason}, None
    )
    if answer is None:
        answer = as_caller(
            ctx,
            lambda app, who: requests.cancel(app, who, request_id, reason=reason).to_json(_now()),
        )
    return _show_request(answer, json_out, f"Cancelled request {plain(request_id)}.")


@app.command("execute")
def request_execute(
    ctx: typer.Context,
    request_id: IdArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: CodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Execute your own approved request within its execution window."""
    answer = client.remote_post(ctx, f"{client.route('requests', request_id)}/execute", {}, code)
    if answer is None:
        done = as_caller(
            ctx,
            lambda app, who: gated.execute(app, who, request_id),
        )
        answer = {"request": done.request.to_json(_now()), "result": done.result}
    if json_out:
        print_json(answer)
        return 0
    show(
        f"Executed request {plain(request_id)}: {plain(answer['request']['operation'])} of "
        f"{plain(answer['request']['target'])}."
    )
    secret = answer["result"].get("identity")
    if isinstance(secret, str):  # keys export-identity: the disclosed key, on stdout only
        typer.echo(secret)
    return 0


@app.command("rules")
def request_rules(
    ctx: typer.Context,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """The approval rule in force for each gated operation (remote-capable)."""
    remote = client.remote(ctx)
    if remote is not None:
        found = remote.get("/approval-rules")["rules"]
    else:
        found = as_caller(
            ctx,
            lambda app, who: [r.to_json() for r in requests.list_rules(app, who)],
        )
    if json_out:
        print_json({"rules": found})
        return 0
    rows = [
        [
            r["operation"],
            r["approvers"] or "none",
            r["role"],
            _hours(r["approval_window_s"]),
            _hours(r["execution_window_s"]),
        ]
        for r in found
    ]
    show(
        table(
            "Approval rules",
            ("operation", "approvers", "role", "approve within", "execute within"),
            rows,
        )
    )
    return 0


def _hours(seconds: int) -> str:
    hours = seconds / 3600
    return f"{hours:g} h"


@app.command("rule-set")
def request_rule_set(
    ctx: typer.Context,
    operation: Annotated[
        GatedOperation, typer.Argument(metavar="OPERATION", help="The gated operation.")
    ],
    approvers: Annotated[
        int, typer.Option("--approvers", help="How many other people approve (0-5; 0: none).")
    ],
    role: Annotated[Role, typer.Option("--role", help="The role each approver holds.")],
    approval_hours: Annotated[
        float, typer.Option("--approval-hours", help="How long a request waits for approval.")
    ] = 24.0,
    execution_hours: Annotated[
        float, typer.Option("--execution-hours", help="How long an approved request may wait.")
    ] = 24.0,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: CodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Change the rule of one gated operation; the change needs another administrator's
    approval itself (it waits as a request, then you execute it)."""
    if not (0 < approval_hours <= 720 and 0 < execution_hours <= 720):
        raise InputError(
            "--approval-hours and --execution-hours lie between 5 minutes and 720 hours",
            hint="e.g. --approval-hours 24",
        )
    rule = ApprovalRule(
        operation=operation,
        approvers=approvers,
        role=role,
        approval_window=timedelta(hours=approval_hours),
        execution_window=timedelta(hours=execution_hours),
    )
    answer = client.remote_post(ctx, "/approval-rules", {**rule.to_json(), "reason": reason}, code)
    if answer is None:
        answer = as_caller(
            ctx,
            lambda app, who: requests.rule_change(app, who, rule, reason=reason).to_json(),
        )
    if json_out:
        print_json({"rule": answer, "state": "executed"})
        return 0
    show(f"The rule for {operation.value} is now: {approvers} approver(s) of role {role.value}.")
    return 0
