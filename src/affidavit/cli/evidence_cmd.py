"""``affidavit evidence build|verify``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, plain, print_json, show, table
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.errors import InputError
from affidavit.models.period import Period
from affidavit.services import evidence as svc

app = typer.Typer(
    help="The auditor's evidence package: build it for a period; verify it offline.",
    no_args_is_help=True,
)


@app.command("build")
def build(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="Period start: YYYY-MM-DD or RFC 3339.")],
    end: Annotated[str, typer.Option("--to", help="Period end (a bare date includes that day).")],
    out: Annotated[Path, typer.Option(help="The package to write (.tar.gz); must not exist.")],
    framework: Annotated[
        str | None,
        typer.Option(
            help="Only controls mapped to: nist-800-53, iso-27001, soc2, hipaa, gdpr, dora."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Build a signed evidence package for the period. Remote-capable: --server (the server
    builds it; it is downloaded to --out and its SHA-256 checked against the one recorded)."""
    period = Period.parse(start, end)
    remote = client.remote(ctx)
    if remote is not None:
        target = out.expanduser().absolute()
        if os.path.lexists(target) or not target.parent.is_dir():  # before the server builds
            raise InputError(
                f"{target} already exists" if os.path.lexists(target)
                else f"the folder {target.parent} does not exist",
                hint="choose another --out; nothing changed",
            )  # fmt: skip
        body = {"from": start, "to": end, "framework": framework}
        built = remote.post("/evidence-packages", {k: v for k, v in body.items() if v})
        remote.download(client.route("evidence-packages", built.pop("package")), target)
        svc.check_package_file(target, built["sha256"])
        data = {**built, "path": str(target)}
    else:
        with app_for(ctx) as application, reporting(json_out) as reporter:
            data = svc.build_evidence(
                application, period=period, out=out, framework=framework, reporter=reporter
            ).to_json()
    if json_out:
        print_json(data)
        return 0
    path = Path(data["path"])
    show(
        f"Evidence package {path}\n  sha256 {data['sha256']}\n"
        f"  {data['files']} files; {data['events']} ledger events with inclusion proofs against "
        f"checkpoint size {data['checkpoint_size']}; {data['backups']} backups, "
        f"{data['verifications']} verifications, {data['drills']} drills, {data['findings']} "
        f"findings.\n  Report inside: report/index.html "
        f"(`tar -xzf {path.name} report/index.html`).\n"
        f"  An auditor checks it with `affidavit evidence verify {path.name} "
        "--public-key VKEY` (VKEY from `affidavit ledger key`)."
    )
    for warning in data["warnings"]:
        show(f"[yellow]warning:[/yellow] {warning}")
    return 0


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An evidence package.")],
    public_key: Annotated[
        str,
        typer.Option(help="The ledger's verifier key (text or a file holding it)."),
    ],
    json_out: JsonOpt = False,
) -> int:
    """Verify a package offline: hashes, signature, proofs, attestations, cross-references.

    Needs no home and no catalog. Exit codes: 0 verified; 1 problems (all listed);
    2 not a package / bad key.
    """
    report = svc.verify_evidence(file, public_key)
    if json_out:
        print_json(report.to_json())
        return 0 if report.ok else 1
    if report.findings:
        show(
            table(
                "Problems",
                ["code", "where", "detail"],
                [[f.code, plain(f.subject), plain(f.message)] for f in report.findings],
            )
        )
    s = report.summary
    if report.ok:
        show(
            f"[green]Verified[/green]: {s.get('files')} files, signature and checkpoint "
            f"(size {s['checkpoint']['size']}) by {plain(s.get('origin'))}, {s.get('events')} "
            "inclusion "
            f"proofs, {s.get('attestations')} attestations, all cross-references."
        )
    else:
        show(f"[bold red]NOT verified[/bold red]: {len(report.findings)} problem(s).")
    return 0 if report.ok else 1
