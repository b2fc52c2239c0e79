"""The exports of an evidence package's period (docs/exports.md, "In the evidence package").

For every ``export.completed`` event of the period the package gets the export's signed
manifest (``exports/<export id>.manifest.dsse.json``: the DSSE envelope the catalog keeps,
included only when its SHA-256 is the one the ledger's ``attestation.created`` event
recorded) and a line in ``records/exports.json`` naming the run, its output and the ledger
events that prove it (``completed_seq``, ``attestation_seq``), which the package cites with
inclusion proofs. A manifest whose catalog copy does not match the ledger is left out and
its record says so (``manifest``: null, ``manifest_problem``); ``evidence verify`` then fails
the package (``export-manifest-missing``), and the build warns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto.digest import sha256_hex
from affidavit.models.ledger import Event

RECORDS_PATH: Final = "records/exports.json"
MANIFESTS: Final = "exports/"


@dataclass(slots=True)
class ExportEvidence:
    """The files an evidence package gets for its period's exports, and the ledger events
    they cite."""

    files: dict[str, bytes] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # exports whose manifest stayed out


def gather_export_evidence(
    uow: UnitOfWork, period_events: Iterable[Event], attestation_seq: Mapping[str, int]
) -> ExportEvidence:
    """The export manifests and records of the period (``period_events``: its events, as
    the builder read them from their entries; ``attestation_seq``: each attestation's
    envelope SHA-256 -> its ``attestation.created`` sequence number)."""
    completed = [e for e in period_events if e.action == "export.completed"]
    out = ExportEvidence()
    if not completed:
        return out
    runs = {r.id: r for r in uow.exports.runs()}
    records: list[dict[str, Any]] = []
    for event in sorted(completed, key=lambda e: e.seq):
        export_id = event.subject.removeprefix("export:")
        run = runs.get(export_id)
        envelope = uow.exports.envelope(export_id) if run is not None else None
        data = envelope.encode("utf-8") if envelope is not None else None
        seq = attestation_seq.get(sha256_hex(data)) if data is not None else None
        path = f"{MANIFESTS}{export_id}.manifest.dsse.json"
        record: dict[str, Any] = {
            "id": export_id,
            "spec": event.details.get("spec"),
            "version": event.details.get("version"),
            "backup_id": event.details.get("backup_id"),
            "recipient": event.details.get("recipient"),
            "output": _shown_output(run.output_path) if run is not None else None,
            "output_sha256": event.details.get("output_sha256"),
            "records": event.details.get("records"),
            "manifest_sha256": event.details.get("manifest_sha256"),
            "completed_seq": event.seq,
            "attestation_seq": seq,
            "manifest": path if seq is not None else None,
        }
        out.seqs.append(event.seq)
        if data is not None and seq is not None:
            out.files[path] = data
            out.seqs.append(seq)
        else:
            out.left_out.append(export_id)
            record["manifest_problem"] = (
                "the catalog holds no manifest for it"
                if data is None
                else "the catalog's manifest is not the one the ledger recorded"
            )
        records.append(record)
    out.files[RECORDS_PATH] = (
        json.dumps(records, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    ).encode("utf-8")
    return out


def _shown_output(output: str | None) -> str | None:
    """Where an export went, as a package shows it: an object's ``s3://`` URI as it is, a
    file by its name only (the folder is a path on the server's host, nothing an auditor
    needs; the output's SHA-256 identifies the file)."""
    if output is None or output.startswith("s3://"):
        return output
    return PurePosixPath(output).name
