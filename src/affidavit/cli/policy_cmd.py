"""``affidavit policy validate|propose|approve|list|show|controls|check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.governance_views import result_rows
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
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.services import policy as policies
from affidavit.services.views import policy_document_json, policy_version_json

app = typer.Typer(
    help="Policy as code: versions approved by two people, controls, and the policy check.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="A policy.toml file.")]


@app.command("validate")
def validate(file: FileArg, json_out: JsonOpt = False) -> int:
    """Check a policy file and print its effective requirements; records nothing."""
    policy = policies.validate_policy(file)
    if json_out:
        print_json({"ok": True, "policy": policy.to_json()})
        return 0
    levels = policy.to_json()["levels"]
    keys = list(next(iter(levels.values())))
    show(
        table(
            plain(f"{policy.name} (owner {policy.owner})"),
            ["requirement", *levels],
            [[k, *(levels[lvl][k] for lvl in levels)] for k in keys],
        )
    )
    return 0


@app.command("propose")
def propose(ctx: typer.Context, file: FileArg, json_out: JsonOpt = False) -> int:
    """Propose a new policy version; it takes effect when another person approves it
    (remote-capable: --server; the file is read here and its text sent)."""
    text = policies.read_policy_file(file)
    data = client.remote_post(ctx, "/policy/versions", {"name": file.name, "text": text})
    if data is None:
        with app_for(ctx) as application:
            data = policy_version_json(
                policies.propose_policy_text(application, text, name=file.name)
            )
    return print_result(
        data,
        f"Proposed policy version {data['version']} (sha256 {data['sha256'][:16]}...). "
        f"Another person approves it with `affidavit policy approve {data['version']}`.",
        json_out=json_out,
    )


@app.command("approve")
def approve(
    ctx: typer.Context,
    version: Annotated[
        int,
        typer.Argument(metavar="VERSION", min=1, max=2**31 - 1, help="The version to approve."),
    ],
    json_out: JsonOpt = False,
) -> int:
    """Approve a proposed version (not your own); it takes effect now. A gated operation
    (docs/approvals.md): through the server a second approver confirms it; remote-capable."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.post(f"/policy/versions/{version}/approve")
    else:
        with app_for(ctx) as application:
            data = policy_version_json(policies.approve_policy(application, version))
    return print_result(
        data,
        f"Policy version {data['version']} approved by {plain(data['approved_by'])} "
        f"(proposed by {plain(data['proposed_by'])}); it is in effect.",
        json_out=json_out,
    )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """List policy versions with who proposed and approved each (remote-capable: --server)."""
    versions = client.view(
        ctx,
        "/policy/versions",
        local=lambda app: {
            "versions": [policy_version_json(v) for v in policies.policy_versions(app)]
        },
    )["versions"]
    effective = max((v["version"] for v in versions if v["approved_at"]), default=None)
    return print_list(
        "Policy versions",
        "versions",
        versions,
        item_json=dict,
        columns=["version", "sha256", "proposed", "by", "approved", "by", "in effect"],
        row=lambda v: [
            v["version"],
            v["sha256"][:16],
            when(v["proposed_at"]),
            plain(v["proposed_by"]),
            when(v["approved_at"]),
            plain(v["approved_by"]),
            "yes" if v["version"] == effective else "",
        ],
        json_out=json_out,
    )


@app.command("show")
def show_(
    ctx: typer.Context,
    version: Annotated[
        int | None, typer.Argument(metavar="[VERSION]", help="Default: the version in effect.")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Print a policy version's file as it was proposed (remote-capable: --server)."""
    item = client.view(
        ctx,
        "/policy/effective"
        if version is None
        else client.route("policy", "versions", str(version)),
        local=lambda app: policy_document_json(policies.policy_version(app, version)),
    )
    if json_out:
        print_json(item)
    else:
        typer.echo(item["text"], nl=not item["text"].endswith("\n"))
    return 0


@app.command("controls")
def controls(
    framework: Annotated[
        str | None, typer.Option(help="Only controls mapped to this framework.")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """List the controls catalog with framework mappings."""
    chosen = policies.list_controls(framework)
    return print_list(
        "Controls",
        "controls",
        chosen,
        item_json=lambda c: c.to_json(),
        columns=["id", "title", "severity", "NIST 800-53", "ISO 27001", "SOC 2"],
        row=lambda c: [
            c.id,
            c.title,
            c.severity.value,
            ", ".join(c.maps_to("nist-800-53")),
            ", ".join(c.maps_to("iso-27001")),
            ", ".join(c.maps_to("soc2")),
        ],
        json_out=json_out,
    )


@app.command("check")
def check(
    ctx: typer.Context,
    offline: Annotated[
        bool,
        typer.Option(help="Do not connect to sources and vaults (configuration is unread)."),
    ] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Also list passing results.")] = False,
    json_out: JsonOpt = False,
) -> int:
    """Evaluate every control; record the results and open, refresh or resolve findings
    (remote-capable: --server; no progress bar then).

    Exit codes: 0 every control passes (or is excepted); 1 findings (listed); 2 bad input;
    3 the catalog could not be read.
    """
    outcome = client.remote_post(ctx, "/policy/check", {"offline": offline})
    if outcome is None:
        with app_for(ctx) as application, reporting(json_out) as reporter:
            outcome = policies.check_policy(
                application, live=not offline, reporter=reporter
            ).to_json()
    if json_out:
        print_json(outcome)
        return 0 if outcome["ok"] else 1
    rows = result_rows(outcome["results"], show_all=show_all)
    show(table("Controls", ["control", "subject", "status", "severity", "owner", "detail"], rows))
    summary = ", ".join(f"{n} {status}" for status, n in sorted(outcome["summary"].items()))
    opened = len(outcome["opened"])
    show(
        f"Policy check {outcome['run_id']} (policy version {outcome['policy_version'] or '-'}): "
        f"{summary}. Findings: {opened} opened, {len(outcome['findings']) - opened} still "
        f"open, {len(outcome['resolved'])} resolved. "
        + ("All controls pass." if outcome["ok"] else "`affidavit finding list` shows them.")
    )
    return 0 if outcome["ok"] else 1
