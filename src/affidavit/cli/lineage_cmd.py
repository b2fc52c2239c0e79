"""``affidavit lineage show|export|verify|emit``: OpenLineage events and the lineage graph
from source datasets to export destinations, derived from the ledger (docs/lineage.md).

Remote-capable (``--server``): each command asks the server's ``/lineage`` routes for the
same JSON it computes locally and prints it the same way; ``export`` downloads the file the
server wrote and checks its SHA-256; ``emit`` has the server POST to its own endpoint.
``verify --events`` and ``emit --url`` stay local (a file of this host; an endpoint the server
should not be told)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, plain, print_json, show, table
from affidavit.cli.state import app_for
from affidavit.constants import ExitCode
from affidavit.errors import InputError
from affidavit.models.lineage import DatasetRef, Edge, LineageGraph, RunNode
from affidavit.services import lineage as svc
from affidavit.services.server_files import check_downloaded

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
    data = client.view(
        ctx,
        "/lineage",
        params={"subject": subject},
        local=lambda app: svc.show(app, subject).to_json(),
    )
    if json_out:
        print_json(data)
        return 0
    graph = _graph(data)
    if dot:
        sys.stdout.write(graph.to_dot())
    else:
        show(_table(graph))
    return 0


def _graph(data: dict[str, Any]) -> LineageGraph:
    """The graph of ``lineage show --json`` (the server's answer or this host's), as far as
    the table and DOT show it (no facets)."""
    datasets = {
        d["id"]: DatasetRef(
            namespace=d["namespace"], name=d["name"], kind=d["kind"], digest=d["digest"]
        )
        for d in data["datasets"]
    }
    runs = {
        r["id"]: RunNode(
            operation=r["id"],
            kind=r["kind"],
            job=r["job"],
            state=r["state"],
            seq=r["seq"],
            time=r["time"],
            digest=r["digest"],
        )
        for r in data["runs"]
    }
    edges = tuple(
        Edge(source=e["from"], target=e["to"], seq=e["seq"], digest=e["digest"])
        for e in data["edges"]
    )
    return LineageGraph(datasets=datasets, runs=runs, edges=edges)


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
    """Print every OpenLineage run event as JSON lines (or write them to --out).
    Remote-capable: --server (the server writes them; they are downloaded and their SHA-256
    checked against the one the server answered)."""
    since_seq = -1 if since is None else since
    remote = client.remote(ctx)
    if remote is not None:
        return _remote_export(remote, out, since)
    with app_for(ctx) as application:
        if out is not None:
            written = svc.write_events(application, out, since=since_seq)
            show(f"wrote {written.events} event(s) to {plain(str(out))}")
            return 0
        for line in svc.event_lines(application, since=since_seq):
            sys.stdout.write(line + "\n")
    return 0


def _remote_export(remote: client.Client, out: Path | None, since: int | None) -> int:
    """``lineage export`` through the server: ``POST /lineage/exports`` has it write the
    events, ``GET /lineage/exports/ID`` downloads them (into ``out``, created new, mode 0600;
    without one into a private temporary file that is printed), and a file whose SHA-256 is
    not the one answered is removed (exit 1)."""
    target = client.new_target(out) if out is not None else None
    written = dict(remote.post("/lineage/exports", {"since": since}))
    download = f"/lineage/exports{client.route(str(written['export']))}"
    if target is not None:
        remote.download(download, target)
        check_downloaded(target, str(written["sha256"]))
        show(f"wrote {written['events']} event(s) to {plain(str(out))}")
        return 0
    with tempfile.TemporaryDirectory(prefix="affidavit-lineage-") as folder:
        into = Path(folder) / "events.jsonl"
        remote.download(download, into)
        check_downloaded(into, str(written["sha256"]))
        with into.open(encoding="utf-8") as fh:
            while chunk := fh.read(1 << 20):
                sys.stdout.write(chunk)
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
    SHA-256. Exit 1 with every finding when one does not (remote-capable: --server, on the
    server's host; --events names a file of this host and runs locally only)."""
    remote = client.remote(ctx)
    if remote is not None:
        if events is not None:
            raise InputError(
                "`lineage verify --events` checks a file of this host against a ledger: the "
                "server cannot read it, and it is not uploaded",
                hint="run `affidavit lineage verify` without --events through the server, and "
                "check the file on the server's host (or against a copy of its home)",
            )
        report: dict[str, Any] = remote.post("/lineage/verify")
    else:
        with app_for(ctx) as application:
            report = svc.verify(application, events_file=events).to_json()
    if json_out:
        print_json(report)
    else:
        findings = report["findings"]
        if findings:
            show(
                table(
                    "lineage findings",
                    ["code", "subject", "seq", "message"],
                    [
                        [f["code"], plain(f["subject"]), f["seq"], plain(f["message"])]
                        for f in findings
                    ],
                )
            )
        for note in report["skipped"]:
            show(f"[dim]not checked: {plain(note)}[/dim]")
        verdict = "ok" if report["ok"] else "FAILED"
        what = "nothing to verify" if report["edges"] == 0 else f"{report['edges']} edge(s)"
        show(
            f"lineage {verdict}: {what}, {report['artifacts_checked']} artifact(s) and "
            f"{report['outputs_checked']} export output(s) re-hashed, "
            f"{report['events_checked']} event(s) checked, {len(findings)} finding(s)"
        )
    return 0 if report["ok"] else int(ExitCode.SUBJECT_FAILED)


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
    it cannot take them; what it took stays marked sent). Remote-capable: --server (the
    server sends to its own openlineage_url; --url is refused there)."""
    remote = client.remote(ctx)
    if remote is not None:
        if url is not None:
            raise InputError(
                "through the server, `lineage emit` sends to the server's own openlineage_url, "
                "never to a URL the client names",
                hint="drop --url (the server's administrator sets openlineage_url), or run it "
                "locally on the server's host",
            )
        result: dict[str, Any] = remote.post("/lineage/emit", {"since": since})
    else:
        with app_for(ctx) as application:
            result = svc.emit(application, url=url, since=since).to_json()
    if json_out:
        print_json(result)
    else:
        show(
            f"sent {result['sent']} event(s) to {plain(result['endpoint'])}; through seq "
            f"{result['through_seq']}"
        )
    return 0
