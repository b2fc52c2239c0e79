"""Export specs, versioned like policies: one person proposes a version
(``export.spec_added``), another approves it (``export.spec_approved``) before its first
run. A run takes the approved version's text and digest as the ledger recorded them: a
catalog row edited later counts for nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import AccessDenied, AlreadyExists
from affidavit.models.export import MAX_SPEC_BYTES, ExportSpec, SpecVersion, parse_spec
from affidavit.models.governance import same_person
from affidavit.services.context import App
from affidavit.services.exports.consent import check_consent_engine
from affidavit.services.exports.files import read_text
from affidavit.services.exports.records import check_schema
from affidavit.services.exports.sources import check_input_engine
from affidavit.services.policy_vouch import read_events

ADDED_ACTION = "export.spec_added"
APPROVED_ACTION = "export.spec_approved"


def read_spec_file(path: Path) -> str:
    """The text of a spec file (a regular UTF-8 file of at most 256 KiB)."""
    return read_text(path, "the export spec", limit=MAX_SPEC_BYTES)


def validate_spec_text(text: str, *, name: str) -> ExportSpec:
    """Parse and check a spec (its contract's JSON Schema too); records nothing."""
    spec = parse_spec(text, name=name)
    check_schema(spec.contract)
    return spec


def add_spec(app: App, path: Path) -> SpecVersion:
    """Record a new version of the spec in the file ``path`` as proposed."""
    text = read_spec_file(path)
    spec = validate_spec_text(text, name=path.name)
    digest = sha256_hex(text.encode("utf-8"))
    with app.change() as change:
        exports = change.uow.exports
        source = change.uow.sources.get(spec.input.source)  # NotFound: not registered
        check_input_engine(spec.input, source.engine, source=source.name)
        if spec.consent is not None and spec.consent.source is not None:
            consent_source = change.uow.sources.get(spec.consent.source)
            check_consent_engine(spec.consent, consent_source.engine)
        for existing in exports.specs():
            if existing.name == spec.name and existing.sha256 == digest:
                raise AlreadyExists(
                    f"this text is already version {existing.version} of export spec {spec.name}",
                    hint=f"another person approves it with `affidavit export spec approve "
                    f"{spec.name} {existing.version}`",
                )
        version = exports.next_spec_version(spec.name)
        at = datetime.now(UTC)
        event = change.record(
            ADDED_ACTION,
            f"export-spec:{spec.name}",
            {
                "name": spec.name,
                "version": version,
                "sha256": digest,
                "recipient": spec.recipient,
                "purpose": spec.purpose,
                "legal_basis": spec.legal_basis.value,
                "input": spec.input.to_json(),
                "fields": [r.to_json() for r in spec.fields],
                "contract": dict(spec.contract.source),  # kind and digest (json-schema, odcs)
            },
        )
        proposed = SpecVersion(
            name=spec.name,
            version=version,
            sha256=digest,
            text=text,
            proposed_by=change.actor,
            proposed_at=at,
            proposal_seq=event.seq,
        )
        exports.add_spec(proposed)
    return proposed


def approve_spec(app: App, name: str, version: int) -> SpecVersion:
    """Approve a proposed version; the approver must not be its proposer
    (:class:`AccessDenied`)."""
    with app.change() as change:
        exports = change.uow.exports
        proposed = exports.spec(name, version)
        if proposed.approved:
            raise AlreadyExists(
                f"version {version} of export spec {name} was already approved by "
                f"{proposed.approved_by}"
            )
        if same_person(proposed.proposed_by, change.actor):
            raise AccessDenied(
                f"{change.actor} proposed version {version} of export spec {name} and cannot "
                "also approve it",
                hint="separation of duties: another person approves (AFFIDAVIT_ACTOR or "
                "--actor names who is acting)",
            )
        validate_spec_text(proposed.text, name=f"export spec {name} v{version}")
        at = datetime.now(UTC)
        event = change.record(
            APPROVED_ACTION,
            f"export-spec:{name}",
            {
                "name": name,
                "version": version,
                "sha256": proposed.sha256,
                "proposed_by": proposed.proposed_by,
            },
        )
        exports.approve_spec(name, version, by=change.actor, at=at, seq=event.seq)
        return exports.spec(name, version)


def list_specs(app: App) -> list[SpecVersion]:
    """Every spec version, by name and version."""
    with app.read() as uow:
        return uow.exports.specs()


def vouched_approval(uow: UnitOfWork, spec: SpecVersion) -> dict[str, object] | None:
    """What the ledger says about the approval of ``spec``: the ``export.spec_approved``
    event for its name, version and digest by someone other than its proposer (from the
    ``export.spec_added`` event), as ``{"approved_by", "seq"}``; None when there is none."""
    proposers = {
        (e.details.get("version"), e.details.get("sha256")): e.actor
        for e in read_events(uow.ledger, ADDED_ACTION)
        if e.subject == f"export-spec:{spec.name}"
    }
    proposer = proposers.get((spec.version, spec.sha256))
    if proposer is None:
        return None
    for event in read_events(uow.ledger, APPROVED_ACTION):
        d = event.details
        if (
            event.subject == f"export-spec:{spec.name}"
            and d.get("version") == spec.version
            and d.get("sha256") == spec.sha256
            and not same_person(event.actor, proposer)
        ):
            return {"approved_by": event.actor, "proposed_by": proposer, "seq": event.seq}
    return None


def spec_version(app: App, name: str, version: int | None = None) -> SpecVersion:
    """Version ``version`` of spec ``name`` (None: the newest approved); raises
    :class:`~affidavit.errors.NotFound`."""
    with app.read() as uow:
        return uow.exports.spec(name, version)
