"""The content of a backup re-fingerprinted from its decrypted artifacts and compared with the
signed fingerprints.

A format with one file per dataset (mongodump ``.bson``) is fingerprinted as it decrypts
(:meth:`ContentCheck.content`); one whose datasets share a file (an RDB, an archive) is
spooled and read in one pass (:meth:`ContentCheck.shared_file`). The stored fingerprint
indexes are decrypted too (:meth:`ContentCheck.stored_index`): a mismatch, here or against
the live source (:mod:`.against_source`), names its keys by diffing the stored index with the
computed one (:func:`diff_files`, :func:`key_json`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import FormatError, InputError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.diff import Change, DiffResult, KeyDifference, diff_indexes
from affidavit.fingerprint.index import IndexReader
from affidavit.formats.base import BsonFramer
from affidavit.formats.keys import describe_key
from affidavit.models.backup import ArtifactRole
from affidavit.models.checks import CheckCode
from affidavit.models.records import RecordEncoding
from affidavit.services.backends import reader_class
from affidavit.services.fingerprint import (
    fingerprint_bson_stream,
    fingerprint_datasets,
    fingerprint_records,
)
from affidavit.services.verify.reading import ArtifactReader, PlainReader
from affidavit.services.verify.segments import SegmentUse
from affidavit.services.verify.state import Expected, Run

KEYS_SHOWN = 100
"""Keys named in one finding."""
_IRREGULAR: tuple[str, Path | None] = ("", None)  # a fast content pass that met a defect

Computed = tuple[str, Path | None]
"""A computed fingerprint's text and its index (None: the pass wrote none)."""


def one_pass(fmt: str) -> bool | None:
    """Whether a backup of ``fmt`` keeps all its datasets in one artifact (read in one pass)
    or one file per dataset; None for a format this version cannot read (its artifacts are
    then checked, not their content)."""
    try:
        return reader_class(fmt).one_pass
    except InputError:
        return None


def diff_files(left: Path, right: Path, limit: int | None = 200) -> tuple[DiffResult, str]:
    """The differences between two fingerprint index files (at most ``limit`` named), and
    the record encoding of the keys they name."""
    stored = IndexReader(left)
    return diff_indexes(stored, IndexReader(right), limit=limit), stored.header.encoding


def key_json(diff: KeyDifference, encoding: str) -> dict[str, Any]:
    """One differing key as a finding names it."""
    return {
        "change": diff.change.value,
        "key": describe_key(encoding, "exact", diff.key, truncated=diff.key_truncated),
        "key_hash": diff.key_hash.hex(),
    }


def diff_details(diff: DiffResult, encoding: str) -> dict[str, Any]:
    """The counts and the first keys of a diff, as a finding's details."""
    return {
        "counts": {c.value: n for c, n in diff.counts.items() if n},
        "keys": [
            key_json(d, encoding)
            for d in diff.differences[:KEYS_SHOWN]
            if d.change is not Change.DUPLICATE
        ],
    }


@dataclass(slots=True)
class ContentCheck:
    """The content of one verification's backup, as its artifacts are read."""

    run: Run
    reader: ArtifactReader
    indexes: dict[str, Path] = field(default_factory=dict)  # stored index, decrypted
    computed: dict[str, Computed] = field(default_factory=dict)  # dataset -> fp, index

    # -- reading the artifacts ---------------------------------------------------------------

    def stored_index(self, art: Expected) -> None:
        """Read a dataset's stored fingerprint index; keep it when it is intact."""
        name = f"stored-{len(self.indexes)}"
        spooled = self.reader.check_artifact(
            art, self.reader.spool(name), SegmentUse(spool=self.run.tmp / name)
        )
        if spooled is not None and art.dataset and self._index_usable(art, spooled):
            self.indexes[art.dataset] = spooled

    def dataset_file(self, art: Expected) -> bool:
        """Read the data artifact of one dataset and fingerprint it (:meth:`content`);
        whether its dataset was checked."""
        got = self.content(art)
        if got is not None and art.dataset:
            self.computed[art.dataset] = got
            return True
        return False

    def shared_file(self, art: Expected, fmt: str) -> bool:
        """Read a data artifact that holds every dataset into a private spool and
        fingerprint it in one pass (:meth:`fingerprint_file`); whether it was."""
        spooled = self.reader.check_artifact(
            art, self.reader.spool("data"), SegmentUse(spool=self.run.tmp / "data")
        )
        if spooled is None:
            return False
        done = False
        try:
            self.fingerprint_file(spooled, fmt)
            done = True
        except FormatError as exc:
            self.reader.content_unreadable(art, exc)
        spooled.unlink(missing_ok=True)
        return done

    def _index_usable(self, art: Expected, path: Path) -> bool:
        bad = [f for f in self.run.findings if f.subject == art.path]
        try:
            IndexReader(path).verify_trailer()
        except (FormatError, InputError) as exc:
            self.run.find(
                CheckCode.INDEX_UNUSABLE, f"the stored index is unusable: {exc.message}", art.path
            )
            return False
        return not bad

    # -- fingerprinting ----------------------------------------------------------------------

    def bson_fingerprint(self, art: Expected, *, full: bool) -> Callable[[PlainReader], Computed]:
        """A consumer that frames the mongodump ``.bson`` plaintext and fingerprints it.

        ``full``: every document is decoded in full and the index of the computed fingerprint
        is written (it names the keys of a mismatch). Otherwise the pass checks the framing
        only and keeps no keys: enough when the plaintext's SHA-256 matches the signed one
        (see :meth:`content`).

        The hashing stays in this process: the decryption process takes the other core, and
        a worker pool sharing the batches measured no faster on two cores while it costs
        more CPU time in copies (docs/performance.md). No worker process may be forked while
        a decryption process runs anyway (it would inherit the child's pipes)."""
        dataset = art.dataset or art.path

        def consume(plain: PlainReader) -> Computed:
            stream: BinaryIO = cast(BinaryIO, plain)
            if not full and not art.path.endswith(".gz.age"):
                try:
                    return fingerprint_bson_stream(stream, dataset=dataset).text, None
                except FormatError:
                    return _IRREGULAR  # the full pass finds the defect and words it
            if art.path.endswith(".gz.age"):
                stream = cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
            framer = BsonFramer(stream, source=art.path)
            index = None
            if full:
                name = f"computed-{len(self.computed)}-{sha256_hex(dataset.encode())[:8]}"
                index = self.run.tmp / name
            result = fingerprint_records(
                [],
                framed=iter(framer.next_batch, None),
                encoding=RecordEncoding.BSON,
                profile="exact",
                workers=1,
                index=index,
                dataset=dataset,
                check_bson=full,
            )
            return result.fingerprint.text, index

        return consume

    def content(self, art: Expected) -> Computed | None:
        """Check one mongodump data artifact and re-fingerprint its content.

        The first pass checks the framing of every document and computes the exact
        fingerprint without decoding each document in full. When the plaintext's SHA-256
        matched the signed manifest, the plaintext is byte for byte what the backup wrote
        after checking every document in full, so a full decode would only re-prove what the
        hash proved (docs/verification.md). Otherwise, or when the fingerprint differs from
        the signed one, a second pass decodes every document in full and writes the computed
        index: its findings (``content-unreadable``, the keys of a ``fingerprint-mismatch``)
        are those of a full check."""
        got = self.reader.check_artifact(
            art, self.bson_fingerprint(art, full=False), SegmentUse(frame=True)
        )
        if got is None:
            return None
        text, _ = got
        expected = self.run.signed.fingerprints.get(art.dataset or "")
        if art.path in self.reader.plain_proven and text == expected:
            return cast(Computed, got)
        before = len(self.run.findings)
        again = self.reader.reread(art, self.bson_fingerprint(art, full=True))
        if again is None and got is not _IRREGULAR:
            later = self.run.findings[before:]
            unreadable = any(f.code == CheckCode.CONTENT_UNREADABLE for f in later)
            if not unreadable:  # the second pass could not run: the first pass's result stands
                return cast(Computed, got)
        return cast("Computed | None", again)

    def fingerprint_file(self, spool: Path, fmt: str) -> None:
        """Fingerprint every dataset of a spooled RDB or mongodump archive in one pass
        (:func:`~affidavit.services.fingerprint.fingerprint_datasets`), read as of the
        backup's capture: every manifest dataset (empty when the file lacks it) and any the
        file holds that the manifest does not name."""
        reader = reader_class(fmt).as_of(spool, captured_at_ms=self._as_of_ms())
        accs = fingerprint_datasets(reader, None, profile="exact")
        for name in self.run.signed.fingerprints:
            accs.setdefault(name, Accumulator("exact"))
        for n, (name, acc) in enumerate(accs.items()):
            index = self.run.tmp / f"computed-file-{n}"
            try:
                fp, _ = acc.finish(index, dataset=name, encoding=reader.encoding.value)
            finally:
                acc.close()
            self.computed[name] = (fp.text, index)

    def _as_of_ms(self) -> int:
        """The backup's capture time: keys that expired after it are still expected."""
        backup = self.run.backup
        consistency = backup.consistency or {}
        captured = consistency.get("captured_at_ms")
        if isinstance(captured, int):
            return captured
        return int(backup.started_at.timestamp() * 1000)

    # -- comparing ---------------------------------------------------------------------------

    def compare_fingerprints(self) -> None:
        """Every computed fingerprint against the signed one; a mismatch names its keys
        from the stored index when that is usable."""
        run = self.run
        signed = run.signed
        if one_pass(run.backup.format) is False:
            # every signed dataset must have a data artifact: one without must not pass
            # silently (whether or not this run samples or can decrypt)
            tagged = {
                e.dataset
                for e in signed.artifacts
                if e.role == ArtifactRole.DATA.value and e.dataset
            }
            for name in sorted(set(signed.fingerprints) - tagged):
                run.find(
                    CheckCode.FINGERPRINT_MISMATCH,
                    "no data artifact holds this signed dataset: its content cannot be checked",
                    name,
                    expected=signed.fingerprints[name],
                    actual=None,
                )
        for name, (text, index) in sorted(self.computed.items()):
            expected = signed.fingerprints.get(name)
            if expected is None:
                run.find(
                    CheckCode.FINGERPRINT_MISMATCH,
                    "a data artifact holds a dataset the signed manifest does not name",
                    name,
                    expected=None,
                    actual=text,
                )
                continue
            if text == expected:
                continue
            details: dict[str, Any] = {"expected": expected, "actual": text}
            stored = self.indexes.get(name)
            message = "the re-fingerprinted content differs from the manifest"
            if stored is not None and index is not None:
                diff, encoding = diff_files(stored, index)
                details.update(diff_details(diff, encoding))
                keys = details["keys"]
                if keys:
                    shown = ", ".join(k["key"] for k in keys[:5])
                    message += f" (keys: {shown}{', ...' if len(keys) > 5 else ''})"
            else:
                details["keys"] = []
                details["note"] = "the stored index is unusable: keys cannot be named"
            run.find(CheckCode.FINGERPRINT_MISMATCH, message, name, **details)
