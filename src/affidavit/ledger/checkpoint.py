"""C2SP tlog-checkpoint v1.0.0: a signed statement of a log's size and Merkle root.

Checkpoint text (the body of a C2SP signed note)::

    <origin>\\n        non-empty; ideally a schema-less URL such as example.com/log42
    <tree size>\\n     ASCII decimal, no leading zeros ("0" for the empty tree)
    <base64 root>\\n   standard padded base64 of the 32-byte RFC 9162 root
    [<extension>\\n]   optional, opaque, non-empty lines

The spec only recommends (SHOULD) that the origin have no spaces and no ``+``; real logs use
origins such as ``go.sum database tree``, so only empty origins and control characters are
rejected.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from affidavit.crypto.note import NoteSigner, NoteVerifier, open_note, sign_note
from affidavit.errors import FormatError, IntegrityError
from affidavit.ledger.merkle import HASH_SIZE

__all__ = ["MAX_TREE_SIZE", "Checkpoint", "open_checkpoint", "sign_checkpoint"]

MAX_TREE_SIZE = 2**64 - 1
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_line(value: str, what: str) -> None:
    if not value:
        raise FormatError(f"checkpoint {what} is empty")
    if _CONTROL.search(value):
        raise FormatError(f"checkpoint {what} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"checkpoint {what} is not valid UTF-8") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A log's origin, tree size, root hash and opaque extension lines (keyword-only)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise FormatError("checkpoint tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise FormatError(f"checkpoint tree size {self.size} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise FormatError(f"checkpoint root must be {HASH_SIZE} bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for extension in self.extensions:
            _check_line(extension, "extension line")

    def to_text(self) -> str:
        """Return the checkpoint text (each line ends with a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        lines.extend(self.extensions)
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint text; raises :class:`FormatError` when it is malformed."""
        if not text.endswith("\n"):
            raise FormatError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("checkpoint text needs origin, tree size and root lines")
        origin, size_text, root_text, *extensions = lines
        if len(size_text) > 20 or not _SIZE.fullmatch(size_text):
            raise FormatError(
                f"checkpoint tree size {size_text[:40]!r} is not decimal without leading zeros"
            )
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FormatError("checkpoint root is not valid base64") from exc
        if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_text:
            raise FormatError(f"checkpoint root must be the base64 of {HASH_SIZE} bytes")
        return cls(origin=origin, size=int(size_text), root=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """Return ``checkpoint`` as a signed note signed by ``signer``."""
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(
    note: str, verifier: NoteVerifier, expected_origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint with ``verifier`` and return it.

    Raises :class:`IntegrityError` when ``verifier`` did not sign the note, its signature
    fails, or the origin differs from ``expected_origin``; :class:`FormatError` when the note
    or the checkpoint text is malformed.
    """
    text, _signatures = open_note(note, [verifier])
    checkpoint = Checkpoint.from_text(text)
    if expected_origin is not None and checkpoint.origin != expected_origin:
        raise IntegrityError(
            f"checkpoint is for log {checkpoint.origin!r}, expected {expected_origin!r}",
            hint="a checkpoint of another log was presented",
        )
    return checkpoint
