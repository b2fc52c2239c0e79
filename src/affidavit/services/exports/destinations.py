"""Where an export is delivered: a folder on the host, or an S3 bucket (``s3://BUCKET/PREFIX``
in the spec), through the S3 vault backend (the endpoint and credentials of the AWS SDK's
chain, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for another endpoint).

An S3 destination is written like a vault: once (a ``HEAD`` first, then ``If-None-Match: *``
on the completing request, so an existing object is never replaced), as a multipart upload
that is aborted on any failure (no partial object). The output is uploaded first, then its
manifest; when the manifest's upload (or anything after it in the run's transaction) fails,
the output object is deleted again: a failure leaves no object.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from affidavit.crypto.digest import Sha256Stream, constant_time_equal, sha256_pieces
from affidavit.crypto.dsse import Envelope
from affidavit.errors import Error, InputError, IntegrityError
from affidavit.ledger.attestation import Statement
from affidavit.models.inventory import Vault, VaultKind, VaultName
from affidavit.services.backends import vault_backend
from affidavit.vaults.base import ArtifactNotFound, VaultBackend

S3_SCHEME: Final = "s3://"
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CHUNK: Final = 1024 * 1024


def is_s3(destination: str) -> bool:
    """Whether a spec's destination names an S3 bucket."""
    return destination.startswith(S3_SCHEME)


def s3_backend(destination: str) -> VaultBackend:
    """The S3 backend of ``s3://BUCKET/PREFIX``; :class:`InputError` for a malformed URL."""
    bucket, _, prefix = destination.removeprefix(S3_SCHEME).partition("/")
    if not _BUCKET.fullmatch(bucket) or any(p in (".", "..") for p in prefix.split("/")):
        raise InputError(
            f"the destination {destination[:100]!r} is not s3://BUCKET/PREFIX",
            hint="a bucket name of 3-63 lowercase letters, digits, '.' and '-'",
        )
    vault = Vault(
        name=VaultName("export-destination"),
        kind=VaultKind.S3,
        url=destination.rstrip("/"),
        region=None,
        immutable_days=None,
        created_at=datetime.now(UTC),
    )
    return vault_backend(vault)


def refuse_existing_object(backend: VaultBackend, destination: str, name: str, what: str) -> None:
    """Raise :class:`InputError` when the bucket already holds ``name`` (exit 3 when it
    cannot be asked)."""
    try:
        backend.stat(name)
    except ArtifactNotFound:
        return
    raise InputError(
        f"the destination {destination} already holds {what} {name}: nothing was exported",
        hint="delete it there, or choose another name with --output",
    )


def upload(
    backend: VaultBackend,
    *,
    partial: Path,
    name: str,
    manifest_name: str,
    manifest: bytes,
    sha256: str | None = None,
) -> list[str]:
    """Upload the output (from ``partial``), then its manifest; the names uploaded, in
    order. On a failure, what was uploaded is deleted again and the error raised.

    The output is hashed as it is uploaded (:func:`~affidavit.crypto.digest.sha256_pieces`,
    one read) and must have the digest its manifest signs for ``name`` (``sha256``, when
    given, must be that digest too): an upload of other bytes (the partial file replaced
    meanwhile) is deleted again and refused with :class:`IntegrityError` before the manifest
    goes up. A manifest that signs no digest for ``name`` is refused before anything is
    uploaded."""
    expected = _signed_digest(manifest, name, sha256)
    done: list[str] = []
    try:
        digest = Sha256Stream()
        with partial.open("rb") as fh:
            backend.put(name, sha256_pieces(fh, digest, chunk=_CHUNK), retain_until=None)
        done.append(name)
        if not constant_time_equal(
            digest.hexdigest().encode("ascii"), expected.encode("ascii", "replace")
        ):
            raise IntegrityError(
                f"the output uploaded as {name} is not the file its manifest signs (SHA-256 "
                f"{digest.hexdigest()[:16]}..., signed {expected[:16]}...): nothing was delivered",
                hint="run the export again; the encrypted output changed before its upload",
            )
        backend.put(manifest_name, [manifest], retain_until=None)
        done.append(manifest_name)
    except BaseException:
        remove_objects(backend, done)
        raise
    return done


def remove_objects(backend: VaultBackend, names: list[str]) -> None:
    """Delete uploaded objects (best effort: the run's own error is the one to report)."""
    for name in names:
        try:
            backend.delete(name)
        except Error:
            continue


def _signed_digest(manifest: bytes, name: str, sha256: str | None) -> str:
    """The SHA-256 the manifest (a DSSE envelope of an in-toto statement) signs for the
    output ``name``; ``sha256`` alone when the caller gives it and the manifest is no
    statement (:class:`IntegrityError` when the two disagree, or when neither names one)."""
    signed: set[str] = set()
    try:
        statement = Statement.from_json(Envelope.from_json(manifest).payload)
        signed = {s.sha256 for s in statement.subjects if s.name == name}
    except Error:
        pass
    if sha256 is not None:
        signed.add(sha256)
    if len(signed) != 1:
        raise IntegrityError(
            f"the manifest of {name} signs "
            + ("no digest for it" if not signed else "another digest than the one given")
            + ": nothing was uploaded",
            hint="run the export again; its manifest is not the statement of this output",
        )
    return signed.pop()
