"""``affidavit access review start|show|decide|close``: periodic access reviews.

A review lists, per account holding a role, the roles it holds, the permissions it really
used in the look-back window (access log and ledger) and its unused roles and permissions;
reviewers decide to keep or revoke each grant; closing the review applies the revocations
through the approval path (docs/identities.md, "Access reviews").

Every command needs an authenticated identity: through the server in client mode
(``--server``/``AFFIDAVIT_SERVER``, after ``affidavit login``), or locally ``--as NAME`` (a
login for the one command).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
from affidavit.cli.output import JsonOpt, plain, print_json, show, table, when
from affidavit.models.access_review import Verdict
from affidavit.models.permissions import Role
from affidavit.services import access_reviews

app = typer.Typer(help="Access governance: periodic reviews of who holds which role.",
                  no_args_is_help=True)  # fmt: skip
review_app = typer.Typer(
    help="Access reviews: roles held, permissions used, unused grants, decisions, "
    "revocations through the approval path. Through the server (after `affidavit login`) "
    "or locally with --as NAME.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The review's id (ar-...).")]


def _headline(r: Mapping[str, Any]) -> str:
    return (
        f"Access review {plain(r['id'])} ({r['state']}): {len(r['accounts'])} account(s), "
        f"look-back {r['lookback_days']} days, started {when(r['started_at'])} by "
        f"{plain(r['started_by'])}"
    )


def _show(r: Mapping[str, Any]) -> None:
    decided = {(d["account"], d["role"]): d for d in r["decisions"]}
    closed = r["closed"]
    outcome = {(o["account"], o["role"]): o for o in (closed["outcomes"] if closed else [])}
    rows = []
    for a in r["accounts"]:
        for role in a["roles"]:
            d = decided.get((a["account"], role))
            o = outcome.get((a["account"], role))
            rows.append(
                [
                    f"{plain(a['account'])}{' (disabled)' if a['disabled'] else ''}",
                    role,
                    "[yellow]unused[/yellow]" if role in a["unused_roles"] else "used",
                    f"{d['decision']} by {plain(d['by'])}: {plain(d['justification'])}"
                    if d
                    else None,
                    (o["outcome"] + (f" {plain(o['request'])}" if o["request"] else ""))
                    if o
                    else None,
                ]
            )
    show(_headline(r))
    show(table(None, ("account", "role", "in the window", "decision", "at close"), rows))
    usage = [
        [
            plain(a["account"]),
            plain(", ".join(a["used"])) or "[yellow]nothing[/yellow]",
            len(a["unused_permissions"]),
            when(a["last_used"]),
        ]
        for a in r["accounts"]
    ]
    show(table("Permissions used", ("account", "used", "unused", "last use"), usage))
    for finding in r["findings"]:
        show(f"[yellow]privilege creep[/yellow]: {plain(finding)}")
    if r["expired_entries"]:
        show(
            f"[yellow]{r['expired_entries']} access-log entries of the window had expired: "
            "their use is unknown[/yellow]"
        )
    for problem in r["problems"]:
        show(f"[red]not counted[/red]: {plain(problem)}")


@review_app.command("start")
def review_start(
    ctx: typer.Context,
    lookback_days: Annotated[
        int, typer.Option("--lookback-days", help="How far back use is read (days).")
    ] = access_reviews.DEFAULT_LOOKBACK_DAYS,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Start a review of every account holding a role (recorded with its snapshot;
    remote-capable: --server)."""
    data = client.remote_post(ctx, "/access-reviews", {"lookback_days": lookback_days})
    if data is None:
        data = as_caller(
            ctx,
            lambda app, who: access_reviews.start_review(
                app, who, lookback_days=lookback_days
            ).to_json(),
        )
    if json_out:
        print_json(data)
        return 0
    _show(data)
    show(f"[dim]next: `affidavit access review decide {plain(data['id'])} ACCOUNT ROLE "
         "keep|revoke --justification TEXT`[/dim]")  # fmt: skip
    return 0


@review_app.command("show")
def review_show(
    ctx: typer.Context,
    review_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A review's id; none: list them.")
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """One review with its grants, use and decisions; without ID the list of reviews
    (remote-capable: --server)."""
    remote = client.remote(ctx)
    if review_id is not None:
        data = (
            remote.get(client.route("access-reviews", review_id))
            if remote is not None
            else as_caller(
                ctx,
                lambda app, who: access_reviews.get_review(app, who, review_id).to_json(),
            )
        )
        if json_out:
            print_json(data)
        else:
            _show(data)
        return 0
    found = (
        remote.get("/access-reviews")["reviews"]
        if remote is not None
        else as_caller(
            ctx,
            lambda app, who: [r.to_json() for r in access_reviews.list_reviews(app, who)],
        )
    )
    if json_out:
        print_json({"reviews": found})
        return 0
    if not found:
        show("No access review yet: `affidavit access review start`.")
        return 0
    rows = [
        [
            plain(r["id"]),
            r["state"],
            when(r["started_at"]),
            plain(r["started_by"]),
            len(r["accounts"]),
            len(r["findings"]),
            len(r["undecided"]),
            when(r["closed"]["at"]) if r["closed"] else None,
        ]
        for r in found
    ]
    columns = ("id", "state", "started", "by", "accounts", "findings", "undecided", "closed")
    show(table("Access reviews", columns, rows))
    return 0


@review_app.command("decide")
def review_decide(
    ctx: typer.Context,
    review_id: IdArg,
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="The account reviewed.")],
    role: Annotated[Role, typer.Argument(metavar="ROLE", help="The role it holds.")],
    verdict: Annotated[Verdict, typer.Argument(metavar="keep|revoke", help="The decision.")],
    justification: Annotated[
        str, typer.Option("--justification", help="Why (recorded; required).")
    ],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Decide to keep or revoke one grant (never one's own; remote-capable: --server)."""
    body = {"account": account, "role": role.value, "decision": verdict.value,
            "justification": justification}  # fmt: skip
    data = client.remote_post(ctx, f"{client.route('access-reviews', review_id)}/decisions", body)
    if data is None:
        data = as_caller(ctx, lambda app, who: (
            access_reviews.decide(app, who, review_id, account=account, role=role,
                                  verdict=verdict, justification=justification).to_json()
        ))  # fmt: skip
    if json_out:
        print_json(data)
        return 0
    show(
        f"Recorded: {verdict.value} {plain(account)} / {role.value} in review "
        f"{plain(data['id'])}; {len(data['undecided'])} grant(s) undecided."
    )
    return 0


@review_app.command("close")
def review_close(
    ctx: typer.Context,
    review_id: IdArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Close a review and apply its revocations through the approval path (an administrator
    with a fresh TOTP check when it revokes anything; remote-capable: --server)."""
    data = client.remote_post(ctx, f"{client.route('access-reviews', review_id)}/close", {}, code)
    if data is None:
        data = as_caller(
            ctx,
            lambda app, who: access_reviews.close_review(app, who, review_id).to_json(),
        )
    if json_out:
        print_json(data)
        return 0
    closed = data["closed"]
    rows = [
        [plain(o["account"]), o["role"], o["decision"], o["outcome"], plain(o["request"]),
         plain(o["message"])]
        for o in closed["outcomes"]
    ]  # fmt: skip
    show(f"Closed access review {plain(data['id'])}.")
    show(table(None, ("account", "role", "decision", "outcome", "request", "note"), rows))
    pending = [o["request"] for o in closed["outcomes"] if o["outcome"] == "pending"]
    if pending:
        show(f"[dim]next: another administrator approves {', '.join(pending)} "
             "(`affidavit request approve ID`), then you execute it[/dim]")  # fmt: skip
    return 0
