"""Key-encryption keys: which keystore wraps backup identities, status, rotation, and the
disclosure of one backup's identity for an independent restore.

The keystore is the local file ``HOME/keys/kek.json`` (optionally passphrase-protected through
``AFFIDAVIT_PASSPHRASE``) unless ``kms_key_id`` names an AWS KMS key; ``_KEYSTORES`` is the
registry by :class:`KeystoreKind`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from affidavit.config import Settings
from affidavit.errors import InputError, KeystoreError
from affidavit.keystores.base import KekVersion, Keystore, WrappedSecret
from affidavit.models.backup import Backup, BackupStatus
from affidavit.services.context import App

if TYPE_CHECKING:  # the approval gate loads where a gated operation runs (start-up of verify)
    from affidavit.services.requests import Authority

KEK_FILENAME = "kek.json"
ROTATION_PERIOD = timedelta(days=90)


class KeystoreKind(StrEnum):
    """Where the key-encryption key is kept."""

    FILE = "file"  # HOME/keys/kek.json, optionally passphrase-protected
    KMS = "kms"  # an AWS KMS key (kms_key_id)


def _file_keystore(settings: Settings) -> Keystore:
    from affidavit.keystores.file import FileKeystore

    passphrase = settings.passphrase.get_secret_value() if settings.passphrase else None
    return FileKeystore(settings.home / "keys" / KEK_FILENAME, passphrase=passphrase)


def _kms_keystore(settings: Settings) -> Keystore:
    from affidavit.keystores.kms import KmsKeystore

    return KmsKeystore(settings.kms_key_id, region=settings.kms_region or None)


# keystore kind -> the keystore made from the settings (its module imported only then)
_KEYSTORES: dict[KeystoreKind, Callable[[Settings], Keystore]] = {
    KeystoreKind.FILE: _file_keystore,
    KeystoreKind.KMS: _kms_keystore,
}


def keystore_kind(settings: Settings) -> KeystoreKind:
    """The kind of keystore this home is configured to use: AWS KMS when ``kms_key_id``
    names a key, else the local key file."""
    return KeystoreKind.KMS if settings.kms_key_id else KeystoreKind.FILE


def keystore_for(settings: Settings) -> Keystore:
    """The keystore this home is configured to use. Raises ``InputError`` when its Python
    package is not installed."""
    kind = keystore_kind(settings)
    try:
        return _KEYSTORES[kind](settings)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"the {kind} keystore needs the Python package {exc.name!r}, which is not installed",
            hint="pip install 'affidavit[all]'",
        ) from exc


def wrap_identity(keystore: Keystore, backup_id: str, identity: str) -> WrappedSecret:
    """Wrap a backup's age identity, bound to its backup id."""
    return keystore.wrap(identity.encode(), context=backup_id.encode())


def unwrap_identity(keystore: Keystore, backup: Backup) -> str:
    """The backup's age identity, unwrapped by the keystore."""
    if backup.wrapped_identity is None or backup.kek_id is None or backup.kek_version is None:
        raise KeystoreError(f"backup {backup.id} has no wrapped key")
    secret = keystore.unwrap(
        WrappedSecret(
            kek_id=backup.kek_id, version=backup.kek_version, ciphertext=backup.wrapped_identity
        ),
        context=backup.id.encode(),
    )
    return secret.decode()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStatus:
    """The keystore's versions and what depends on them."""

    kek_id: str
    versions: list[KekVersion]
    current: KekVersion
    next_rotation_due: datetime
    overdue: bool
    wrapped_per_version: dict[int, int]

    def to_json(self) -> dict[str, Any]:
        """``keys status --json``."""
        return {
            "kek_id": self.kek_id,
            "current_version": self.current.version,
            "next_rotation_due": self.next_rotation_due.isoformat(),
            "overdue": self.overdue,
            "versions": [
                {
                    "version": v.version,
                    "created_at": v.created_at.isoformat(),
                    "retired_at": v.retired_at.isoformat() if v.retired_at else None,
                    "wrapped_backup_keys": self.wrapped_per_version.get(v.version, 0),
                }
                for v in self.versions
            ],
        }


def key_status(app: App) -> KeyStatus:
    """Versions, ages, how many backup keys each wraps, and when rotation is due."""
    keystore = keystore_for(app.settings)
    current = keystore.current()
    with app.read() as uow:
        backups = [b for b in uow.backups.list() if b.wrapped_identity is not None]
    per_version: dict[int, int] = {}
    for b in backups:
        if b.kek_id == current.kek_id and b.kek_version is not None:
            per_version[b.kek_version] = per_version.get(b.kek_version, 0) + 1
    due = current.created_at + ROTATION_PERIOD
    return KeyStatus(
        kek_id=current.kek_id,
        versions=keystore.versions(),
        current=current,
        next_rotation_due=due,
        overdue=datetime.now(UTC) > due,
        wrapped_per_version=per_version,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationResult:
    """What a rotation did."""

    kek_id: str
    old_version: int
    new_version: int
    rewrapped: int
    retired: list[int]
    rewrapped_totp: int = 0
    rewrapped_recipients: int = 0


def rotate_keys(app: App, *, authority: Authority | None = None) -> RotationResult:
    """New KEK version; every backup identity re-wrapped under it (no data re-encrypted);
    the old versions retired once nothing depends on them. One ledger event, committed with
    the re-wrapped keys. A gated operation (:mod:`affidavit.services.requests`)."""
    from affidavit.models.approval import GatedOperation
    from affidavit.services.requests import gate

    keystore = keystore_for(app.settings)
    allowed = gate(
        app,
        GatedOperation.KEYS_ROTATE,
        {},
        target=f"kek:{keystore.current().kek_id}",
        authority=authority,
    )
    old = keystore.current()
    with app.read() as uow:
        backups = [
            b
            for b in uow.backups.list()
            if b.wrapped_identity is not None and b.status is not BackupStatus.DELETED
        ]
    # these import this module: read here, at the rotation
    from affidavit.services import audit_files, identity
    from affidavit.services.exports import recipients

    identities = {b.id: unwrap_identity(keystore, b) for b in backups}  # fail before changing
    totp_secrets = identity.totp_secrets_to_rewrap(app, old.kek_id)  # the same key (KMS)
    pseudonym_keys = recipients.pseudonym_keys_to_rewrap(app, old.kek_id)
    app.check_signer()  # a new KEK version whose event could not be recorded is not made
    new = keystore.rotate()
    rewrapped = {bid: wrap_identity(keystore, bid, ident) for bid, ident in identities.items()}
    with app.change() as change:
        for bid, wrapped in rewrapped.items():
            change.uow.backups.rewrap(
                bid, wrapped=wrapped.ciphertext, kek_id=wrapped.kek_id, kek_version=wrapped.version
            )
        totp_accounts = identity.rewrap_totp_secrets(app, change.uow, totp_secrets)
        recipient_names = recipients.rewrap_pseudonym_keys(app, change.uow, pseudonym_keys)
        retired = []
        for kek in keystore.versions():
            if kek.version != new.version and kek.retired_at is None:
                retired.append(kek.version)
        change.record(
            "keys.rotated",
            f"kek:{new.kek_id}",
            {
                "old_version": old.version,
                "new_version": new.version,
                "rewrapped_backups": sorted(rewrapped),
                "rewrapped_totp": totp_accounts,  # accounts whose TOTP secret the key wraps
                "rewrapped_recipients": recipient_names,  # export pseudonymisation keys
                "versions_to_retire": retired,  # those no backup still uses are retired next
                **allowed.event_details(),
            },
        )
        allowed.seal(change)
    # only after the re-wrapped keys are committed, and only versions that no backup still
    # uses: a backup that started during the rotation may have wrapped under the old version
    with app.read() as uow:
        still_used = {
            b.kek_version
            for b in uow.backups.list()
            if b.kek_id == new.kek_id and b.wrapped_identity is not None
        } | {c.kek_version for c in uow.identities.totp_wrapped_by(new.kek_id)}
        still_used |= {
            k.kek_version for k in uow.exports.pseudonym_keys_wrapped_by(new.kek_id).values()
        }
        still_used |= audit_files.kek_versions_in_use(uow, new.kek_id)  # in the ledger: kept
    retired = [version for version in retired if version not in still_used]
    for version in retired:
        keystore.retire(version)
    return RotationResult(
        kek_id=new.kek_id,
        old_version=old.version,
        new_version=new.version,
        rewrapped=len(rewrapped),
        retired=retired,
        rewrapped_totp=len(totp_accounts),
        rewrapped_recipients=len(recipient_names),
    )


def export_identity(
    app: App, backup_id: str, *, reason: str, authority: Authority | None = None
) -> str:
    """The backup's ``AGE-SECRET-KEY-...`` identity, for decrypting its artifacts with stock
    ``age``. Disclosing a key is recorded in the ledger (who, when, why) before it is shown.
    A gated operation (:mod:`affidavit.services.requests`)."""
    reason = reason.strip()
    if not reason:
        raise InputError("a reason is required to disclose a key", hint='--reason "why"')
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
    from affidavit.models.approval import GatedOperation
    from affidavit.services.requests import gate

    allowed = gate(
        app,
        GatedOperation.KEYS_EXPORT_IDENTITY,
        {"backup_id": backup.id, "reason": reason},
        target=f"backup:{backup.id}",
        reason=reason,
        authority=authority,
    )
    identity = unwrap_identity(keystore_for(app.settings), backup)
    with app.change() as change:
        change.record(
            "keys.identity_exported",
            f"backup:{backup.id}",
            {"reason": reason, "recipient": backup.recipient, **allowed.event_details()},
        )
        allowed.seal(change)
    return identity
