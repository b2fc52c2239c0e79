"""The vault's copy of a backup's signed manifest (``SOURCE/BACKUP/manifest.dsse.json``):
there, a regular file, and byte-identical to the catalog's envelope. Verifications and drills
check it alike (:func:`check_manifest_copy`)."""

from __future__ import annotations

from dataclasses import dataclass

from affidavit.crypto.digest import constant_time_equal, sha256_hex
from affidavit.models.backup import ArtifactRole, Backup
from affidavit.models.checks import CheckCode, Finding
from affidavit.vaults.base import ArtifactNotFound, ArtifactReplaced, VaultBackend

_MANIFEST_COPY_MAX = 16 << 20  # bytes of a manifest copy read (a genuine one is far smaller)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestCopy:
    """What the vault holds as the copy of a backup's signed manifest."""

    path: str | None  # where the backup recorded it (None: no copy was recorded)
    sha256: str | None  # of the bytes read (None: nothing could be read)
    findings: tuple[Finding, ...]


def check_manifest_copy(vault: VaultBackend, backup: Backup) -> ManifestCopy:
    """The vault's copy of the signed envelope (``SOURCE/BACKUP/manifest.dsse.json``) must be
    there, a regular file, and byte-identical to the catalog's envelope (which the caller
    checks against the ledger key). Verifications and drills check it alike. Raises
    ``VaultError`` when the vault cannot be read."""
    copies = [a for a in backup.artifacts if a.role is ArtifactRole.MANIFEST]
    if not copies:
        missing = Finding(
            code=CheckCode.MANIFEST_COPY_MISSING.value,
            message="no copy of the signed manifest was recorded in the vault",
            subject=backup.id,
        )
        return ManifestCopy(path=None, sha256=None, findings=(missing,))
    copy = copies[0]
    try:
        with vault.open(copy.path) as fh:
            data = fh.read(_MANIFEST_COPY_MAX)
    except ArtifactReplaced as exc:
        replaced = not_a_file(copy.path, exc.kind, exc.message)
        return ManifestCopy(path=copy.path, sha256=None, findings=(replaced,))
    except ArtifactNotFound:
        gone = Finding(
            code=CheckCode.MANIFEST_COPY_MISSING.value,
            message="the vault's manifest copy is gone",
            subject=copy.path,
        )
        return ManifestCopy(path=copy.path, sha256=None, findings=(gone,))
    digest = sha256_hex(data)
    if backup.envelope is not None and constant_time_equal(data, backup.envelope.encode()):
        return ManifestCopy(path=copy.path, sha256=digest, findings=())
    differs = Finding(
        code=CheckCode.MANIFEST_COPY_MISMATCH.value,
        message="the vault's copy of the signed manifest differs from the catalog's",
        subject=copy.path,
        details={"vault_sha256": digest, "recorded_sha256": copy.sha256},
    )
    return ManifestCopy(path=copy.path, sha256=digest, findings=(differs,))


def not_a_file(path: str, kind: str, error: str) -> Finding:
    """``artifact-not-a-file``: a ``kind`` (a symbolic link, a folder, a FIFO...) stands
    where the artifact at ``path`` should be."""
    article = "an" if kind[:1] in "aeiouAEIOU" else "a"
    return Finding(
        code=CheckCode.ARTIFACT_NOT_A_FILE.value,
        message=f"{article} {kind} stands where the artifact should be",
        subject=path,
        details={"kind": kind, "error": error},
    )
