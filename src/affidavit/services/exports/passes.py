"""One pass over the records of an export's input, shared by the run and by the preview an
approver sees: the dataset's artifacts are fetched from the vault (ciphertext digests
checked against the catalog, which the signed manifest vouched for) and decrypted into a
private folder (or, for a live source, read from the server: :mod:`.sources`); each BSON
document is decoded once, judged by the spec's filter
(:mod:`affidavit.models.export_filter`), minimised and transformed
(:class:`~.records.Minimiser`, only the allowed fields converted to Extended JSON), judged
against the consents and checked against the contract (:class:`~.records.ContractCheck`).
:meth:`RecordPass.shipped` yields the records that ship, :attr:`RecordPass.tally` counts the
rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from affidavit.constants import Classification
from affidavit.crypto.age import decrypt_to
from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import InputError, IntegrityError
from affidavit.formats.bson_codec.extjson_fast import canonical_value, decode_document
from affidavit.models.backup import ArtifactRole, Backup, BackupArtifact
from affidavit.models.export import ExportSpec, Recipient, SpecVersion, Transform
from affidavit.models.manifest import ManifestDataset
from affidavit.private_temp import open_private
from affidavit.services.backends import restore_layout, vault_backend
from affidavit.services.context import App
from affidavit.services.exports.consent import Consents
from affidavit.services.exports.recipients import pseudonym_key
from affidavit.services.exports.records import ContractCheck, Minimiser, key_text
from affidavit.services.exports.redis_input import redis_read
from affidavit.services.exports.sources import LiveInput, LiveRead
from affidavit.services.exports.streamed import streamed_batches
from affidavit.services.keys import keystore_for, unwrap_identity

MANIFEST_SUFFIX: Final = ".manifest.dsse.json"
_CHUNK: Final = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything a run was checked against before it started."""

    version: SpecVersion
    spec: ExportSpec
    spec_approval: dict[str, Any]
    recipient: Recipient
    output: Path
    classification: Classification
    backup: Backup | None = None  # the backup read (None: the live source)
    dataset: ManifestDataset | None = None  # the dataset in its signed manifest
    backup_manifest_sha256: str | None = None
    live: LiveInput | None = None  # the live source read (``from = "live"``)
    consents: Consents | None = None
    s3: str | None = None  # an S3 destination (``output`` is then in the local spool)

    @property
    def dataset_name(self) -> str:
        """The dataset read."""
        return self.live.dataset if self.live is not None else self.spec.input.dataset

    @property
    def input_ref(self) -> str:
        """The backup read, or ``live``."""
        return self.backup.id if self.backup is not None else "live"

    @property
    def location(self) -> str:
        """Where the output is delivered (a path, or an ``s3://`` URL)."""
        if self.s3 is not None:
            return f"{self.s3.rstrip('/')}/{self.output.name}"
        return str(self.output)

    @property
    def manifest_path(self) -> Path:
        """Where the signed manifest goes."""
        return self.output.with_name(self.output.name + MANIFEST_SUFFIX)

    def params(self) -> dict[str, Any]:
        """The gated operation's parameters (what an approver approves)."""
        params: dict[str, Any] = {
            "spec": self.version.name,
            "version": self.version.version,
            "spec_sha256": self.version.sha256,
            "backup_id": self.input_ref,
            "output": self.output.name,
        }
        if self.live is not None:
            params["input"] = {"from": "live", "source": self.live.source.name}
        if self.consents is not None:  # the approval covers this list of consents
            params["consent_sha256"] = self.consents.sha256
        return params


@dataclass(slots=True)
class Tally:
    """What a pass counted."""

    records_in: int = 0
    records_out: int = 0
    fields_dropped: int = 0
    excluded: dict[str, int] = field(default_factory=dict)


def counts(tally: Tally) -> dict[str, Any]:
    """The counts of a pass, JSON-ready (events, manifests, previews)."""
    return {
        "in": tally.records_in,
        "out": tally.records_out,
        "excluded": dict(sorted(tally.excluded.items())),
        "fields_dropped": tally.fields_dropped,
    }


def _fetch(
    app: App, backup: Backup, artifacts: list[BackupArtifact], work: Path
) -> dict[str, Path]:
    """Each artifact's ciphertext copied out of the vault (size and SHA-256 checked against
    the catalog, which the signed manifest vouched for) and decrypted into ``work``."""
    with app.read() as uow:
        vault = uow.vaults.get(backup.vault)
    backend = vault_backend(vault)
    identity = unwrap_identity(keystore_for(app.settings), backup)
    plain: dict[str, Path] = {}
    for n, artifact in enumerate(artifacts):
        cipher = work / f"c{n}"
        digest = Sha256Stream()
        with backend.open(artifact.path) as src, open_private(cipher) as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.length != artifact.size or digest.hexdigest() != artifact.sha256:
            raise IntegrityError(
                f"{artifact.path} does not match its signed digest",
                hint=f"run `affidavit verify run {backup.id}`; nothing was exported",
            )
        target = work / f"p{n}"
        with cipher.open("rb") as fin, open_private(target) as fout:
            decrypt_to(fin, fout, identity)
        cipher.unlink()
        plain[artifact.path] = target
    return plain


def _records(app: App, plan: Plan, work: Path) -> Iterator[bytes]:
    """The dataset's raw BSON documents, read out of the backup."""
    assert plan.backup is not None
    assert plan.dataset is not None
    layout = restore_layout(plan.backup.format)
    assert layout is not None  # plan_export checked it
    view = dataclasses.replace(
        plan.backup, datasets=tuple(d for d in plan.backup.datasets if d.name == plan.dataset.name)
    )
    plain = _fetch(app, plan.backup, layout.artifacts(view), work)
    for _, records, _ in layout.items(view, plain):
        for raw in records:
            if not isinstance(raw, bytes | bytearray | memoryview):
                raise InputError(f"{plan.dataset.name} does not hold BSON documents")
            yield bytes(raw)


_BSON_FILES: Final = (".bson.age", ".bson.gz.age")
"""The vault names of a data artifact that is one dataset's BSON file (a mongodump's)."""


def _record_batches(app: App, plan: Plan, work: Path, size: int) -> Iterator[bytes]:
    """:func:`_records` as batches of about ``size`` bytes of whole documents, for worker
    processes: cut straight out of the decrypted file, framing checked as
    :func:`_records` checks it, when the dataset's data artifact is one BSON file (no Python
    object per document in this process), decrypted as it is read (:mod:`.streamed`: no
    ciphertext copy, no plaintext file); else :func:`_records` joined."""
    assert plan.backup is not None
    assert plan.dataset is not None
    layout = restore_layout(plan.backup.format)
    assert layout is not None  # plan_export checked it
    view = dataclasses.replace(
        plan.backup, datasets=tuple(d for d in plan.backup.datasets if d.name == plan.dataset.name)
    )
    artifacts = layout.artifacts(view)
    data = [a for a in artifacts if a.role is ArtifactRole.DATA]
    if layout.per_dataset and len(data) == 1 and data[0].path.endswith(_BSON_FILES):
        yield from streamed_batches(app, plan.backup, data[0], size)
        return
    yield from join_batches(_records(app, plan, work), size)


def join_batches(raws: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Raw documents joined into batches of about ``size`` bytes."""
    batch: list[bytes] = []
    held = 0
    for raw in raws:
        batch.append(raw)
        held += len(raw)
        if held >= size:
            yield b"".join(batch)
            batch.clear()
            held = 0
    if batch:
        yield b"".join(batch)


class RecordPass:
    """One pass over ``plan``'s records with consent judged at ``at`` (see the module
    docstring); :meth:`finish` runs the checks of the whole pass."""

    def __init__(self, app: App, plan: Plan, *, at: datetime) -> None:
        spec = plan.spec
        needs_key = any(r.transform is Transform.PSEUDONYMISE for r in spec.fields)
        key = pseudonym_key(app, plan.recipient.name) if needs_key else None
        self.app, self.plan, self.at = app, plan, at
        self.minimiser = Minimiser(spec, key=key, context=plan.recipient.name)
        self.contract = ContractCheck(spec.contract, spec.allowed)
        self.tally = Tally()
        # a live input's read, or a Redis input's (live or backup: .redis_input)
        self.live: LiveRead | None = redis_read(app, plan, fetch=_fetch)
        if self.live is None and plan.live is not None:
            self.live = LiveRead(app=app, live=plan.live, query=spec.input.filter)

    def raws(self, work: Path) -> Iterator[bytes]:
        """The input's raw BSON documents, in order (the live read, or the backup's
        artifacts fetched and decrypted into ``work``)."""
        if self.live is not None:
            return self.live.raw_records()
        return _records(self.app, self.plan, work)

    def raw_batches(self, work: Path, size: int) -> Iterator[bytes]:
        """:meth:`raws` in batches of about ``size`` bytes of whole documents."""
        if self.live is not None:
            return join_batches(self.live.raw_records(), size)
        return _record_batches(self.app, self.plan, work, size)

    def shipped(self, work: Path) -> Iterator[dict[str, Any]]:
        """The records that ship (canonical Extended JSON, minimised and transformed)."""
        plan, tally, minimiser, contract = self.plan, self.tally, self.minimiser, self.contract
        consents, at = plan.consents, self.at
        consent = plan.spec.consent
        subject_field = consent.subject_field if consent is not None else "_id"
        excluded = tally.excluded
        query = plan.spec.input.filter
        live = self.live
        for raw in self.raws(work):
            tally.records_in += 1
            document = decode_document(raw)
            if query is not None and not query.match(
                {k: canonical_value(document[k]) for k in query.fields if k in document}
            ):
                if live is not None:  # the server's filter and ours must agree
                    key = key_text({"_id": canonical_value(document.get("_id"))})
                    raise IntegrityError(
                        f"{live.live.uri} returned a record of {live.live.dataset} that the "
                        f"filter does not match ({key[:100]})",
                        hint="the server's query semantics differ from docs/exports.md "
                        "(a collation?); nothing was exported",
                    )
                excluded["filter"] = excluded.get("filter", 0) + 1
                continue
            out, dropped, refusals = minimiser.apply_decoded(document)  # notes fields seen
            tally.fields_dropped += dropped
            if consents is not None:
                refused = consents.judge_record(document, subject_field, at)
                if refused is not None:
                    excluded[refused] = excluded.get(refused, 0) + 1
                    continue
            if not contract.check(out, refusals):
                excluded["contract"] = excluded.get("contract", 0) + 1
                continue
            tally.records_out += 1
            yield out

    def finish(self) -> None:
        """The checks after the last record: the count the signed manifest gives, every
        allowed field met, the contract's whole-output rules. Raises :class:`IntegrityError`
        or :class:`InputError`."""
        plan, tally = self.plan, self.tally
        minimised = tally.records_in - tally.excluded.get("filter", 0)  # past the filter
        if self.live is not None:
            if self.live.filtered_out:
                tally.excluded["filter"] = self.live.filtered_out
        elif (
            plan.dataset is not None
            and plan.backup is not None
            and (tally.records_in != plan.dataset.records)
        ):
            raise IntegrityError(
                f"{plan.dataset.name} held {tally.records_in:,} records, its signed manifest "
                f"{plan.dataset.records:,}",
                hint=f"run `affidavit verify run {plan.backup.id}`; nothing was exported",
            )
        unseen = sorted(plan.spec.allowed - self.minimiser.seen)
        if unseen and minimised:
            raise InputError(
                f"the allow-list names field(s) that no record of {plan.dataset_name} holds: "
                f"{', '.join(unseen)}",
                hint="fix the field names in the spec and propose it again",
            )
        self.contract.finish(shipped=tally.records_out)
