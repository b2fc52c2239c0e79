"""The record-reader interface: one class per backup file format.

A reader streams the records of one or more datasets out of a file or folder with bounded
memory. Malformed input (truncated data, lying length prefixes, bad magic, gzip garbage) raises
:class:`~affidavit.errors.FormatError` naming the file and byte offset; it never hangs and never
yields a record it could not fully read.
"""

from __future__ import annotations

import stat
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Final, Self, cast

from affidavit.errors import FormatError, InputError, NotFound, OperationError
from affidavit.input_files import describe_mode
from affidavit.models.records import RecordEncoding, RedisRecord

if TYPE_CHECKING:
    from affidavit.crypto.record_digest import RecordHasher


class RecordReader(ABC):
    """Reads one backup artifact (a file, or a folder in a known layout).

    Every reader yields each dataset's raw records (:meth:`records`) and every dataset's
    records in one pass (:meth:`iter_all`); it decodes nothing beyond the framing of its
    format. Record encodings are the codecs' business (``formats.codecs``). What lets a
    reader be read faster is declared, typed, and asked by the one fingerprint pass
    (``services.fingerprint.fingerprint_datasets``):

    - :attr:`one_pass`: the datasets share one stream (an RDB, an archive), so they are read
      together, never one by one;
    - :attr:`fused_pairs`: :meth:`iter_pairs` parses, encodes and hashes in one fused pass
      (compiled where built);
    - :meth:`record_batches`: framed batches of BSON documents, one buffer per batch;
    - :meth:`dataset_file`: an uncompressed file holding exactly one dataset's documents,
      which worker processes read in ranges themselves.
    """

    #: the ``--format`` name, e.g. ``bson``, ``mongodump``, ``mongodump-archive``, ``extjson``
    name: ClassVar[str]
    #: how :meth:`records` encodes each record
    encoding: ClassVar[RecordEncoding]
    #: the datasets share one stream: :meth:`iter_all` reads them all in one pass, while
    #: reading one dataset alone costs a pass over the whole input
    one_pass: ClassVar[bool] = False
    #: :meth:`iter_pairs` is available
    fused_pairs: ClassVar[bool] = False

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def as_of(cls, path: Path, *, captured_at_ms: int) -> Self:
        """A reader of ``path`` that reads it as the backup captured at ``captured_at_ms``
        (ms since the epoch) held it: a format with record expiries keeps what had not
        expired by then. The default ignores the moment (a format without expiries)."""
        return cls(path)

    @classmethod
    @abstractmethod
    def sniff(cls, path: Path) -> bool:
        """True when ``path`` looks like this format (cheap: name and first bytes only)."""

    @abstractmethod
    def datasets(self) -> list[str]:
        """The dataset names in the artifact (``db.collection`` where the format knows it,
        else the file's stem), sorted. Raises ``FormatError``."""

    @abstractmethod
    def records(self, dataset: str) -> Iterator[bytes | RedisRecord]:
        """The raw records of ``dataset`` in file order (for BSON: each document's bytes;
        for Extended JSON: each line's bytes). Raises ``NotFound`` for an unknown dataset and
        ``FormatError`` at the first malformed byte."""

    def iter_all(self) -> Iterator[tuple[str, bytes | RedisRecord]]:
        """``(dataset, record)`` for every record of every dataset, in file order, in one
        pass where the format allows (:attr:`one_pass`); this default reads the datasets one
        after another."""
        for name in self.datasets():
            for record in self.records(name):
                yield name, record

    def iter_pairs(
        self, hasher: RecordHasher, encode: Callable[[RedisRecord], tuple[bytes, bytes]]
    ) -> Iterator[tuple[str, bytes, list[bytes] | None]]:
        """The fused pass (:attr:`fused_pairs`): ``(dataset, pairs, keys)`` batches of
        ``key_hash || record_hash`` pairs of every dataset, records encoded by ``encode``
        and hashed by ``hasher``. The default has none."""
        raise OperationError(f"the {self.name} reader has no fused pass")

    def record_batches(self, dataset: str) -> Iterator[tuple[bytes, list[int]]] | None:
        """:meth:`records` of a BSON format as framed batches ``(buffer, start offsets)``,
        framing checked only; None when the reader has no such form (the default)."""
        return None

    def dataset_file(self, dataset: str) -> Path | None:
        """The uncompressed file that holds exactly ``dataset``'s BSON documents, one after
        another, or None (the default: no such file)."""
        return None

    def check_framing_only(self) -> None:
        """From now on check records for framing only, because the caller's codec checks
        every record in full (the fingerprint pass does, in worker processes where there are
        several): the same check is then not done twice. The default has nothing to
        relax."""
        return

    def find_defect(self, dataset: str | None) -> None:
        """Read ``dataset`` (None: every dataset) once more, checking every record in full
        even after :meth:`check_framing_only`, to raise the ``FormatError`` that names the
        file and byte offset of the first defect (a faster pass found one and worded it
        tersely); returns when it finds none. The default reads :meth:`records` (a reader
        whose check never relaxes)."""
        for _ in self.records(dataset) if dataset is not None else self.iter_all():
            pass

    def size_hint(self, dataset: str) -> int | None:
        """Bytes to be read for ``dataset`` (for progress bars), or None when unknown."""
        return None


# --- shared framing of length-prefixed BSON streams (mongodump files and archives) ----------

#: MongoDB's maximum BSON document size (16 MiB) plus the 16 KiB of headroom that the server
#: allows for internal documents (oplog entries, command replies) written to dumps
MAX_BSON_DOCUMENT_SIZE: Final = 16 * 1024 * 1024 + 16 * 1024
#: the smallest BSON document: an int32 length and the terminating NUL
MIN_BSON_DOCUMENT_SIZE: Final = 5
#: the mongodump archive's block terminator (int32 -1)
TERMINATOR: Final = b"\xff\xff\xff\xff"

_INT32 = struct.Struct("<i")
_CHUNK = 1 << 20
_STREAM_ERRORS = (OSError, EOFError, zlib.error)


class BsonFramer:
    """Cuts length-prefixed BSON documents out of a binary stream with bounded memory.

    Each document is checked for framing only: ``5 <= length <= MAX_BSON_DOCUMENT_SIZE``,
    fully present, last byte NUL. A length prefix is validated *before* anything is read, so a
    lying prefix (2 GiB, negative) never allocates. Errors raise ``FormatError`` naming
    ``source`` and the byte offset (uncompressed, for gzip streams) of the offending frame.
    Exceptions of a gzip stream (bad magic, CRC, truncation) are wrapped the same way.
    """

    def __init__(self, stream: BinaryIO, *, source: str, chunk_size: int = _CHUNK) -> None:
        self._stream = stream
        self._source = source
        self._chunk = chunk_size
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]

    @property
    def offset(self) -> int:
        """Offset of the next unread byte in the (uncompressed) stream."""
        return self._base + self._pos

    def error(self, what: str, offset: int | None = None) -> FormatError:
        """A ``FormatError`` naming the source and ``offset`` (default: the current one)."""
        at = self.offset if offset is None else offset
        return FormatError(f"{self._source}: {what} at byte offset {at}")

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available from ``_pos``; False if the stream ends."""
        have = len(self._buf) - self._pos
        while have < need:
            try:
                more = self._stream.read(max(self._chunk, need - have))
            except _STREAM_ERRORS as exc:
                raise self.error(f"unreadable or corrupt compressed stream ({exc})") from exc
            if not more:
                return False
            self._base += self._pos
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
            have = len(self._buf)
        return True

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, or ``FormatError`` (truncated ``what``)."""
        start = self.offset
        if not self._fill(n):
            raise self.error(f"truncated {what}: file ends before its {n} bytes", start)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def at_eof(self) -> bool:
        """True when no byte is left."""
        return not self._fill(1)

    def next_document(self, *, allow_terminator: bool = False) -> bytes | None:
        """The next whole document; None at a clean end of stream (before any byte of a
        frame). With ``allow_terminator``, returns ``TERMINATOR`` for an int32 -1."""
        start = self.offset
        if not self._fill(4):
            if len(self._buf) - self._pos == 0:
                return None
            raise self.error("truncated document: file ends inside a length prefix", start)
        buf, pos = self._buf, self._pos
        (length,) = _INT32.unpack_from(buf, pos)
        if length == -1 and allow_terminator:
            self._pos = pos + 4
            return TERMINATOR
        if length < MIN_BSON_DOCUMENT_SIZE or length > MAX_BSON_DOCUMENT_SIZE:
            raise self.error(
                f"implausible BSON document length {length} (allowed "
                f"{MIN_BSON_DOCUMENT_SIZE}..{MAX_BSON_DOCUMENT_SIZE})",
                start,
            )
        if not self._fill(length):
            raise self.error(
                f"truncated document: length prefix says {length} bytes, file has only "
                f"{len(self._buf) - self._pos}",
                start,
            )
        buf, pos = self._buf, self._pos
        end = pos + length
        if buf[end - 1] != 0:
            raise self.error("malformed document: last byte is not NUL", start)
        self._pos = end
        return buf[pos:end]

    def next_batch(self, target: int = 4 << 20) -> tuple[bytes, list[int]] | None:
        """As many whole documents as fit in about ``target`` bytes (at least one), as one
        buffer and the start offset of each document in it; None at a clean end of stream.

        The framing checks are those of :meth:`next_document` (which reports any defect with
        its exact message); this path only avoids one Python object per document, so that
        fingerprinting can hand whole batches to worker processes."""
        if not self._fill(4):
            if len(self._buf) - self._pos == 0:
                return None
            raise self.error("truncated document: file ends inside a length prefix")
        self._fill(target)
        buf, start, end = self._buf, self._pos, len(self._buf)
        pos = start
        starts: list[int] = []
        unpack = _INT32.unpack_from
        while pos + 4 <= end and pos - start < target:
            (length,) = unpack(buf, pos)
            if (
                length < MIN_BSON_DOCUMENT_SIZE
                or length > MAX_BSON_DOCUMENT_SIZE
                or pos + length > end
                or buf[pos + length - 1] != 0
            ):
                break
            starts.append(pos - start)
            pos += length
        if not starts:  # a defect or a document larger than the buffer: the precise path
            doc = self.next_document()
            return None if doc is None else (doc, [0])
        self._pos = pos
        return buf[start:pos], starts


GZIP_MAGIC: Final = b"\x1f\x8b"


def check_input_path(path: Path) -> None:
    """Refuse an input that is neither a regular file nor a folder (a FIFO, a socket, a
    device), following symbolic links, without opening it: a reader (or a format sniffer)
    would block for ever on a pipe nobody writes to. Raises ``NotFound`` when nothing is
    there and ``InputError`` otherwise. Every command that reads a backup file or folder
    named by the user checks it here first."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise NotFound(f"{path} does not exist") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    raise InputError(
        f"{path} is {describe_mode(mode)}, not a regular file or a folder",
        hint="affidavit reads backups from regular files and folders; copy the data into a "
        "file first",
    )


def open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for streaming reads, transparently gunzipping when it starts with the gzip
    magic (whatever its name). Raises ``FormatError`` when it cannot be opened."""
    import gzip

    try:
        raw = path.open("rb")
    except OSError as exc:
        raise FormatError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if magic == GZIP_MAGIC:
        raw.close()
        return cast(BinaryIO, gzip.open(path, "rb"))
    return raw


def gzipped(path: Path) -> bool:
    """True when the file starts with the gzip magic."""
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC
