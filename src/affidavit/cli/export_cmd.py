"""``affidavit export spec add|approve|list|show``, ``export run|list|verify``: governed
exports (docs/exports.md)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.acting import AsCodeOpt, AsOpt, AsPasswordFileOpt, as_caller
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
from affidavit.models.identity import Principal
from affidavit.services.context import App
from affidavit.services.exports import run as runs
from affidavit.services.exports import specs
from affidavit.services.exports.verify import verify_export

app = typer.Typer(
    help="Governed exports: approved specs, gated runs, signed manifests, verification at "
    "the destination.",
    no_args_is_help=True,
)
spec_app = typer.Typer(
    help="Export specs, versioned and approved by a second person.", no_args_is_help=True
)
app.add_typer(spec_app, name="spec")

SpecName = Annotated[str, typer.Argument(metavar="SPEC", help="The spec's name.")]


@spec_app.command("add")
def spec_add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An export spec (TOML).")],
    json_out: JsonOpt = False,
) -> int:
    """Propose a new version of an export spec; another person approves it before it runs
    (remote-capable: --server; the file is read here and its text sent)."""
    remote = client.remote(ctx)
    if remote is not None:
        text = specs.read_spec_file(file)
        data = remote.post("/export-specs", {"name": file.name, "text": text})
    else:
        with app_for(ctx) as application:
            data = specs.add_spec(application, file).to_json()
    return print_result(
        data,
        f"Proposed version {data['version']} of export spec {data['name']} (sha256 "
        f"{data['sha256'][:16]}...). Another person approves it with `affidavit export spec "
        f"approve {data['name']} {data['version']}`.",
        json_out=json_out,
    )


@spec_app.command("approve")
def spec_approve(
    ctx: typer.Context,
    name: SpecName,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, max=2**31 - 1)],
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Approve a proposed version (not its proposer). Remote-capable (--server: an approval,
    with a fresh MFA check; --code steps up)."""
    path = f"{client.route('export-specs', name, 'versions', str(version))}/approve"
    data = client.remote_post(ctx, path, {}, code)
    if data is None:
        with app_for(ctx) as application:
            data = specs.approve_spec(application, name, version).to_json()
    return print_result(
        data,
        f"Approved version {data['version']} of export spec {data['name']}.",
        json_out=json_out,
    )


@spec_app.command("list")
def spec_list(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Every version of every spec (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/export-specs",
        local=lambda app: {"specs": [v.to_json() for v in specs.list_specs(app)]},
    )["specs"]
    return print_list(
        "Export specs",
        "specs",
        found,
        item_json=dict,
        columns=["spec", "version", "sha256", "proposed by", "approved by"],
        row=lambda v: [
            plain(v["name"]),
            v["version"],
            v["sha256"][:16],
            plain(v["proposed_by"]),
            plain(v["approved_by"]),
        ],
        json_out=json_out,
        empty="No export specs yet: `affidavit export spec add FILE`.",
    )


@spec_app.command("show")
def spec_show(
    ctx: typer.Context,
    name: SpecName,
    version: Annotated[
        int | None, typer.Option(help="A version (default: newest approved).")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """One spec version with its text (remote-capable: --server)."""

    def local(application: App) -> dict[str, Any]:
        found = specs.spec_version(application, name, version)
        return {**found.to_json(), "text": found.text}

    data = client.view(
        ctx,
        client.route("export-specs", name),
        params={"version": None if version is None else str(version)},
        local=local,
    )
    if json_out:
        print_json(data)
    else:
        show(plain(data["text"]))
    return 0


@app.command("run")
def run(
    ctx: typer.Context,
    name: SpecName,
    version: Annotated[
        int | None, typer.Option(help="The spec version (default: the newest approved).")
    ] = None,
    backup: Annotated[
        str | None,
        typer.Option(
            help="The backup to read (default: the spec's input.backup; a spec with "
            'input.from = "live" reads its source and takes none).'
        ),
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="The output file's name in the destination folder.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (shown to the approver).")] = "",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes for the record path (default: the cores; 1: in this process). "
            "The output is the same bytes whatever the number.",
        ),
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Run an approved spec: read, check the contract, minimise, encrypt to the recipient,
    deliver, sign the manifest. A gated operation (docs/approvals.md): with --as, a request
    another person approves (`affidavit request execute ID` then runs it). Exit 1 when the
    contract blocks the export (nothing delivered). Remote-capable (--server: delivered
    where the spec says, from the server's host; a request waiting for approval is printed,
    exit 0)."""

    def call(application: App, who: Principal) -> dict[str, Any]:
        with application.acting_as(who) if who.authenticated else nullcontext(application):
            return runs.run_export(
                application,
                name,
                version=version,
                backup_id=backup,
                output=output,
                reason=reason,
                workers=workers,
            ).to_json()

    body: dict[str, Any] = {"spec": name, "version": version, "backup": backup,
                            "output": output, "reason": reason}  # fmt: skip
    if workers is not None:
        body["workers"] = workers
    data = client.remote_post(ctx, "/exports", body, code)
    if data is None:
        data = as_caller(ctx, call)
    if json_out:
        print_json(data)
        return 0 if data["ok"] else 1
    contract = data["contract"]
    if data["ok"]:
        records = (data["predicate"] or {}).get("records", {})
        show(
            f"Delivered {plain(str(data['output']))} ({records.get('out')} of "
            f"{records.get('in')} records; excluded {records.get('excluded')}) with its signed "
            f"manifest {plain(str(data['manifest']))}."
        )
        return 0
    show(
        table(
            f"Export {data['export']['id']} blocked: {contract['violations']} contract "
            "violation(s)",
            ["record", "rule", "problem"],
            [[plain(v["key"]), v["rule"], plain(v["message"])] for v in contract["listed"]],
        )
    )
    return 1


@app.command("list")
def list_(
    ctx: typer.Context,
    spec: Annotated[str | None, typer.Option(help="Only this spec's runs.")] = None,
    json_out: JsonOpt = False,
) -> int:
    """Every export run (remote-capable: --server)."""
    found = client.view(
        ctx,
        "/exports",
        params={"spec": spec},
        local=lambda app: {"exports": [r.to_json() for r in runs.list_exports(app, spec)]},
    )["exports"]
    return print_list(
        "Exports",
        "exports",
        found,
        item_json=dict,
        columns=["id", "spec", "version", "status", "records", "started", "output"],
        row=lambda r: [
            r["id"],
            plain(r["spec"]),
            r["version"],
            r["status"],
            r["records_out"],
            when(r["started_at"]),
            plain(r["output"]),
        ],
        json_out=json_out,
        empty="No exports yet.",
    )


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The delivered export file.")],
    manifest: Annotated[Path, typer.Option(help="Its signed manifest (.manifest.dsse.json).")],
    public_key: Annotated[
        str, typer.Option(help="The ledger's verifier key (text or a file holding it).")
    ],
    identity: Annotated[
        Path, typer.Option(help="The recipient's age identity file (AGE-SECRET-KEY-1...).")
    ],
    json_out: JsonOpt = False,
) -> int:
    """At the destination: check the signature, decrypt, and re-check every record (digest,
    fingerprint, encoding, contract, allow-list). Needs no home. Exit 1 when anything does
    not hold (all listed)."""
    result = verify_export(file, manifest=manifest, vkey=public_key, identity_file=identity)
    data: dict[str, Any] = result.to_json()
    if json_out:
        print_json(data)
    elif result.ok:
        show(
            f"Verified: {result.records} record(s), fingerprint {result.fingerprint}, signed "
            f"export {data['export_id']} for {plain(str((data['recipient'] or {}).get('name')))}."
        )
    else:
        show(
            table(
                "Export verification failed",
                ["check", "problem"],
                [[d.check, plain(d.message)] for d in result.discrepancies],
            )
        )
    return 0 if result.ok else 1
