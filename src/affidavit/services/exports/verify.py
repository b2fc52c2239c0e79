"""``export verify`` at the destination: the recipient checks a delivered export with the
file, its signed manifest, the ledger's verifier key and its own age identity. No catalog,
no home, no network.

Every check runs and every discrepancy is collected (a signature that does not verify stops
the rest: nothing signed can be read):

1. the manifest is a DSSE envelope signed by the given key, holding an in-toto statement of
   the export predicate type (``signature``);
2. the statement's subject is the output the predicate describes (``subject``);
3. the identity is the recipient's: its public key is the predicate's ``recipient.public_key``
   (``recipient``);
4. the file's SHA-256 and size are the signed ones (``output-digest``);
5. it decrypts with the identity (``decrypt``: re-encrypted to someone else, altered or
   truncated);
6. every line is valid UTF-8 and the canonical encoding of one JSON object; a CSV header or
   the Parquet columns are the allow-list (a nested path a column of its own), and the
   records written again give the same bytes (``encoding``; a column outside the allow-list
   is named under ``allow-list`` too);
7. every record (its nested documents rebuilt from the columns of a CSV or Parquet file)
   holds only allow-listed fields and meets the signed contract, as the run compiled it
   from a JSON Schema or an ODCS document: JSON Schema, uniqueness, null limits (counts or
   percentages), row counts (``allow-list``, ``schema``, ``unique``, ...);
8. the plaintext SHA-256, the record count and the logical fingerprint of the records are
   the signed ones (``plaintext-digest``, ``record-count``, ``fingerprint``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from affidavit.crypto.age import decrypt_chunks
from affidavit.crypto.digest import Sha256Stream
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.note import NoteVerifier
from affidavit.crypto.pseudonyms import identity_recipient
from affidavit.errors import FormatError, InputError, IntegrityError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.formats.codecs import codec_for
from affidavit.input_files import open_regular
from affidavit.ledger.attestation import EXPORT_PREDICATE_TYPE, Statement, verify_attestation
from affidavit.models.export import Contract, FieldRule, OutputFormat
from affidavit.models.records import RecordEncoding
from affidavit.private_temp import open_private, private_folder
from affidavit.services.exports.encodings import Encoder, StrayColumns, read_records
from affidavit.services.exports.files import read_text
from affidavit.services.exports.records import MAX_LISTED_VIOLATIONS, ContractCheck, encode_line

_CHUNK: Final = 256 * 1024
_MAX_MANIFEST: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One thing that does not hold: which check, and what is wrong."""

    check: str
    message: str

    def to_json(self) -> dict[str, str]:
        """JSON-ready."""
        return {"check": self.check, "message": self.message}


@dataclass(slots=True)
class ExportVerification:
    """What ``export verify`` found."""

    file: Path
    statement: Statement | None = None
    records: int = 0
    fingerprint: str | None = None
    discrepancies: list[Discrepancy] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Signed, and no discrepancy (an unsigned manifest never passes)."""
        return self.statement is not None and not self.discrepancies

    def add(self, check: str, message: str) -> None:
        """Collect a discrepancy."""
        self.discrepancies.append(Discrepancy(check, message))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        predicate = dict(self.statement.predicate) if self.statement is not None else {}
        return {
            "ok": self.ok,
            "file": str(self.file),
            "export_id": predicate.get("export_id"),
            "spec": predicate.get("spec"),
            "purpose": predicate.get("purpose"),
            "recipient": predicate.get("recipient"),
            "records": self.records,
            "fingerprint": self.fingerprint,
            "checks": self.checks,
            "discrepancies": [d.to_json() for d in self.discrepancies],
        }


def _keys(vkey: str) -> dict[str, Any]:
    if "+" not in vkey and Path(vkey).is_file():  # a file holding the key
        vkey = read_text(Path(vkey), "the verifier key file", limit=4096)
    try:
        verifier = NoteVerifier.from_vkey(vkey.strip())
    except FormatError as exc:
        raise InputError(
            f"the verifier key is not valid: {exc.message}",
            hint="pass the key `affidavit ledger key` printed at the source",
        ) from None
    return {f"{verifier.key_id:08x}": verifier.key}


def _signed(result: ExportVerification, manifest: Path, vkey: str) -> Mapping[str, Any] | None:
    keys = _keys(vkey)
    text = read_text(manifest, "the export manifest", limit=_MAX_MANIFEST)
    result.checks.append("signature")
    try:
        envelope = Envelope.from_json(text)
        statement = verify_attestation(envelope, keys, predicate_type=EXPORT_PREDICATE_TYPE)
    except (FormatError, IntegrityError) as exc:
        result.add("signature", f"the manifest does not verify with this key: {exc.message}")
        return None
    result.statement = statement
    return statement.predicate


def _section(predicate: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = predicate.get(name)
    if not isinstance(value, Mapping):
        raise FormatError(f"the export predicate has no {name} object")
    return value


def verify_export(
    file: Path, *, manifest: Path, vkey: str, identity_file: Path
) -> ExportVerification:
    """Verify a delivered export (see the module docstring). Raises :class:`InputError` for
    a file, key or identity it cannot read; everything else is a collected discrepancy."""
    result = ExportVerification(file=file)
    identity_text = read_text(identity_file, "the identity file", limit=64 * 1024)
    own_key = identity_recipient(identity_text)
    identity = next(
        ln.strip() for ln in identity_text.splitlines() if ln.strip() and not ln.startswith("#")
    )
    predicate = _signed(result, manifest, vkey)
    if predicate is None or result.statement is None:
        return result
    try:
        output = _section(predicate, "output")
        recipient = _section(predicate, "recipient")
        contract = Contract.from_json(_section(predicate, "contract").get("rules", {}))
        signed_counts = _signed_counts(_section(predicate, "contract"), contract)
        rules = predicate.get("fields")
        if not isinstance(rules, list):
            raise FormatError("the export predicate has no fields list")
        fields = [FieldRule.from_json(r).name for r in rules]
    except (FormatError, InputError, KeyError, ValueError, TypeError) as exc:
        result.add("predicate", f"the signed predicate is malformed: {exc}")
        return result
    result.checks.append("subject")
    subjects = result.statement.subjects
    if len(subjects) != 1 or subjects[0].sha256 != output.get("sha256"):
        result.add("subject", "the statement's subject is not the output its predicate names")
    result.checks.append("recipient")
    if recipient.get("public_key") != own_key:
        result.add(
            "recipient",
            f"this identity's key {own_key[:16]}... is not the recipient's "
            f"{str(recipient.get('public_key'))[:16]}...",
        )
    _check_content(
        result,
        file,
        identity=identity,
        output=output,
        contract=contract,
        fields=fields,
        signed_counts=signed_counts,
    )
    return result


def _signed_counts(section: Mapping[str, Any], contract: Contract) -> list[Any]:
    """The counts the manifest signed for the contract's counted rules (ODCS duplicate and
    invalid limits), one per rule; raises FormatError when they are not there."""
    if not contract.counted:
        return []
    result = section.get("result")
    counted = result.get("counted") if isinstance(result, Mapping) else None
    if not isinstance(counted, list) or len(counted) != len(contract.counted):
        raise FormatError("the contract result does not give a count per counted rule")
    return [c.get("count") if isinstance(c, Mapping) else None for c in counted]


def _cipher_chunks(file: Path, digest: Sha256Stream) -> Iterator[bytes]:
    try:
        fh = open_regular(file, what="the export file")
    except FileNotFoundError:
        raise InputError(f"the export file {file} does not exist") from None
    with fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            yield chunk


def _check_content(
    result: ExportVerification,
    file: Path,
    *,
    identity: str,
    output: Mapping[str, Any],
    contract: Contract,
    fields: list[str],
    signed_counts: Sequence[Any] = (),
) -> None:
    cipher, plain = Sha256Stream(), Sha256Stream()
    result.checks += ["output-digest", "decrypt"]
    with private_folder("export-verify") as work:
        spooled = work / "plain"
        try:
            with open_private(spooled) as out:
                for piece in decrypt_chunks(_cipher_chunks(file, cipher), identity):
                    plain.update(piece)
                    out.write(piece)
        except IntegrityError as exc:
            result.add(
                "decrypt",
                f"the file does not decrypt with this identity ({exc.message}): re-encrypted "
                "to another recipient, altered or truncated",
            )
        if cipher.hexdigest() != output.get("sha256") or cipher.length != output.get("size"):
            result.add(
                "output-digest",
                f"the file's SHA-256 {cipher.hexdigest()[:16]}... ({cipher.length:,} bytes) is "
                f"not the signed {str(output.get('sha256'))[:16]}... ({output.get('size')} "
                "bytes)",
            )
        if any(d.check == "decrypt" for d in result.discrepancies):
            return
        try:
            fmt = OutputFormat(str(output.get("format")))
        except ValueError:
            result.add("encoding", f"unknown output format {output.get('format')!r}")
            return
        _check_records(
            result, spooled, fmt, output, contract, fields, plain.hexdigest(), signed_counts
        )


def _check_records(  # noqa: PLR0917 - the record pass of _check_content
    result: ExportVerification,
    path: Path,
    fmt: OutputFormat,
    output: Mapping[str, Any],
    contract: Contract,
    fields: list[str],
    plaintext_sha256: str,
    signed_counts: Sequence[Any],
) -> None:
    check = ContractCheck(contract, frozenset(fields))
    logical = codec_for(RecordEncoding.EXTJSON, "logical")
    accumulator = Accumulator("logical", keep_keys=False)
    encoder = Encoder(fmt, fields)
    again = Sha256Stream(encoder.header())
    problems = count = 0
    result.checks += ["encoding", "contract"]
    for number, record in read_records(path, fmt, fields):
        if isinstance(record, FormatError):
            problems += 1
            if problems <= MAX_LISTED_VIOLATIONS:
                result.add("encoding", record.message)
            if isinstance(record, StrayColumns) and record.stray:
                result.add("allow-list", f"column(s) outside the allow-list: {record.stray[:20]}")
            continue
        count += 1
        again.update(encoder.encode(record))
        try:
            accumulator.add(*logical(encode_line(record)))
        except FormatError as exc:
            problems += 1
            if problems <= MAX_LISTED_VIOLATIONS:
                result.add("encoding", f"record {number}: {exc.message}")
            continue
        check.check(record)
    if not problems:
        try:
            again.update(encoder.finish())
        except Exception as exc:
            problems += 1
            result.add("encoding", f"the records cannot be written again: {exc}")
    if not problems and again.hexdigest() != plaintext_sha256:
        result.add("encoding", f"the file is not the canonical {fmt.value} encoding of its records")
    fingerprint, _ = accumulator.finish()
    result.records, result.fingerprint = count, fingerprint.text
    check.finish(shipped=count)
    for violation in check.violations:
        where = f"record {violation.key}: " if violation.key is not None else ""
        result.add(violation.rule, where + violation.message)
    if check.violation_count > len(check.violations):
        result.add("contract", f"{check.violation_count - len(check.violations)} more violation(s)")
    for counted, signed in zip(check.counted, signed_counts, strict=False):  # same rules, order
        if counted["count"] != signed:
            result.add(
                counted["metric"],
                f"{counted['rule']}: {counted['count']} in the records, the manifest signed "
                f"{signed}",
            )
    result.checks += ["plaintext-digest", "record-count", "fingerprint"]
    if plaintext_sha256 != output.get("plaintext_sha256"):
        result.add("plaintext-digest", "the decrypted records are not the signed ones (SHA-256)")
    if count != output.get("records"):
        result.add(
            "record-count", f"{count:,} record(s), the manifest signed {output.get('records')}"
        )
    if fingerprint.text != output.get("fingerprint"):
        result.add(
            "fingerprint",
            f"the records' logical fingerprint {fingerprint.text} is not the signed "
            f"{output.get('fingerprint')}",
        )
