"""Segment tables of age files: where each segment of an artifact lies in its plaintext and in
its ciphertext, and the SHA-256 of both sides (normative: docs/formats/manifest.md,
"Segment tables").

An age payload is a STREAM of 64 KiB chunks (:mod:`affidavit.crypto.age_reader`), so a
plaintext range that starts and ends on chunk boundaries is sealed in one contiguous
ciphertext range whose place follows from the header's size alone. A segment table cuts an
artifact into segments of ``segment_size`` plaintext bytes (a multiple of 64 KiB; the last
segment may be shorter): segment ``k`` holds chunks ``k * c .. k * c + n_k - 1`` (``c =
segment_size / 64 KiB``), its plaintext is ``[k * segment_size, ...)`` and its ciphertext is
those chunks sealed; segment 0's ciphertext also starts at byte 0, with the header and the
payload nonce, so the ciphertext ranges tile the whole file. A file with an empty plaintext
has one segment (its one, empty, final chunk).

:class:`SegmentHasher` builds the table while an artifact is written (plaintext and
ciphertext handed over in pieces of any size, each side in order); :func:`geometry` is
where the segments of a file must lie, and :func:`tiling_issues` what is wrong with a table
against it. Nothing here knows records: the offset of the first record of each segment is
the caller's (a format's framing).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from affidavit.crypto.age_reader import CHUNK_SIZE, MAX_HEADER, SEALED_CHUNK_SIZE

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "TAG_SIZE",
    "OrderedDigest",
    "SegmentHasher",
    "SegmentPlace",
    "SegmentSides",
    "geometry",
    "joined_sides",
    "tiling_issues",
]

DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024
"""Plaintext bytes per segment of new backups (1,024 STREAM chunks)."""
TAG_SIZE: Final = SEALED_CHUNK_SIZE - CHUNK_SIZE
"""Bytes a chunk grows by when it is sealed (its Poly1305 tag)."""
_NONCE: Final = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentPlace:
    """Where one segment lies: ciphertext ``[offset, offset + size)`` and plaintext
    ``[plain_offset, plain_offset + plain_size)``, made of STREAM chunks ``first_chunk ..
    first_chunk + chunks - 1``."""

    offset: int
    size: int
    plain_offset: int
    plain_size: int
    first_chunk: int
    chunks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentSides:
    """A segment's place and the SHA-256 (hex) of its ciphertext and plaintext ranges."""

    place: SegmentPlace
    sha256: str
    plain_sha256: str


def check_segment_size(segment_size: int) -> int:
    """``segment_size`` when it is a positive multiple of 64 KiB; else ``ValueError``."""
    if segment_size <= 0 or segment_size % CHUNK_SIZE:
        raise ValueError(f"a segment size is a positive multiple of {CHUNK_SIZE}")
    return segment_size


def geometry(*, payload_offset: int, plain_size: int, segment_size: int) -> list[SegmentPlace]:
    """The segments of an age file whose first chunk starts at ``payload_offset`` (header and
    nonce before it) and whose plaintext has ``plain_size`` bytes."""
    check_segment_size(segment_size)
    per = segment_size // CHUNK_SIZE
    chunks = max(1, -(-plain_size // CHUNK_SIZE))
    places = []
    for first in range(0, chunks, per):
        count = min(per, chunks - first)
        plain_offset = first * CHUNK_SIZE
        size = min(count * CHUNK_SIZE, plain_size - plain_offset)
        start = 0 if first == 0 else payload_offset + first * SEALED_CHUNK_SIZE
        end = payload_offset + first * SEALED_CHUNK_SIZE + size + count * TAG_SIZE
        places.append(
            SegmentPlace(
                offset=start,
                size=end - start,
                plain_offset=plain_offset,
                plain_size=size,
                first_chunk=first,
                chunks=count,
            )
        )
    return places


def tiling_issues(
    rows: list[tuple[int, int, int, int]],
    *,
    size: int,
    plain_size: int,
    segment_size: int,
    payload_offset: int | None = None,
) -> list[str]:
    """What is wrong with a table's ``(offset, size, plain_offset, plain_size)`` rows, in
    order, for an artifact of ``size`` ciphertext and ``plain_size`` plaintext bytes cut
    every ``segment_size`` bytes: each a sentence (empty: the table tiles both sides with no
    gap and no overlap, each segment on chunk boundaries with its ciphertext exactly its
    chunks sealed). ``payload_offset`` (the header and nonce's size read from the file)
    also pins segment 0's ciphertext; without it the header's size is inferred from
    segment 0 and must be positive."""
    try:
        check_segment_size(segment_size)
    except ValueError as exc:
        return [str(exc)]
    if not rows:
        return ["the table has no segment"]
    inferred = rows[0][1] - rows[0][3] - TAG_SIZE * max(1, -(-rows[0][3] // CHUNK_SIZE))
    header = payload_offset if payload_offset is not None else inferred
    if header <= _NONCE or header > MAX_HEADER + _NONCE:
        return [f"segment 0 leaves {inferred} bytes for the age header and nonce"]
    expected = geometry(payload_offset=header, plain_size=plain_size, segment_size=segment_size)
    issues = []
    cipher_at = plain_at = 0
    for n, (offset, length, plain_offset, plain_length) in enumerate(rows):
        if offset != cipher_at:
            word = "gap" if offset > cipher_at else "overlap"
            issues.append(
                f"segment {n} starts at ciphertext offset {offset}, not {cipher_at} ({word})"
            )
        if plain_offset != plain_at:
            word = "gap" if plain_offset > plain_at else "overlap"
            issues.append(
                f"segment {n} starts at plaintext offset {plain_offset}, not {plain_at} ({word})"
            )
        if n < len(expected):
            want = expected[n]
            got = (offset, length, plain_offset, plain_length)
            if got != (want.offset, want.size, want.plain_offset, want.plain_size):
                issues.append(
                    f"segment {n} is ciphertext {offset}+{length}, plaintext "
                    f"{plain_offset}+{plain_length}; its chunks lie at ciphertext "
                    f"{want.offset}+{want.size}, plaintext {want.plain_offset}+{want.plain_size}"
                )
        cipher_at, plain_at = offset + length, plain_offset + plain_length
    if len(rows) != len(expected):
        issues.append(f"the table has {len(rows)} segments, the artifact {len(expected)}")
    if cipher_at != size:
        issues.append(f"the segments end at ciphertext offset {cipher_at}, the file at {size}")
    if plain_at != plain_size:
        issues.append(
            f"the segments end at plaintext offset {plain_at}, the plaintext at {plain_size}"
        )
    return issues


class _Side:
    """SHA-256 of consecutive ranges of one stream, cut at given boundaries."""

    def __init__(self) -> None:
        self.digests: list[tuple[int, str]] = []  # (range size, hex digest)
        self._hash = hashlib.sha256()
        self._filled = 0
        self.position = 0

    def feed(self, data: memoryview, boundary: int) -> int:
        """Hash ``data`` up to absolute ``boundary``; how many bytes were taken."""
        take = min(len(data), boundary - self.position)
        if take > 0:
            self._hash.update(data[:take])
            self._filled += take
            self.position += take
        return max(take, 0)

    def cut(self) -> None:
        self.digests.append((self._filled, self._hash.hexdigest()))
        self._hash = hashlib.sha256()
        self._filled = 0


class SegmentHasher:
    """The segment table of one age file, built while it is written: :meth:`plain` gets the
    plaintext in order, :meth:`cipher` the ciphertext in order (the two may interleave in any
    way, from different threads one each); :meth:`finish` checks both agree with the STREAM
    layout and returns the segments. Costs one more SHA-256 pass over each side."""

    def __init__(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        self.segment_size = check_segment_size(segment_size)
        self._plain = _Side()
        self._cipher = _Side()
        self._head = bytearray()  # ciphertext until the header's end is known
        self.payload_offset: int | None = None  # header and nonce, once seen

    def plain(self, data: bytes | bytearray | memoryview) -> None:
        """The next plaintext bytes."""
        view = memoryview(data).cast("B")
        side = self._plain
        while view:
            boundary = (side.position // self.segment_size + 1) * self.segment_size
            taken = side.feed(view, boundary)
            view = view[taken:]
            if side.position == boundary:
                side.cut()

    def cipher(self, data: bytes | bytearray | memoryview) -> None:
        """The next ciphertext bytes."""
        view = memoryview(data).cast("B")
        if self.payload_offset is None:
            self._head += view
            found = self._find_header()
            if found is None:
                return
            self.payload_offset = found
            view = memoryview(bytes(self._head))
            self._head = bytearray()
        side = self._cipher
        per = self.segment_size // CHUNK_SIZE * SEALED_CHUNK_SIZE
        while view:
            boundary = (
                self.payload_offset
                + ((max(side.position - self.payload_offset, 0) // per) + 1) * per
            )
            taken = side.feed(view, boundary)
            view = view[taken:]
            if side.position == boundary:
                side.cut()

    def _find_header(self) -> int | None:
        """The payload's offset once the header's MAC line is complete."""
        mark = self._head.find(b"\n---")
        end = self._head.find(b"\n", mark + 1) if mark >= 0 else -1
        if end >= 0:
            return end + 1 + _NONCE
        if len(self._head) > MAX_HEADER:
            raise ValueError("the ciphertext does not start with an age header")
        return None

    def finish(self) -> list[SegmentSides]:
        """The segments, once both sides are complete. Raises ``ValueError`` when the
        ciphertext is not an age file of this plaintext (sizes that disagree)."""
        payload_offset, cipher = self.cipher_part()
        plain_size, plain = self.plain_part()
        return joined_sides(
            payload_offset=payload_offset,
            plain_size=plain_size,
            segment_size=self.segment_size,
            cipher=cipher,
            plain=plain,
        )

    def cipher_part(self) -> tuple[int, list[tuple[int, str]]]:
        """Once the ciphertext is complete (fed alone, when another process hashes the
        plaintext): the payload's offset and each segment's ``(size, SHA-256)``."""
        if self.payload_offset is None:
            raise ValueError("the ciphertext ended inside its age header")
        if self._cipher._filled:
            self._cipher.cut()
        return self.payload_offset, self._cipher.digests

    def plain_part(self) -> tuple[int, list[tuple[int, str]]]:
        """Once the plaintext is complete: its size and each segment's ``(size, SHA-256)``."""
        plain = self._plain
        if plain._filled or not plain.digests:  # the last, partial (or the empty) segment
            plain.cut()
        return plain.position, plain.digests


def joined_sides(
    *,
    payload_offset: int,
    plain_size: int,
    segment_size: int,
    cipher: list[tuple[int, str]],
    plain: list[tuple[int, str]],
) -> list[SegmentSides]:
    """The segments of an age file from both sides' per-segment ``(size, SHA-256)``
    (:meth:`SegmentHasher.cipher_part`, :meth:`SegmentHasher.plain_part`, hashed in one
    process or two). Raises ``ValueError`` when the sizes are not this age layout's."""
    places = geometry(
        payload_offset=payload_offset, plain_size=plain_size, segment_size=segment_size
    )
    sizes = [p.size for p in places], [p.plain_size for p in places]
    if sizes != ([n for n, _ in cipher], [n for n, _ in plain]):
        raise ValueError("the ciphertext's segments do not match the plaintext's")
    return [
        SegmentSides(place=place, sha256=c, plain_sha256=p)
        for place, (_, c), (_, p) in zip(places, cipher, plain, strict=True)
    ]


class OrderedDigest:
    """The SHA-256 of a whole file assembled from its segments' ciphertext in file order,
    whatever order the segments are read in: the thread that read segment ``k`` hands the
    very bytes it read (and decrypted) to :meth:`feed`, which hashes them once segments
    ``0 .. k - 1`` have been hashed. So the whole-file digest costs no second read and covers
    exactly the bytes that were opened. A segment that could not be read whole
    (:meth:`feed` with None), or a :meth:`close` before the last segment, leaves no digest.

    Thread-safe; segment ``k`` must be fed by a task started after those of ``0 .. k - 1``
    (a FIFO pool), or the feeder of ``k`` waits for ever: :meth:`close` releases it."""

    def __init__(self, segments: int) -> None:
        self._segments = segments
        self._hash = hashlib.sha256()
        self._length = 0
        self._turn = 0  # the next segment to hash
        self._broken = False
        self._closed = False
        self._cond = threading.Condition()
        # segments handed over ahead of their turn (:meth:`deposit`): their bytes and what
        # gives their memory back once they are hashed
        self._pending: dict[int, tuple[memoryview | bytes | None, Callable[[], None]]] = {}

    def deposit(self, k: int, data: memoryview | bytes | None, release: Callable[[], None]) -> None:
        """Hand segment ``k``'s ciphertext over **without waiting** for its turn: hashed at
        once when it is ``k``'s turn (and then every segment deposited after it whose turn
        comes, by this thread), else kept until then and hashed by the thread that feeds
        the segment before it. ``release()`` is called once ``data`` is hashed (or the digest
        closed): ``data``'s memory must stay untouched until then. The memory held is that
        of the segments deposited ahead of their turn: the caller bounds how many run."""
        with self._cond:
            if self._closed:
                late = True
            elif self._turn != k:
                self._pending[k] = (data, release)
                return
            else:
                late = False
        if late:
            release()
            return
        while True:
            if data is None:
                self._broken = True
            elif not self._broken:
                self._hash.update(data)
                self._length += len(data)
            release()
            with self._cond:
                self._turn = k + 1
                nxt = self._pending.pop(self._turn, None) if not self._closed else None
                if nxt is None:
                    self._cond.notify_all()
                    return
            k = k + 1
            data, release = nxt

    def feed(self, k: int, data: memoryview | bytes | None, *, wait: bool = True) -> bool:
        """Hash segment ``k``'s ciphertext ``data`` (None: it could not be read whole) once
        it is ``k``'s turn. ``wait=False``: only if it is ``k``'s turn now. True when ``k``
        was taken (hashed, or the digest is already lost)."""
        with self._cond:
            if not wait and self._turn != k and not self._closed:
                return False
            while self._turn != k and not self._closed:
                self._cond.wait()
            if self._closed:
                return True
        # alone here until the turn moves on: the hash runs without the lock (and the GIL)
        if data is None:
            self._broken = True
        elif not self._broken:
            self._hash.update(data)
            self._length += len(data)
        with self._cond:
            self._turn = k + 1
            nxt = self._pending.pop(self._turn, None) if not self._closed else None
            self._cond.notify_all()
        if nxt is not None:  # deposited while this one was hashed: its turn has come
            self.deposit(k + 1, *nxt)
        return True

    def close(self) -> None:
        """Stop: wake every waiting feeder, release every deposited segment; no digest
        unless every segment was fed."""
        with self._cond:
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
            self._cond.notify_all()
        for _, release in pending:
            release()

    def result(self, size: int) -> str | None:
        """The hex digest when every segment was fed whole and ``size`` bytes in all."""
        with self._cond:
            done = self._turn == self._segments and not self._broken
        if not done or self._length != size:
            return None
        return self._hash.hexdigest()
