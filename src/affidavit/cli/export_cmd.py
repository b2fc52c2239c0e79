"""``affidavit export spec add|approve|list|show``, ``export run|list|verify``: governed
exports (docs/exports.md)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

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
    """Propose a new version of an export spec; another person approves it before it runs."""
    with app_for(ctx) as application:
        version = specs.add_spec(application, file)
    return print_result(
        version.to_json(),
        f"Proposed version {version.version} of export spec {version.name} (sha256 "
        f"{version.sha256[:16]}...). Another person approves it with `affidavit export spec "
        f"approve {version.name} {version.version}`.",
        json_out=json_out,
    )


@spec_app.command("approve")
def spec_approve(
    ctx: typer.Context,
    name: SpecName,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, max=2**31 - 1)],
    json_out: JsonOpt = False,
) -> int:
    """Approve a proposed version (not its proposer)."""
    with app_for(ctx) as application:
        approved = specs.approve_spec(application, name, version)
    return print_result(
        approved.to_json(),
        f"Approved version {approved.version} of export spec {approved.name}.",
        json_out=json_out,
    )


@spec_app.command("list")
def spec_list(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Every version of every spec."""
    with app_for(ctx) as application:
        found = specs.list_specs(application)
    return print_list(
        "Export specs",
        "specs",
        found,
        item_json=lambda v: v.to_json(),
        columns=["spec", "version", "sha256", "proposed by", "approved by"],
        row=lambda v: [
            plain(v.name),
            v.version,
            v.sha256[:16],
            plain(v.proposed_by),
            plain(v.approved_by),
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
    """One spec version with its text."""
    with app_for(ctx) as application:
        found = specs.spec_version(application, name, version)
    if json_out:
        print_json({**found.to_json(), "text": found.text})
    else:
        show(plain(found.text))
    return 0


@app.command("run")
def run(
    ctx: typer.Context,
    name: SpecName,
    version: Annotated[
        int | None, typer.Option(help="The spec version (default: the newest approved).")
    ] = None,
    backup: Annotated[
        str | None, typer.Option(help="The backup to read (default: the spec's input.backup).")
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="The output file's name in the destination folder.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (shown to the approver).")] = "",
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Run an approved spec: read, check the contract, minimise, encrypt to the recipient,
    deliver, sign the manifest. A gated operation (docs/approvals.md): with --as, a request
    another person approves (`affidavit request execute ID` then runs it). Exit 1 when the
    contract blocks the export (nothing delivered)."""

    def call(application: App, who: Principal) -> runs.ExportResult:
        with application.acting_as(who) if who.authenticated else nullcontext(application):
            return runs.run_export(
                application, name, version=version, backup_id=backup, output=output, reason=reason
            )

    result = as_caller(ctx, call)
    data = result.to_json()
    if json_out:
        print_json(data)
        return 0 if result.delivered else 1
    contract = result.contract
    if result.delivered:
        records = (result.predicate or {}).get("records", {})
        show(
            f"Delivered {plain(str(result.output))} ({records.get('out')} of "
            f"{records.get('in')} records; excluded {records.get('excluded')}) with its signed "
            f"manifest {plain(str(result.manifest))}."
        )
        return 0
    show(
        table(
            f"Export {result.run.id} blocked: {contract['violations']} contract violation(s)",
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
    """Every export run."""
    with app_for(ctx) as application:
        found = runs.list_exports(application, spec)
    return print_list(
        "Exports",
        "exports",
        found,
        item_json=lambda r: r.to_json(),
        columns=["id", "spec", "version", "status", "records", "started", "output"],
        row=lambda r: [
            r.id,
            plain(r.spec),
            r.version,
            r.status.value,
            r.records_out,
            when(r.started_at),
            plain(r.output_path),
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
