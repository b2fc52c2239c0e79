"""JSON views of service results: the stable shapes that ``--json`` prints and the REST API
(``affidavit.server``) answers with, so that the CLI, in local or client mode, and the server
say the same thing the same way. Never a secret: a source's secret is shown by reference only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from affidavit.models.backup import Backup, Hold
from affidavit.models.checks import Drill, Verification
from affidavit.models.inventory import Dataset, ServerDescription, Source, Vault, VaultProbe

if TYPE_CHECKING:  # (annotations only: importing them would load the catalog for every view)
    from affidavit.models.governance import Baseline, PolicyVersion
    from affidavit.services.inventory import Inventory, SourceTest
    from affidavit.services.keys import RotationResult


def source_json(source: Source) -> dict[str, Any]:
    """A source; never a secret, only its reference."""
    return {
        "name": source.name,
        "engine": source.engine.value,
        "uri": source.uri,
        "secret": source.secret.describe() if source.secret else None,
        "classification": source.classification.value,
        "region": source.region,
        "owner": source.owner,
        "created_at": source.created_at.isoformat(),
    }


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    """A dataset with its effective classification."""
    return {
        "source": dataset.source,
        "name": dataset.name,
        "classification": dataset.classification.value,
        "classification_inherited": dataset.inherited,
        "classification_reason": dataset.reason,
        "records": dataset.records,
        "discovered_at": dataset.discovered_at.isoformat() if dataset.discovered_at else None,
    }


def description_json(desc: ServerDescription | None) -> dict[str, Any] | None:
    """What the server said about itself."""
    if desc is None:
        return None
    return {
        "engine": desc.engine.value,
        "version": desc.version,
        "tls": desc.tls,
        "auth_required": desc.auth_required,
        "settings": dict(desc.settings),
    }


def source_test_json(test: SourceTest) -> dict[str, Any]:
    """A connection test."""
    return {
        "source": test.source.name,
        "reachable": test.reachable,
        "exit_code": test.exit_code,
        "error": test.error,
        "hint": test.hint,
        "server": description_json(test.description),
        "datasets": [{"name": n, "records": c} for n, c in test.datasets],
    }


def vault_json(vault: Vault, probe: VaultProbe | None = None) -> dict[str, Any]:
    """A vault, with its probe when one was taken."""
    out: dict[str, Any] = {
        "name": vault.name,
        "kind": vault.kind.value,
        "url": vault.url,
        "region": vault.region,
        "immutable_days": vault.immutable_days,
        "created_at": vault.created_at.isoformat(),
    }
    if probe is not None:
        out["probe"] = {
            "reachable": probe.reachable,
            "writable": probe.writable,
            "immutability": probe.immutability,
            "detail": probe.detail,
        }
    return out


def inventory_json(inv: Inventory) -> dict[str, Any]:
    """The inventory."""
    return {
        "taken_at": inv.taken_at.isoformat(),
        "sources": [
            {
                **source_json(s.test.source),
                "reachable": s.test.reachable,
                "error": s.test.error,
                "server": description_json(s.test.description),
                "datasets": [dataset_json(d) for d in s.datasets],
            }
            for s in inv.sources
        ],
        "vaults": [vault_json(v.vault, v.probe) for v in inv.vaults],
    }


def backup_json(backup: Backup, *, full: bool = False) -> dict[str, Any]:
    """A backup: ``backup_id``, ``source``, ``datasets`` and ``artifacts`` at least."""
    out: dict[str, Any] = {
        "backup_id": backup.id,
        "source": backup.source,
        "vault": backup.vault,
        "kind": backup.kind,
        "format": backup.format,
        "status": backup.status.value,
        "started_at": backup.started_at.isoformat(),
        "finished_at": backup.finished_at.isoformat() if backup.finished_at else None,
        "retain_until": backup.retain_until.isoformat(),
        "consistency": backup.consistency,
        "error": backup.error,
        "datasets": [
            {
                "name": d.name,
                "records": d.records,
                "fingerprint": d.fingerprint,
                "classification": d.classification,
            }
            for d in backup.datasets
        ],
        "artifacts": [
            {
                "path": a.path,
                "role": a.role.value,
                "size": a.size,
                "sha256": a.sha256,
                "plain_size": a.plain_size,
                "plain_sha256": a.plain_sha256,
                "deleted": a.deleted,
            }
            for a in backup.artifacts
        ],
        "holds": [hold_json(h) for h in backup.holds],
        "encryption": {
            "format": "age",
            "recipient": backup.recipient,
            "kek_id": backup.kek_id,
            "kek_version": backup.kek_version,
        },
        "manifest_sha256": backup.manifest_sha256,
    }
    if full:
        out["envelope"] = json.loads(backup.envelope) if backup.envelope else None
    return out


def hold_json(hold: Hold) -> dict[str, Any]:
    """A legal hold."""
    return {
        "backup_id": hold.backup_id,
        "case": hold.case_id,
        "reason": hold.reason,
        "active": hold.active,
        "created_at": hold.created_at.isoformat(),
        "created_by": hold.created_by,
        "released_at": hold.released_at.isoformat() if hold.released_at else None,
        "released_by": hold.released_by,
        "release_reason": hold.release_reason,
    }


def verification_json(v: Verification, *, brief: bool = False) -> dict[str, Any]:
    """The JSON form of a verification (``brief`` leaves the findings' details out)."""
    return {
        "id": v.id,
        "backup_id": v.backup_id,
        "kind": v.kind,
        "ok": v.ok,
        "started_at": v.started_at,
        "finished_at": v.finished_at,
        "seconds": round(v.seconds, 3),
        "sample_percent": v.sample_percent,
        "sample_seed": v.sample_seed,
        "coverage": v.coverage,
        "mode": v.mode,
        "vouched_by": v.vouched_by,
        "vouched_by_action": v.vouched_by_action,
        "findings_count": len(v.findings),
        "findings": [
            {"code": f.code, "subject": f.subject, "message": f.message} if brief else f.to_json()
            for f in v.findings
        ],
    }


def drill_json(d: Drill) -> dict[str, Any]:
    """A drill (``total_seconds``: every phase, as ``services.drill.drill_seconds``)."""
    return {
        "drill_id": d.id,
        "backup_id": d.backup_id,
        "target": d.target,
        "ok": d.ok,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
        "restore_seconds": round(d.restore_seconds, 6),
        "total_seconds": round(float(sum(d.phases.values())), 6),
        "rto_seconds": d.rto_seconds,
        "fingerprint_match": d.fingerprint_match,
        "phases": d.phases,
        "probes": list(d.probes),
        "findings": [f.to_json() for f in d.findings],
    }


def policy_version_json(v: PolicyVersion) -> dict[str, Any]:
    """A policy version without its text."""
    return {
        "version": v.version,
        "sha256": v.sha256,
        "proposed_by": v.proposed_by,
        "proposed_at": v.proposed_at.isoformat(),
        "proposal_seq": v.proposal_seq,
        "approved_by": v.approved_by,
        "approved_at": v.approved_at.isoformat() if v.approved_at else None,
        "approval_seq": v.approval_seq,
    }


def policy_document_json(v: PolicyVersion) -> dict[str, Any]:
    """A policy version with its text (``policy show --json``)."""
    return {**policy_version_json(v), "text": v.text}


def baseline_json(b: Baseline) -> dict[str, Any]:
    """A baseline with its content (``baseline show --json``)."""
    return {
        "id": b.id,
        "approved_by": b.approved_by,
        "approved_at": b.approved_at.isoformat(),
        "sha256": b.sha256,
        "seq": b.seq,
        "content": b.content,
    }


def rotation_json(result: RotationResult) -> dict[str, Any]:
    """What a key rotation did."""
    return {
        "kek_id": result.kek_id,
        "old_version": result.old_version,
        "new_version": result.new_version,
        "rewrapped": result.rewrapped,
        "rewrapped_totp": result.rewrapped_totp,
        "rewrapped_recipients": result.rewrapped_recipients,
        "retired": result.retired,
    }
