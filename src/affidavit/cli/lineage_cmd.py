"""``affidavit lineage show|export|verify|emit``: OpenLineage events and the lineage graph
from source datasets to export destinations, derived from the ledger (docs/lineage.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli.output import JsonOpt, plain, print_json, show, table
from affidavit.cli.state import app_for
from affidavit.constants import ExitCode
from affidavit.errors import InputError
from affidavit.models.lineage import LineageGraph
from affidavit.services import lineage as svc

app = typer.Typer(
    help=(
        "Lineage from source datasets to backups, checks and export destinations, as "
        "OpenLineage run events derived from the ledger.\n\n"
        "Exit codes: 0 ok; 1 `verify` found an edge whose digests no longer match; 2 bad "
        "input; 3 the OpenLineage endpoint or the vault could not be reached."
    ),
    no_args_is_help=True,
)

SinceOpt = Annotated[
    int | None,
    typer.Option("--since", metavar="SEQ", help="Only events of ledger entries after SEQ."),
]


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    subject: Annotated[
        str,
        typer.Argument(
            metavar="DATASET|BACKUP|EXPORT",
            help="A dataset (db.collection, db0, SOURCE/db.collection), a backup id or an "
            "export id.",
        ),
    ],
    json_out: JsonOpt = False,
    dot: Annotated[bool, typer.Option("--dot", help="Print Graphviz DOT.")] = False,
) -> int:
    """Draw the lineage around a dataset, backup or export: source datasets -> backup ->
    artifacts -> verifications, drills and exports -> destinations, with digests and the
    ledger seq that vouches for each step."""
    if json_out and dot:
        raise InputError("--json and --dot exclude each other", hint="choose one")
    with app_for(ctx) as application:
        graph = svc.show(application, subject)
    if json_out:
        print_json(graph.to_json())
    elif dot:
        sys.stdout.write(graph.to_dot())
    else:
        show(_table(graph))
    return 0


def _table(graph: LineageGraph) -> object:
    rows = []
    for run in sorted(graph.runs.values(), key=lambda r: r.seq):
        inputs = [e for e in graph.edges if e.target == run.operation]
        outputs = [e for e in graph.edges if e.source == run.operation]
        rows.append(
            [
                run.seq,
                plain(run.operation),
                run.state,
                "\n".join(_node(graph, e.source, e.digest) for e in inputs) or None,
                "\n".join(_node(graph, e.target, e.digest) for e in outputs) or None,
            ]
        )
    return table(
        "lineage (source -> backup -> checks -> exports -> destinations)",
        ["seq", "run", "state", "inputs", "outputs"],
        rows,
    )


def _node(graph: LineageGraph, key: str, digest: str | None) -> str:
    ref = graph.datasets.get(key)
    name = f"{ref.namespace} {ref.name}" if ref is not None else key
    return str(plain(name + (f"  {digest}" if digest else "")))


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write to FILE (must not exist)."),
    ] = None,
    since: SinceOpt = None,
) -> int:
    """Print every OpenLineage run event as JSON lines (or write them to --out)."""
    since_seq = -1 if since is None else since
    with app_for(ctx) as application:
        if out is not None:
            written = svc.write_events(application, out, since=since_seq)
            show(f"wrote {written} event(s) to {plain(str(out))}")
            return 0
        for line in svc.event_lines(application, since=since_seq):
            sys.stdout.write(line + "\n")
    return 0


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", metavar="FILE", help="Also check events `lineage export` wrote earlier."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Check every edge: the ledger verifies, each backup's manifest is the signed one, each
    artifact in the vault and each export output on this host still has its recorded
    SHA-256. Exit 1 with every finding when one does not."""
    with app_for(ctx) as application:
        report = svc.verify(application, events_file=events)
    if json_out:
        print_json(report.to_json())
    else:
        if report.findings:
            show(
                table(
                    "lineage findings",
                    ["code", "subject", "seq", "message"],
                    [[f.code, plain(f.subject), f.seq, plain(f.message)] for f in report.findings],
                )
            )
        for note in report.skipped:
            show(f"[dim]not checked: {plain(note)}[/dim]")
        verdict = "ok" if report.ok else "FAILED"
        what = "nothing to verify" if report.edges == 0 else f"{report.edges} edge(s)"
        show(
            f"lineage {verdict}: {what}, {report.artifacts_checked} artifact(s) and "
            f"{report.outputs_checked} export output(s) re-hashed, "
            f"{report.events_checked} event(s) checked, {len(report.findings)} finding(s)"
        )
    return 0 if report.ok else int(ExitCode.SUBJECT_FAILED)


@app.command("emit")
def emit_cmd(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The OpenLineage endpoint. Default: openlineage_url."),
    ] = None,
    since: SinceOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """POST the events not sent yet to the OpenLineage endpoint, in ledger order (exit 3 when
    it cannot take them; what it took stays marked sent)."""
    with app_for(ctx) as application:
        result = svc.emit(application, url=url, since=since)
    if json_out:
        print_json(result.to_json())
    else:
        show(
            f"sent {result.sent} event(s) to {plain(result.endpoint)}; through seq "
            f"{result.through_seq}"
        )
    return 0
