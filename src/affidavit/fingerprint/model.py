"""The fingerprint value and its constants (normative: docs/formats/fingerprint.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from affidavit.errors import FormatError
from affidavit.models.records import PROFILES, Profile

FINGERPRINT_VERSION = 1
DEFAULT_BUCKET_BITS = 12
MAX_BUCKET_BITS = 20
PAIR_SIZE = 64  # key_hash (32) || record_hash (32)
_TEXT = re.compile(r"^afp1:(exact|logical):b(\d{1,2}):n(\d+):([0-9a-f]{64})$")


def record_tag(profile: Profile) -> bytes:
    """The domain tag that starts every record hash of ``profile``."""
    return b"affidavit/record/v1/" + profile.encode() + b"\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """A dataset's content digest: profile, bucket bits, record count and Merkle root.

    Two fingerprints are comparable when profile and bucket bits agree; then equal text means
    equal content (up to SHA-256 collisions).
    """

    profile: Profile
    bucket_bits: int
    count: int
    root: bytes

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise FormatError(f"unknown fingerprint profile {self.profile!r}")
        if not 0 <= self.bucket_bits <= MAX_BUCKET_BITS:
            raise FormatError(f"bucket bits {self.bucket_bits} outside 0..{MAX_BUCKET_BITS}")
        if self.count < 0 or len(self.root) != 32:
            raise FormatError("a fingerprint needs a count >= 0 and a 32-byte root")

    @property
    def text(self) -> str:
        """``afp1:PROFILE:bBITS:nCOUNT:ROOTHEX``: what people compare and tools store."""
        return f"afp1:{self.profile}:b{self.bucket_bits}:n{self.count}:{self.root.hex()}"

    @classmethod
    def from_text(cls, text: str) -> Fingerprint:
        """Parse :attr:`text`; raise :class:`FormatError`."""
        match = _TEXT.match(text.strip())
        if not match:
            raise FormatError(
                f"not a fingerprint: {text[:80]!r}", hint="expected afp1:PROFILE:bBITS:nCOUNT:ROOT"
            )
        profile, bits, count, root = match.groups()
        return cls(
            profile=profile,  # type: ignore[arg-type]  # the regex admits only the profiles
            bucket_bits=int(bits),
            count=int(count),
            root=bytes.fromhex(root),
        )

    def __str__(self) -> str:
        return self.text
