"""What the approver of an export run sees before judging it (docs/exports.md, "The
preview").

When an authenticated ``export run`` is about to file its approval request, a dry pass over
the input (:class:`~.passes.RecordPass`, nothing written but the sealed sample) computes the
counts (records in and out, excluded by reason, records failing the contract, fields left
behind) and keeps the first :data:`SAMPLE_RECORDS` records of the minimised, transformed
output. The counts and the SHA-256 of the sample go into the request's parameters (so the
ledger holds them and the approval covers them); the sample itself is personal data and never
enters the ledger: it is encrypted in the age format to a fresh identity, whose secret is
wrapped by the identity keystore (as uploaded audit files are), and kept in the home
(``export-previews/<sha256>.json``, mode 0600).

:func:`shown` gives the preview to the people who may judge the request (another person
holding the rule's role, eligible when it was asked for) and to its requester; anyone else
who may read requests sees the counts with the sample withheld. The sealed sample must
decrypt and hash to the digest the request carries, or it is not shown.

The run that executes the approved request counts again and must reach the approved counts
(:meth:`Preview.require_same`): otherwise the data changed since the approval, and the run
fails without delivering anything.

A sample does not outlive its request: :func:`~.samples.sweep_samples` removes every sample
no open request names (run here before each new sample is sealed, and after every decision
and execution of a request); a request that ended shows its sample as no longer kept.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import rfc8785

from affidavit.crypto.age import decrypt_chunks, encrypt_chunks, new_identity
from affidavit.crypto.digest import constant_time_equal, sha256_hex
from affidavit.errors import Error, IntegrityError, VaultError
from affidavit.input_files import open_regular
from affidavit.keystores.base import WrappedSecret
from affidavit.models.approval import FINAL_STATES, ApprovalRequest, GatedOperation
from affidavit.models.identity import Principal
from affidavit.private_temp import private_folder
from affidavit.services.context import App
from affidavit.services.exports.passes import Plan, RecordPass, counts
from affidavit.services.exports.samples import samples_folder, sweep_samples
from affidavit.services.identity import identity_keystore
from affidavit.services.requests import read_requests

SAMPLE_RECORDS: Final = 5
"""Records of the minimised output an approver sees."""
MAX_SEALED_BYTES: Final = 256 * 1024 * 1024
"""The most a sealed sample file is read: five documents of MongoDB's 16 MiB limit, as
Extended JSON, age-encrypted and base64-encoded, stay well below it."""
_CONTEXT: Final = b"affidavit-export-preview:"
_SHA256_HEX: Final = frozenset("0123456789abcdef")


def preview_counts(records: RecordPass) -> dict[str, Any]:
    """The counts of a finished pass, as a request carries them."""
    out = counts(records.tally)
    out["contract_failed_records"] = records.contract.failed_records
    out["contract_passed"] = records.contract.passed
    return out


@dataclass(frozen=True, slots=True)
class Preview:
    """The counts and the sample digest an approval covers (the ``preview`` parameter)."""

    counts: dict[str, Any]
    sample_sha256: str
    sample_records: int

    def to_json(self) -> dict[str, Any]:
        """The request parameter."""
        return {
            "counts": self.counts,
            "sample_sha256": self.sample_sha256,
            "sample_records": self.sample_records,
        }

    @classmethod
    def from_json(cls, data: Any) -> Preview | None:
        """The preview a request's parameter holds, or None (a request without one)."""
        if not isinstance(data, dict):
            return None
        found = data.get("counts")
        digest = data.get("sample_sha256")
        size = data.get("sample_records")
        if not isinstance(found, dict) or not isinstance(digest, str) or not isinstance(size, int):
            return None
        return cls(counts=found, sample_sha256=digest, sample_records=size)

    def require_same(self, now: dict[str, Any]) -> None:
        """Raise :class:`IntegrityError` when a run's counts are not the approved ones."""
        if rfc8785.dumps(now) != rfc8785.dumps(self.counts):
            raise IntegrityError(
                "the data changed since the approval: the run counted "
                f"{_brief(now)}, the approver was shown {_brief(self.counts)}; nothing was "
                "delivered",
                hint="run `affidavit export run` again: a new request shows the new counts",
            )


def _brief(found: dict[str, Any]) -> str:
    excluded = found.get("excluded") or {}
    parts = [f"{found.get('in')} in", f"{found.get('out')} out"]
    parts += [f"{n} {why}" for why, n in sorted(excluded.items())]
    return ", ".join(parts)


def _folder(app: App) -> Path:
    return samples_folder(Path(app.settings.home))


def sweep(app: App, *, now: datetime | None = None) -> list[str]:
    """Remove the sealed samples no open request needs (:func:`~.samples.sweep_samples`);
    the digests removed."""
    with app.read() as uow:
        every = read_requests(uow)
    return sweep_samples(Path(app.settings.home), every.values(), now=now)


def make_preview(app: App, plan: Plan, *, at: datetime) -> Preview:
    """The dry pass (consent judged at ``at``) and the sealed sample (see the module
    docstring). Raises what the pass raises."""
    records = RecordPass(app, plan, at=at)
    sample: list[dict[str, Any]] = []
    with private_folder("export-preview") as work:
        for out in records.shipped(work):
            if len(sample) < SAMPLE_RECORDS:
                sample.append(out)
    records.finish()
    text = json.dumps(sample, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    digest = sha256_hex(text)
    sweep(app)  # the samples of requests that ended go before a new one comes
    _seal(app, digest, text)
    return Preview(counts=preview_counts(records), sample_sha256=digest, sample_records=len(sample))


def _seal(app: App, digest: str, text: bytes) -> None:
    identity, recipient = new_identity()
    wrapped = identity_keystore(app.settings).wrap(
        identity.encode("ascii"), context=_CONTEXT + digest.encode("ascii")
    )
    sealed = b"".join(encrypt_chunks([text], recipient))
    body = {
        "sample_sha256": digest,
        "kek_id": wrapped.kek_id,
        "version": wrapped.version,
        "wrapped_identity": base64.b64encode(wrapped.ciphertext).decode("ascii"),
        "sealed": base64.b64encode(sealed).decode("ascii"),
    }
    folder = _samples_folder(app)
    path = folder / f"{digest}.json"
    # a fresh, unpredictable name, created here (never a planted file or symbolic link)
    partial = folder / f".{digest}.{os.getpid()}-{os.urandom(8).hex()}.partial"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(partial, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh)
            os.replace(partial, path)  # the same digest, the same sample: replacing is harmless
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
    except OSError as exc:
        raise VaultError(
            f"cannot seal the preview sample in {folder}: {exc.strerror or exc}",
            hint="check the home's export-previews folder; nothing was requested",
        ) from exc


def _samples_folder(app: App) -> Path:
    """The samples folder, created private; refused when it is not a folder of the home's
    own (a symbolic link: samples written through it would be out of every sweep's reach)."""
    folder = _folder(app)
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        mode = os.lstat(folder).st_mode
    except OSError as exc:
        raise VaultError(
            f"cannot create the preview samples folder {folder}: {exc.strerror or exc}",
            hint="check the home's permissions; nothing was requested",
        ) from exc
    if not stat.S_ISDIR(mode):
        raise VaultError(
            f"the preview samples folder {folder} is a symbolic link or not a folder: a "
            "sample (personal data) is never written through it",
            hint=f"remove what stands at {folder} (the next request creates the folder); "
            "nothing was requested",
        )
    return folder


def open_sample(app: App, digest: str) -> list[dict[str, Any]]:
    """The sealed sample of ``digest``, decrypted and checked against it. Raises
    :class:`IntegrityError` when it is missing, does not decrypt, or is not that sample."""
    if len(digest) != 64 or not _SHA256_HEX.issuperset(digest):
        raise IntegrityError("the request names no valid sample digest")
    path = _folder(app) / f"{digest}.json"
    try:
        # a regular file only (never a planted pipe, link or device), and never more than
        # a sealed sample can be
        with open_regular(path, what="the sealed sample") as fh:
            raw = fh.read(MAX_SEALED_BYTES + 1)
        if len(raw) > MAX_SEALED_BYTES:
            raise ValueError(f"larger than {MAX_SEALED_BYTES} bytes")
        body = json.loads(raw.decode("utf-8"))
        wrapped = WrappedSecret(
            kek_id=str(body["kek_id"]),
            version=int(body["version"]),
            ciphertext=base64.b64decode(body["wrapped_identity"], validate=True),
        )
        identity = (
            identity_keystore(app.settings)
            .unwrap(wrapped, context=_CONTEXT + digest.encode("ascii"))
            .decode("ascii")
        )
        text = b"".join(decrypt_chunks([base64.b64decode(body["sealed"], validate=True)], identity))
    except (OSError, ValueError, KeyError, TypeError, UnicodeError, Error) as exc:
        raise IntegrityError(
            f"the sealed sample {digest[:12]}... cannot be read: {exc}",
            hint="the approver cannot see the sample: veto the request, or ask for a new one",
        ) from None
    if not constant_time_equal(sha256_hex(text).encode(), digest.encode()):
        raise IntegrityError(
            f"the sealed sample {digest[:12]}... is not the one the request names",
            hint="veto the request: the sample in the home was replaced",
        )
    sample: list[dict[str, Any]] = json.loads(text)
    return sample


def may_see_sample(principal: Principal, request: ApprovalRequest) -> bool:
    """Whether ``principal`` may see a request's sample: its requester, or a person who may
    judge it (holding the rule's role, among the people eligible when it was asked for)."""
    if not principal.authenticated or principal.account_id is None:
        return False
    if principal.account_id == request.requester_id:
        return True
    return (
        request.rule.role in principal.roles
        and principal.name in request.eligible
        and principal.name != request.requested_by
    )


def shown(
    app: App, principal: Principal, request: ApprovalRequest, now: datetime | None = None
) -> dict[str, Any] | None:
    """What ``principal`` sees of an export run request's preview: None for another
    operation or a request without one; else the counts, and the sample or why not (a
    request that ended at ``now``, default: not judged, keeps no sample)."""
    if request.operation is not GatedOperation.EXPORT_RUN:
        return None
    preview = Preview.from_json(request.params.get("preview"))
    if preview is None:
        return None
    out: dict[str, Any] = {**preview.to_json(), "sample": None, "sample_withheld": None}
    if not may_see_sample(principal, request):
        out["sample_withheld"] = "only the requester and the people who may judge it see it"
        return out
    state = request.state(now) if now is not None else None
    if state is not None and state in FINAL_STATES:
        out["sample_withheld"] = (
            f"no longer kept: the request is {state.value} (the ledger keeps the sample's SHA-256)"
        )
        return out
    try:
        out["sample"] = open_sample(app, preview.sample_sha256)
    except IntegrityError as exc:
        out["sample_withheld"] = exc.message
    return out


def request_view(
    app: App, principal: Principal, request: ApprovalRequest, now: datetime
) -> dict[str, Any]:
    """A request as ``request show`` and ``GET /requests/{id}`` give it, with the preview
    of an export run as ``principal`` may see it (:func:`shown`)."""
    data = request.to_json(now)
    preview = shown(app, principal, request, now)
    if preview is not None:
        data["preview"] = preview
    return data
