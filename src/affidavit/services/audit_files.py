"""Files uploaded as answers to evidence requests (docs/audit.md, "Uploaded files").

A file is checked before anything is stored: a regular file, at most :data:`MAX_FILE_BYTES`,
of a type on the allow-list **by its content** (:func:`sniff`: PDF, PNG, JPEG, plain UTF-8
text such as CSV, JSON or a log), with a name whose extension agrees. Then it is encrypted in
the age format to a key of its own, stored in a vault through the vault backend
(``audit/ENGAGEMENT/REQUEST/FILE.age``), and its age identity is wrapped by the identity
keystore (the key that wraps TOTP secrets, which ``keys rotate`` does not retire with the
local key file) and kept in the ``audit.request_answered`` event with the file's name, size,
SHA-256 and sniffed type. A failure to record the answer removes the stored file again.

A file is only ever handed out as a download (``application/octet-stream``, ``Content-
Disposition: attachment``), decrypted and checked against the SHA-256 the ledger recorded;
nothing uploaded is served inline or executed.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Final

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto import tokens
from affidavit.crypto.age import decrypt_chunks, encrypt_chunks, new_identity
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError, IntegrityError, NotFound
from affidavit.input_files import open_regular
from affidavit.keystores.base import WrappedSecret
from affidavit.models.audit import TRANSITIONS, Artifact, ArtifactKind, EvidenceRequest, Step
from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.services import audit
from affidavit.services.backends import vault_backend
from affidavit.services.context import App
from affidavit.services.identity import identity_keystore
from affidavit.services.principals import authorize

MAX_FILE_BYTES: Final = 10 * 1024 * 1024
"""The largest file an answer may upload (10 MiB)."""
_CONTEXT: Final = b"affidavit-audit-file:"
_TEXT_SUFFIXES: Final = frozenset({".txt", ".csv", ".json", ".log", ".md", ".tsv"})
ALLOWED: Final = {
    "application/pdf": frozenset({".pdf"}),
    "image/png": frozenset({".png"}),
    "image/jpeg": frozenset({".jpg", ".jpeg"}),
    "text/plain": _TEXT_SUFFIXES,
}
"""The media types an upload may have (by its content), and the extensions each allows."""
_ACTIVE_TEXT: Final = (b"<", b"#!", b"\xef\xbb\xbf<")
"""Text that a browser or a shell could take for markup or a script is refused."""


def sniff(data: bytes) -> str | None:
    """The media type of ``data`` by its content, when it is one of :data:`ALLOWED`; None
    otherwise (HTML, SVG, scripts, executables, archives and anything unknown)."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if data.lstrip().startswith(_ACTIVE_TEXT) or "<script" in text.lower():
        return None
    if any(not (ch.isprintable() or ch in "\t\r\n") for ch in text):
        return None
    return "text/plain"


def _safe_name(path: Path) -> str:
    name = PurePosixPath(path.name).name
    if not name or len(name) > 200 or any(not ch.isprintable() for ch in name):
        raise InputError(f"{path.name[:60]!r} is not a usable file name", hint="rename the file")
    return name


def read_upload(path: Path) -> tuple[str, bytes, str]:
    """The name, bytes and sniffed media type of the file at ``path``; :class:`InputError`
    (nothing stored) for a file that is not regular, too large, of a type not allowed by its
    content, or whose extension does not fit its content."""
    name = _safe_name(path)
    try:
        size = os.lstat(path).st_size
        if size > MAX_FILE_BYTES:
            raise InputError(
                f"{name} holds {size} bytes: an upload is at most {MAX_FILE_BYTES} bytes (10 MiB)",
                hint="split it, or hand over an evidence package instead",
            )
        with open_regular(path, what="the upload") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"no file {path}", hint="check the path") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read", hint="check its permissions") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{name} grew beyond {MAX_FILE_BYTES} bytes while it was read")
    if not data:
        raise InputError(f"{name} is empty", hint="upload a file with content")
    kind = sniff(data)
    if kind is None:
        raise InputError(
            f"{name}: its content is not an allowed type",
            hint="allowed: PDF, PNG, JPEG, plain text (CSV, JSON, logs); never HTML, SVG, "
            "scripts, archives or programs",
        )
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in ALLOWED[kind]:
        raise InputError(
            f"{name}: its content is {kind}, which its extension {suffix or '(none)'} does not fit",
            hint="name it " + " or ".join(sorted(ALLOWED[kind])),
        )
    return name, data, kind


def _pick_vault(app: App, name: str | None) -> str:
    with app.read() as uow:
        vaults = uow.vaults.list()
    if name is not None:
        if not any(v.name == name for v in vaults):
            raise NotFound(f"no vault {name!r}", hint="`affidavit vault list` shows them")
        return name
    if len(vaults) != 1:
        raise InputError(
            f"this home has {len(vaults)} vaults: say which one keeps uploads",
            hint="--vault NAME",
        )
    return vaults[0].name


def store_uploads(
    app: App,
    principal: Principal,
    request_id: str,
    paths: Iterable[Path],
    *,
    vault: str | None = None,
    now: datetime | None = None,
) -> list[Artifact]:
    """Check every file first, then encrypt and store each in the vault; the artifacts to
    hand to :func:`affidavit.services.audit.answer` (``audit.respond``)."""
    authorize(principal, Permission.AUDIT_RESPOND)
    request = audit.get_request(app, principal, request_id, now=now)
    files = [read_upload(Path(p)) for p in paths]
    if not files:
        return []
    where = _pick_vault(app, vault)
    with app.read() as uow:
        backend = vault_backend(uow.vaults.get(where))
    keystore = identity_keystore(app.settings)
    stored: list[Artifact] = []
    try:
        for name, data, kind in files:
            file_id = f"af-{tokens.new_id()}"
            identity, recipient = new_identity()
            wrapped = keystore.wrap(identity.encode(), context=_CONTEXT + file_id.encode())
            path = f"audit/{request.engagement}/{request.id}/{file_id}.age"
            backend.put(path, encrypt_chunks([data], recipient), retain_until=None)
            stored.append(
                Artifact(
                    kind=ArtifactKind.FILE,
                    ref=file_id,
                    name=name,
                    size=len(data),
                    sha256=sha256_hex(data),
                    media_type=kind,
                    vault=where,
                    path=path,
                    wrapped={
                        "kek_id": wrapped.kek_id,
                        "version": wrapped.version,
                        "ciphertext": base64.b64encode(wrapped.ciphertext).decode("ascii"),
                    },
                )
            )
    except BaseException:
        remove_uploads(app, stored)
        raise
    return stored


def kek_versions_in_use(uow: UnitOfWork, kek_id: str) -> set[int]:
    """The versions of the key ``kek_id`` that wrap an uploaded file's key. Those wrapped keys
    live in the ledger's events, which nothing rewrites: ``keys rotate`` must never retire
    one of these versions (with an AWS KMS keystore the same key wraps backups and uploads)."""
    versions: set[int] = set()
    for request in audit.read_audit(uow).requests.values():
        for artifact in request.artifacts:
            wrapped = artifact.wrapped or {}
            if wrapped.get("kek_id") == kek_id and isinstance(wrapped.get("version"), int):
                versions.add(int(wrapped["version"]))
    return versions


def remove_uploads(app: App, artifacts: Iterable[Artifact]) -> None:
    """Remove stored uploads whose answer was not recorded (best effort: never raises)."""
    for artifact in artifacts:
        if artifact.vault is None or artifact.path is None:
            continue
        try:
            with app.read() as uow:
                backend = vault_backend(uow.vaults.get(artifact.vault))
            backend.delete(artifact.path)
        except Exception:  # noqa: S112 - the answer's own error is the one to report
            continue


def answer_with_files(
    app: App,
    principal: Principal,
    request_id: str,
    *,
    files: Iterable[Path] = (),
    vault: str | None = None,
    artifacts: Iterable[tuple[str, str]] = (),
    text: str = "",
    submit: bool = True,
    now: datetime | None = None,
) -> EvidenceRequest:
    """:func:`audit.answer` with uploaded files stored first; when the answer is refused,
    the stored files are removed again (no file without its event)."""
    given = list(artifacts)
    request = audit.get_request(app, principal, request_id, now=now)
    # refuse an answer the state machine does not allow before anything is stored
    step = Step.SUBMIT if submit else Step.ANSWER
    allowed, _ = TRANSITIONS[step]
    if request.state not in allowed:
        return audit.answer(
            app, principal, request_id, artifacts=given, text=text, submit=submit, now=now
        )  # fmt: skip (raises the 409)
    stored = store_uploads(app, principal, request_id, files, vault=vault, now=now)
    try:
        return audit.answer(app, principal, request_id, artifacts=given, uploads=stored,
                            text=text, submit=submit, now=now)  # fmt: skip
    except BaseException:
        remove_uploads(app, stored)
        raise


def read_file(
    app: App, principal: Principal, request_id: str, file_id: str, *, now: datetime | None = None
) -> tuple[Artifact, bytes]:
    """An uploaded file of a request the principal may see (``audit.read``, scoped),
    decrypted and checked against the SHA-256 its answer recorded."""
    request = audit.get_request(app, principal, request_id, now=now)
    artifact = request.file(file_id)
    if artifact is None or artifact.vault is None or artifact.path is None:
        raise NotFound(f"no file {file_id[:40]!r} in evidence request {request.id}")
    wrapped = artifact.wrapped or {}
    try:
        secret = WrappedSecret(
            kek_id=str(wrapped["kek_id"]),
            version=int(wrapped["version"]),
            ciphertext=base64.b64decode(str(wrapped["ciphertext"]), validate=True),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"the key of file {file_id} is not readable") from exc
    identity = identity_keystore(app.settings).unwrap(secret, context=_CONTEXT + file_id.encode())
    with app.read() as uow:
        backend = vault_backend(uow.vaults.get(artifact.vault))
    with backend.open(artifact.path) as fh:

        def chunks() -> Iterable[bytes]:
            while chunk := fh.read(1 << 20):
                yield chunk

        data = b"".join(decrypt_chunks(chunks(), identity.decode()))
    if sha256_hex(data) != artifact.sha256:
        raise IntegrityError(
            f"file {file_id} does not have the SHA-256 its answer recorded",
            hint="the vault's copy was altered; `affidavit ledger verify` checks the record",
        )
    return artifact, data
