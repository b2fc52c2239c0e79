"""Segment tables written with each artifact (docs/formats/manifest.md, "Segment tables").

:class:`TableBuilder` is fed an artifact's plaintext and ciphertext as they are written
(:mod:`affidavit.services.artifacts`) and gives its signed :class:`SegmentTable`: both sides
hashed per segment (:class:`~affidavit.crypto.segments.SegmentHasher`) and, for a mongodump
``.bson`` data artifact, the plaintext offset of the first document that starts in each
segment (:class:`BsonStarts`, a walk over the documents' length prefixes), which is where a
verifier starts framing that segment's documents.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from affidavit.crypto.digest import Sha256Stream
from affidavit.crypto.segments import DEFAULT_SEGMENT_SIZE, SegmentHasher, joined_sides
from affidavit.errors import InputError
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.input_files import open_regular
from affidavit.models.backup import ArtifactRole
from affidavit.models.segments import Framing, SegmentTable

if TYPE_CHECKING:
    from affidavit.crypto.age_process import FileEncryption

__all__ = ["BsonStarts", "PlainSide", "TableBuilder", "framing_for", "table_of_staged"]

SEGMENT_SIZE: int = DEFAULT_SEGMENT_SIZE
"""Plaintext bytes per segment of the artifacts written now (tests make it small)."""
_READ: Final = 4 << 20


def framing_for(path: str, role: ArtifactRole) -> Framing | None:
    """The record framing a table of the artifact at ``path`` records: ``bson`` for an
    uncompressed mongodump ``.bson`` data file (``NAME.bson`` or ``NAME.bson.age``), else
    None (its records are not framed per segment)."""
    name = path.removesuffix(".age")
    return "bson" if role is ArtifactRole.DATA and name.endswith(".bson") else None


class BsonStarts:
    """Where documents start in a stream of BSON documents, fed in pieces of any size: the
    offset of the first document that starts in each ``segment_size`` range. Lengths are
    checked for plausibility only (5 bytes to 16 MiB + 16 KiB); on an implausible one the
    walk stops and :attr:`broken` is set (the writer checked every document first, so this
    does not happen for what affidavit stores)."""

    def __init__(self, segment_size: int) -> None:
        self.segment_size = segment_size
        self.firsts: dict[int, int] = {}  # segment -> first document start in it
        self.broken = False
        self._next = 0  # absolute offset of the next document start
        self._pos = 0  # bytes fed so far
        self._carry = b""  # the start of a length prefix cut by the end of a piece

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """The next bytes of the stream."""
        piece = memoryview(data).cast("B")
        base = self._pos
        self._pos += len(piece)
        if self.broken or self._next >= self._pos:
            return
        if self._carry:
            base -= len(self._carry)
            piece = memoryview(self._carry + bytes(piece))
            self._carry = b""
        native = bson_codec._NATIVE
        while self._next < self._pos and not self.broken:
            rel = self._next - base
            segment = self._next // self.segment_size
            self.firsts.setdefault(segment, self._next)
            if len(piece) - rel < 4:
                self._carry = bytes(piece[rel:])
                return
            if native is not None:
                if self._skip_native(native, piece, rel, base):
                    continue
                return
            length = int.from_bytes(piece[rel : rel + 4], "little", signed=True)
            if not MIN_BSON_DOCUMENT_SIZE <= length <= MAX_BSON_DOCUMENT_SIZE:
                self.broken = True
                return
            self._next += length

    def _skip_native(self, native: object, piece: memoryview, rel: int, base: int) -> bool:
        """Jump over whole documents to the first one that starts in a later segment, with
        the compiled walk; True when the walk goes on in this piece."""
        boundary = (self._next // self.segment_size + 1) * self.segment_size
        found, status, bad = native.ranges(  # type: ignore[attr-defined]
            piece[rel:], boundary - self._next, MIN_BSON_DOCUMENT_SIZE, MAX_BSON_DOCUMENT_SIZE
        )
        if found and found[0][1] >= boundary - self._next:
            self._next += found[0][1]  # the first document start at or past the boundary
            return True
        if status == native.RANGES_OK:  # type: ignore[attr-defined]
            self._next = base + len(piece)
            return False
        at = rel + bad  # the document the walk stopped at: cut by the piece's end, or bad
        self._next = base + at
        left = len(piece) - at
        if left < 4:
            self._carry = bytes(piece[at:])
            return False
        length = int.from_bytes(piece[at : at + 4], "little", signed=True)
        if status == native.RANGES_MALFORMED:  # type: ignore[attr-defined]
            self.broken = True
            return False
        self.firsts.setdefault(self._next // self.segment_size, self._next)
        self._next += length  # past this piece: the next pieces are skipped up to it
        return False

    def first_records(self, segments: int) -> list[int | None] | None:
        """The first document start of each of ``segments`` segments (None where none
        starts), or None when the walk broke or did not end on a document boundary."""
        if self.broken or self._carry or self._next != self._pos:
            return None
        return [self.firsts.get(k) for k in range(segments)]


class TableBuilder:
    """The segment table of one artifact being written: :meth:`plain` and :meth:`cipher`
    take each side in order (one thread each at most), :meth:`table` gives the table.

    Each side is also hashed whole, from the very bytes its segments are hashed from, and
    :meth:`table` gives a table only when those whole-file digests are the artifact's (the
    ones the manifest signs, computed where the bytes were encrypted and stored): a signed
    table is then *proven at write* to agree with the whole-file digests, which is what a
    deep verification would otherwise prove again (docs/verification.md, "Tables proven
    when written"). The cost is one more SHA-256 pass over each side, on the writing
    threads."""

    def __init__(self, path: str, role: ArtifactRole, segment_size: int | None = None) -> None:
        self.segment_size = segment_size or SEGMENT_SIZE
        self.hasher = SegmentHasher(self.segment_size)
        framing = framing_for(path, role)
        self.starts = BsonStarts(self.segment_size) if framing == "bson" else None
        self.plain_whole = Sha256Stream()
        self.cipher_whole = Sha256Stream()

    def plain(self, data: bytes | bytearray | memoryview) -> None:
        """The next plaintext bytes."""
        self.hasher.plain(data)
        self.plain_whole.update(data)
        if self.starts is not None:
            self.starts.feed(data)

    def cipher(self, data: bytes | bytearray | memoryview) -> None:
        """The next ciphertext bytes."""
        self.hasher.cipher(data)
        self.cipher_whole.update(data)

    def table(self, *, cipher_sha256: str, plain_sha256: str) -> SegmentTable | None:
        """The table, or None when the ciphertext is not an age file of this plaintext, or
        when either side's whole-file digest differs from the artifact's (``cipher_sha256``,
        ``plain_sha256``: a file that changed between two reads, bytes lost on the way):
        then the artifact is recorded without one, and verified by its whole-file hashes. A
        ``.bson`` whose documents cannot be walked gets a table without framing."""
        try:
            sides = self.hasher.finish()
        except ValueError:
            return None
        if (self.cipher_whole.hexdigest(), self.plain_whole.hexdigest()) != (
            cipher_sha256,
            plain_sha256,
        ):
            return None
        firsts = self.starts.first_records(len(sides)) if self.starts is not None else None
        return SegmentTable.of(sides, segment_size=self.segment_size, first_records=firsts)


class PlainSide:
    """The plaintext side of a staged file's table (:func:`table_of_staged`), hashed on a
    thread of its own while a child encrypts the same file and hashes the ciphertext side:
    each segment's SHA-256, the whole file's (which must be the child's: the same bytes),
    and for a ``.bson`` file where documents start. :meth:`stop` ends the read early."""

    def __init__(self, file: Path, segment_size: int) -> None:
        self.file = file
        self.segment_size = segment_size
        self.hasher = SegmentHasher(segment_size)
        self.whole = Sha256Stream()
        self.starts = BsonStarts(segment_size) if file.name.endswith(".bson") else None
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="affidavit-plain-side", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # never blocking on a FIFO swapped in for the file (its open would wait for a
            # writer, and :meth:`stop` for ever): anything but a regular file fails the side;
            # a link is followed, as the encrypting child follows it
            with open_regular(self.file, follow=True) as fh:
                while not self._stop.is_set() and (chunk := fh.read(_READ)):
                    self.hasher.plain(chunk)
                    self.whole.update(chunk)
                    if self.starts is not None:
                        self.starts.feed(chunk)
        except (OSError, InputError):
            self.failed = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self) -> PlainSide | None:
        """Once read to the end: this side, or None when the read failed or was stopped."""
        self._thread.join()
        return None if self.failed or self._stop.is_set() else self


def table_of_staged(
    path: str, role: ArtifactRole, done: FileEncryption, plain: PlainSide | None
) -> SegmentTable | None:
    """The table of an artifact encrypted ahead by a child
    (:func:`~affidavit.crypto.age_process.encrypt_file`): the ciphertext side as the child
    hashed it per segment, from the very bytes it hashed whole, and the plaintext side read
    meanwhile (:class:`PlainSide`), given only when its whole digest is the one the child
    computed of what it encrypted (the same bytes: a file changed in between gets no
    table). So the table agrees with the signed whole-file digests by construction."""
    side = plain.wait() if plain is not None else None
    if side is None or done.cipher_segments is None or done.payload_offset is None:
        return None
    if (side.whole.length, side.whole.hexdigest()) != (done.plain_size, done.plain_sha256):
        return None
    plain_size, plain_digests = side.hasher.plain_part()
    try:
        sides = joined_sides(
            payload_offset=done.payload_offset,
            plain_size=plain_size,
            segment_size=side.segment_size,
            cipher=list(done.cipher_segments),
            plain=plain_digests,
        )
    except ValueError:
        return None
    firsts = None
    if framing_for(path, role) == "bson" and side.starts is not None:
        firsts = side.starts.first_records(len(sides))
    return SegmentTable.of(sides, segment_size=side.segment_size, first_records=firsts)
