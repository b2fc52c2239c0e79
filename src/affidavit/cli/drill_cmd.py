"""``affidavit drill run|list``: restore drills."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, print_list, show, table, when
from affidavit.cli.progress import reporting
from affidavit.cli.state import app_for
from affidavit.cli.views import drill_json
from affidavit.services import drill as drills

app = typer.Typer(
    help="Restore drills: restore into a scratch target, time it against the RTO.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(metavar="BACKUP", help="Backup id.")],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="`scratch` (a throwaway server on a random port) or the URI of an EMPTY "
            "MongoDB or Redis server.",
        ),
    ] = drills.SCRATCH,
    rto: Annotated[
        float | None,
        typer.Option("--rto", help="Recovery-time objective in seconds (default: rto_seconds)."),
    ] = None,
    probe: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Probe file (TOML or .json) of queries with expected results."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Unsafe: allow a target that is a registered source (it must still be empty).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Restore BACKUP into a scratch target, re-fingerprint it against the manifest, run the
    probes and time it against the RTO; always tears the scratch down and records a signed
    result. Exit 1 when the drill fails or exceeds the RTO. Remote-capable: --server (into a
    scratch server of the server's host; --target URI, --probe and --force stay local)."""
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only("drill run", target=None if target == drills.SCRATCH else target,
                          probe=probe, force=force or None)  # fmt: skip
        body = {} if rto is None else {"rto_seconds": rto}
        data = remote.post(f"{client.route('backups', backup_id)}/drills", body)
    else:
        with app_for(ctx) as application, reporting(json_out) as reporter:
            data = drill_json(
                drills.run_drill(
                    application,
                    backup_id,
                    target=target,
                    rto_seconds=rto,
                    probe_file=probe,
                    force=force,
                    reporter=reporter,
                )
            )
    if json_out:
        print_json(data)
    else:
        _render(data)
    return 0 if data["ok"] else 1


def _render(d: Mapping[str, Any]) -> None:
    """A drill, from its JSON view."""
    verdict = "[bold green]passed[/bold green]" if d["ok"] else "[bold red]FAILED[/bold red]"
    show(
        f"Drill {d['drill_id']} of {d['backup_id']} into {d['target']}: {verdict}. Restored in "
        f"{d['restore_seconds']:.2f}s, {d['total_seconds']:.2f}s in all "
        f"(RTO {d['rto_seconds']:g}s); fingerprints "
        + ("match." if d["fingerprint_match"] else "[bold red]DIFFER[/bold red].")
    )
    phases = [[k, f"{v:.3f}"] for k, v in d["phases"].items()]
    show(table("Phases", ["phase", "seconds"], phases))
    if d["probes"]:
        show(
            table(
                "Probes",
                ["probe", "dataset", "kind", "result"],
                [
                    [p["name"], p["dataset"], p["kind"], "ok" if p["ok"] else "FAILED"]
                    for p in d["probes"]
                ],
            )
        )
    if d["findings"]:
        show(
            table(
                "Findings",
                ["code", "subject", "message"],
                [[f["code"], f["subject"], f["message"]] for f in d["findings"]],
            )
        )


@app.command("list")
def list_(
    ctx: typer.Context,
    backup_id: Annotated[
        str | None, typer.Argument(metavar="[BACKUP]", help="Only this backup's drills.")
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Recorded drills, newest first: time, result, duration and RTO (remote-capable:
    --server)."""
    found = client.view(
        ctx,
        "/drills",
        local=lambda app: {"drills": [drill_json(d) for d in drills.list_drills(app, backup_id)]},
        params={"backup": backup_id},
    )
    return print_list(
        "Drills",
        "drills",
        found["drills"],
        item_json=dict,
        columns=["id", "backup", "time", "result", "restore s", "total s", "RTO s", "target"],
        row=lambda d: [
            d["drill_id"],
            d["backup_id"],
            when(d["started_at"]),
            "passed"
            if d["ok"]
            else "FAILED: " + ", ".join(sorted({f["code"] for f in d["findings"]})),
            f"{d['restore_seconds']:.2f}",
            f"{d['total_seconds']:.2f}",
            f"{d['rto_seconds']:g}" if d["rto_seconds"] is not None else None,
            d["target"],
        ],
        json_out=json_out,
        empty="No drills yet: `affidavit drill run BACKUP`.",
    )
