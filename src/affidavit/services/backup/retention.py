"""What happens to a backup after it is taken: listing it, legal holds, and deletion after
its retention (never while held, and only on a ledger that verifies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from affidavit.catalog.store import UnitOfWork
from affidavit.constants import INGESTED_LABEL
from affidavit.errors import InputError, IntegrityError, NotFound, PolicyViolation
from affidavit.models.approval import GatedOperation
from affidavit.models.backup import Backup, BackupStatus, Hold
from affidavit.models.inventory import Vault
from affidavit.services.backends import vault_backend
from affidavit.services.backup import recording
from affidavit.services.context import App
from affidavit.services.leases import read_reclaimed
from affidavit.services.ledger import require_verified_ledger
from affidavit.services.policy_vouch import protection
from affidavit.services.requests import Authority, gate
from affidavit.vaults.base import ArtifactLocked, ArtifactNotFound


def list_backups(app: App, source: str | None = None) -> list[Backup]:
    """Backups (of one source), newest first; runs found dead are recorded abandoned first
    (:func:`~affidavit.services.leases.read_reclaimed`: one reader when nothing runs)."""

    def read(uow: UnitOfWork) -> list[Backup]:
        if source is not None and source != INGESTED_LABEL:
            uow.sources.get(source)
        return uow.backups.list(source)

    return read_reclaimed(app, read)


def get_backup(app: App, backup_id: str) -> Backup:
    """One backup with its artifacts, datasets and holds (a dead run recorded abandoned
    first)."""
    return read_reclaimed(app, lambda uow: uow.backups.get(backup_id))


def add_hold(app: App, backup_id: str, *, case_id: str, reason: str) -> Hold:
    """Place a legal hold: the backup cannot be deleted while it is active."""
    case_id, reason = case_id.strip(), reason.strip()
    if not case_id or not reason:
        raise InputError("a hold needs --case and --reason")
    with app.change() as change:
        hold = change.uow.backups.add_hold(
            backup_id, case_id=case_id, reason=reason, by=app.actor, at=recording.now()
        )
        change.record("hold.added", f"backup:{backup_id}", {"case": case_id, "reason": reason})
    return hold


def release_hold(
    app: App, backup_id: str, *, case_id: str, reason: str, authority: Authority | None = None
) -> Hold:
    """Release a legal hold (a gated operation: see :mod:`affidavit.services.requests`)."""
    if not reason.strip():
        raise InputError("releasing a hold needs --reason")
    with app.read() as uow:  # NotFound before a request is recorded
        held = [h for h in uow.backups.holds(backup_id, active_only=True) if h.case_id == case_id]
    if not held:
        raise NotFound(
            f"no active hold {case_id!r} on backup {backup_id}",
            hint="`affidavit hold list` shows the holds",
        )
    hold_id = held[0].id  # an approval releases this hold, not a later one of the same case
    allowed = gate(
        app,
        GatedOperation.HOLD_RELEASE,
        {"backup_id": backup_id, "case_id": case_id, "hold_id": hold_id, "reason": reason.strip()},
        target=f"backup:{backup_id}",
        reason=reason,
        authority=authority,
    )
    with app.change() as change:
        hold = change.uow.backups.release_hold(
            backup_id, case_id, reason=reason.strip(), by=app.actor, at=recording.now()
        )
        if hold.id != hold_id:  # another hold of the case came meanwhile: not the approved one
            raise NotFound(
                f"the hold {case_id!r} on backup {backup_id} changed while it was released",
                hint="ask again: `affidavit hold release`",
            )
        change.record(
            "hold.released",
            f"backup:{backup_id}",
            {"case": case_id, "reason": reason, **allowed.event_details()},
        )
        allowed.seal(change)
    return hold


def list_holds(app: App, backup_id: str | None = None, *, active_only: bool = False) -> list[Hold]:
    """Holds, oldest first."""
    with app.read() as uow:
        if backup_id is not None:
            uow.backups.get(backup_id)
        return uow.backups.holds(backup_id, active_only=active_only)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletionReceipt:
    """What a deletion removed and kept."""

    backup_id: str
    removed: list[str]
    kept_manifest_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        """``{"backup_id", "removed", "kept_manifest_sha256"}`` (``backup delete --json``)."""
        return {
            "backup_id": self.backup_id,
            "removed": self.removed,
            "kept_manifest_sha256": self.kept_manifest_sha256,
        }


def _deletion_refusals(app: App, backup_id: str) -> tuple[Backup, Vault, list[str]]:
    """The backup, its vault and why it may not be deleted now. A deletion cannot be undone:
    it acts only on a ledger that verifies in full and whose receipt can be recorded, and
    takes the retention and holds from the signed events (the later and the more of them and
    the catalog's rows)."""
    with app.read() as uow:
        uow.backups.get(backup_id)  # NotFound first
    require_verified_ledger(app, refusing=f"to delete backup {backup_id}", nothing="deleted")
    app.check_signer()  # the receipt must be recordable before anything is removed
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
        vault = uow.vaults.get(backup.vault)
        signed = protection(uow.ledger, backup_id)  # the catalog's copies may have been edited
    if signed.retain_until is None:
        raise IntegrityError(
            f"refusing to delete backup {backup_id}: the ledger holds no signed backup.started "
            "for it, so nothing vouches for its retention or its holds",
            hint="the catalog's row was not written by affidavit, or the ledger was started "
            "again after a lost catalog; nothing was deleted",
        )
    if backup.status is BackupStatus.DELETED:
        raise InputError(f"backup {backup_id} was already deleted")
    held = sorted({h.case_id for h in backup.holds if h.active} | set(signed.held))
    retained = max(backup.retain_until, signed.retain_until)
    refusals = []
    if recording.now() < retained:
        refusals.append(f"it is retained until {retained.isoformat()}")
    if held:
        refusals.append("it is under legal hold " + ", ".join(held))
    return backup, vault, refusals


def delete_backup(
    app: App, backup_id: str, *, reason: str, authority: Authority | None = None
) -> DeletionReceipt:
    """Delete a backup's artifacts after its retention and with no active hold (a gated
    operation: see :mod:`affidavit.services.requests`). The manifest, fingerprints and
    history stay in the catalog; the receipt goes to the ledger."""
    if not reason.strip():
        raise InputError("a deletion needs --reason")
    backup, vault, refusals = _deletion_refusals(app, backup_id)
    if refusals:
        with app.change() as change:
            change.record(
                "backup.deletion_refused",
                f"backup:{backup_id}",
                {"reason": reason, "refused_because": refusals},
            )
        raise PolicyViolation(
            f"backup {backup_id} cannot be deleted: {'; '.join(refusals)}",
            hint="deletion waits for the retention date and for every hold to be released",
        )
    allowed = gate(
        app,
        GatedOperation.BACKUP_DELETE,
        {"backup_id": backup_id, "reason": reason.strip()},
        target=f"backup:{backup_id}",
        reason=reason,
        authority=authority,
    )
    backend = vault_backend(vault)
    with app.read() as uow:  # a hold placed since the check above still wins
        if uow.backups.holds(backup_id, active_only=True):
            raise PolicyViolation(
                f"backup {backup_id} was put under legal hold while the deletion started",
                hint="deletion waits for every hold to be released",
            )
    removed: list[str] = []
    try:
        for artifact in backup.artifacts:
            if artifact.deleted:
                continue
            try:
                backend.delete(artifact.path)
            except ArtifactNotFound:
                pass
            except ArtifactLocked as exc:
                raise PolicyViolation(
                    f"the vault still locks {artifact.path}: {exc.message}",
                    hint="the storage's own retention is longer than the catalog's",
                ) from exc
            removed.append(artifact.path)
    except BaseException as exc:
        if removed:  # the vault changed: that is recorded even though the deletion stopped
            with app.change() as change:
                change.uow.backups.mark_artifacts_deleted(backup_id, removed)
                change.record(
                    "backup.deletion_partial",
                    f"backup:{backup_id}",
                    {"reason": reason.strip(), "removed": removed, "error": str(exc)},
                )
        raise
    with app.change() as change:
        change.uow.backups.mark_deleted(backup_id, at=recording.now())
        change.record(
            "backup.deleted",
            f"backup:{backup_id}",
            {
                "reason": reason.strip(),
                "removed": removed,
                "kept": {
                    "manifest_sha256": backup.manifest_sha256,
                    "datasets": len(backup.datasets),
                },
                **allowed.event_details(),
            },
        )
        allowed.seal(change)
    return DeletionReceipt(
        backup_id=backup_id, removed=removed, kept_manifest_sha256=backup.manifest_sha256
    )
