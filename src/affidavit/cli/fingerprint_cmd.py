"""``affidavit fingerprint`` and ``affidavit diff``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, print_json, show, table
from affidavit.cli.progress import RichReporter, reporting
from affidavit.cli.state import app_for
from affidavit.errors import InputError
from affidavit.models.records import PROFILES, Profile

if TYPE_CHECKING:  # the fingerprint pass (numpy, the codecs) loads when a command runs, not
    # for --help or a usage error
    from affidavit.services import fingerprint as fps


def _profile(text: str) -> Profile:
    if text not in PROFILES:
        raise InputError(f"unknown profile {text!r}", hint="use exact or logical")
    return text


def fingerprint(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="A backup file or folder, or a registered SOURCE[/DATASET].")
    ],
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    profile: Annotated[str, typer.Option(help="exact (bit for bit) or logical.")] = "exact",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="bson|mongodump|mongodump-archive|extjson (default: detect)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the fingerprint index here (a folder when several datasets)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes; 0 = one per core.")] = 1,
    check_bson: Annotated[
        bool,
        typer.Option(
            "--check-bson",
            help="Also decode every BSON document of a file in full (exact profile; slower). "
            "Framing and _id are always checked; ingest and verify always check in full.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Compute the content fingerprint of every dataset in TARGET: independent of record order
    and (with --profile logical) of storage format. With --out, also write the index that
    `affidavit diff` compares key by key.

    Remote-capable (--server): a registered SOURCE[/DATASET] is fingerprinted by the server
    (it connects); a FILE of this host is uploaded (POST /api/v1/uploads) and fingerprinted
    there; a folder (a mongodump layout) is refused (fingerprint it locally, or dump with
    --archive). --out and --workers are local only."""
    prof = _profile(profile)
    remote = client.remote(ctx)
    if remote is not None:
        client.local_only("fingerprint", out=out, workers=None if workers == 1 else workers)
        body: dict[str, Any] = {"dataset": dataset, "profile": prof, "format": fmt,
                                "check_bson": check_bson}  # fmt: skip
        path = Path(target)
        if path.is_dir():
            raise InputError(
                f"{target} is a folder: through the server only a file is uploaded",
                hint="fingerprint the folder locally (unset AFFIDAVIT_SERVER), or make one "
                "file of it (mongodump --archive)",
            )
        if os.path.lexists(path):
            with reporting(json_out) as reporter:
                body |= {"upload": remote.upload(path, reporter=reporter), "name": path.name}
        else:
            body["target"] = target
        data = remote.post("/fingerprints", {k: v for k, v in body.items() if v is not None})
        _print(target, data["datasets"], json_out)
        return 0

    from affidavit.services import fingerprint as fps
    from affidavit.services.fingerprint_report import fingerprints_json

    def run(reporter: RichReporter | None) -> list[fps.DatasetFingerprint]:
        return fps.fingerprint_target(
            lambda: app_for(ctx),
            target,
            dataset=dataset,
            profile=prof,
            fmt=fmt,
            out=out,
            workers=workers,
            reporter=reporter,
            check_bson=check_bson,
        )

    with reporting(json_out) as reporter:
        results = run(reporter)
    _print(target, fingerprints_json(target, results)["datasets"], json_out)
    return 0


def _print(target: str, datasets: list[dict[str, Any]], json_out: bool) -> None:
    """The fingerprints of ``target`` from their JSON view (local and remote alike)."""
    if json_out:
        print_json({"target": target, "datasets": datasets})
        return
    show(
        table(
            f"Fingerprints of {target}",
            ["dataset", "records", "profile", "fingerprint", "duplicate keys"],
            [
                [d["name"], f"{d['records']:,}", d["profile"], d["root"], d["duplicate_keys"]]
                for d in datasets
            ],
        )
    )


def diff(
    index_a: Annotated[Path, typer.Argument(help="Fingerprint index (expected).")],
    index_b: Annotated[Path, typer.Argument(help="Fingerprint index (actual).")],
    limit: Annotated[int, typer.Option(min=0, help="List at most this many keys.")] = 100,
    json_out: JsonOpt = False,
) -> int:
    """Compare two fingerprint indexes without the data: keys missing from B, extra in B, and
    changed. Exit 1 when they differ."""
    from affidavit.services import fingerprint as fps

    result = fps.diff_report(index_a, index_b, limit=limit)
    if json_out:
        print_json(result)
    else:
        counts = result["counts"]
        show(
            f"A: {result['left']['records']:,} records, B: {result['right']['records']:,} records; "
            f"missing {counts['missing']}, extra {counts['extra']}, changed {counts['changed']}, "
            f"duplicate keys {counts['duplicate']}"
        )
        if result["differences"]:
            show(
                table(
                    None,
                    ["change", "key", "key hash"],
                    [[d["change"], d["key"], d["key_hash"][:16]] for d in result["differences"]],
                )
            )
        show("[green]identical[/green]" if result["equal"] else "[red]different[/red]")
    return 0 if result["equal"] else 1
