"""An artifact's segment table as a typed value (normative: docs/formats/manifest.md,
"Segment tables").

A :class:`SegmentTable` says, for each segment of an age-encrypted artifact, where it lies in
the ciphertext and in the plaintext, the SHA-256 of both, and (for a format whose records a
verifier can frame from any record start: ``framing``) the plaintext offset of the first
record that starts in it. The constructors check each member; whether the rows tile the
artifact is :meth:`SegmentTable.tiling_issues`, which a verifier reports as findings (a table
is judged against the file it describes, not refused while a manifest is read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from affidavit.crypto.segments import SegmentSides, tiling_issues
from affidavit.models.json_fields import (
    Fields,
    PredicateError,
    check_choice,
    check_integer,
    check_sha256,
    describe,
)

__all__ = ["FRAMINGS", "Framing", "Segment", "SegmentTable"]

Framing = Literal["bson"]
FRAMINGS: tuple[Framing, ...] = ("bson",)
"""Record framings a table's ``first_record`` offsets may be in: ``bson`` (documents back to
back, each starting with its int32 little-endian length: a mongodump ``.bson``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One segment: ciphertext ``offset``/``size``/``sha256``, plaintext ``plain_offset``/
    ``plain_size``/``plain_sha256`` and the plaintext offset of the first record that
    starts in it (None: no record starts in it, or the table records no framing)."""

    offset: int
    size: int
    sha256: str
    plain_offset: int
    plain_size: int
    plain_sha256: str
    first_record: int | None

    def __post_init__(self) -> None:
        for name in ("offset", "size", "plain_offset", "plain_size"):
            check_integer(getattr(self, name), name)
        check_sha256(self.sha256, "sha256")
        check_sha256(self.plain_sha256, "plain_sha256")
        if self.first_record is not None:
            check_integer(self.first_record, "first_record")
            end = self.plain_offset + self.plain_size
            if not self.plain_offset <= self.first_record < end:
                raise PredicateError(
                    f"first_record {self.first_record} is not within the segment's plaintext "
                    f"[{self.plain_offset}, {end})"
                )

    _MEMBERS = (
        "offset",
        "size",
        "sha256",
        "plain_offset",
        "plain_size",
        "plain_sha256",
        "first_record",
    )

    @classmethod
    def from_predicate(cls, obj: object, where: str) -> Segment:
        """Read one row of ``table``; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        values: dict[str, Any] = {name: f.raw(name) for name in cls._MEMBERS}
        try:
            segment = cls(**values)
        except PredicateError as exc:
            raise PredicateError(f"{where}.{exc.message}") from None
        f.done()
        return segment

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {name: getattr(self, name) for name in self._MEMBERS}


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentTable:
    """The segments of one artifact, cut every ``segment_size`` plaintext bytes, in order;
    ``framing`` names the record framing of their ``first_record`` offsets (None: none)."""

    segment_size: int
    framing: Framing | None
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        check_integer(self.segment_size, "segment_size", minimum=1)
        if self.framing is not None:
            check_choice(self.framing, "framing", FRAMINGS)
        if not isinstance(self.segments, tuple | list) or not self.segments:
            raise PredicateError(f"table must be a non-empty list, not {describe(self.segments)}")
        for n, segment in enumerate(self.segments):
            if not isinstance(segment, Segment):
                raise PredicateError(f"table[{n}] must be a Segment, not {describe(segment)}")
            if self.framing is None and segment.first_record is not None:
                raise PredicateError(f"table[{n}].first_record must be null without a framing")
        object.__setattr__(self, "segments", tuple(self.segments))

    @classmethod
    def of(
        cls, sides: list[SegmentSides], *, segment_size: int, first_records: list[int | None] | None
    ) -> SegmentTable:
        """The table of segments hashed while an artifact was written
        (:class:`~affidavit.crypto.segments.SegmentHasher`), with the first record offset of
        each (None: the artifact's records are not framed)."""
        starts = first_records if first_records is not None else [None] * len(sides)
        return cls(
            segment_size=segment_size,
            framing="bson" if first_records is not None else None,
            segments=tuple(
                Segment(
                    offset=s.place.offset,
                    size=s.place.size,
                    sha256=s.sha256,
                    plain_offset=s.place.plain_offset,
                    plain_size=s.place.plain_size,
                    plain_sha256=s.plain_sha256,
                    first_record=start,
                )
                for s, start in zip(sides, starts, strict=True)
            ),
        )

    @classmethod
    def from_predicate(cls, obj: object, where: str) -> SegmentTable:
        """Read an artifact's ``segments`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        framing = f.raw("framing")
        rows = tuple(Segment.from_predicate(item, path) for item, path in f.items("table"))
        try:
            table = cls(segment_size=f.raw("segment_size"), framing=framing, segments=rows)  # type: ignore[arg-type]
        except PredicateError as exc:
            raise PredicateError(f"{where}.{exc.message}") from None
        f.done()
        return table

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "segment_size": self.segment_size,
            "framing": self.framing,
            "table": [s.to_predicate() for s in self.segments],
        }

    def tiling_issues(
        self, *, size: int, plain_size: int, payload_offset: int | None = None
    ) -> list[str]:
        """What keeps the segments from tiling an artifact of ``size`` ciphertext and
        ``plain_size`` plaintext bytes exactly, chunk by chunk (see
        :func:`~affidavit.crypto.segments.tiling_issues`); empty when they do."""
        return tiling_issues(
            [(s.offset, s.size, s.plain_offset, s.plain_size) for s in self.segments],
            size=size,
            plain_size=plain_size,
            segment_size=self.segment_size,
            payload_offset=payload_offset,
        )
