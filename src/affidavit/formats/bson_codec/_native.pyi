"""Type stubs of the compiled fast path of the exact BSON fingerprint and of the document
validator (``_native.c``).

``bson_codec`` holds the module as the ``ModuleType`` that ``affidavit.native.load_native``
returns, so these stubs type direct imports (tests, tools) and state the C signatures:
arguments are positional only; a buffer argument takes any object with the buffer protocol
(``bytes``, ``memoryview``, ``mmap``, ...)."""

from typing import Literal

from typing_extensions import Buffer

#: frame() statuses: a document for the Python path / the end of the buffer
STOP: int
MORE: int
#: the largest document length taken (the readers' MAX_BSON_DOCUMENT_SIZE)
MAX_DOCUMENT: int
#: validate()'s own nesting limit (MongoDB's)
VALIDATE_MAX_DEPTH: int
#: ranges() statuses
RANGES_OK: int
RANGES_MALFORMED: int
RANGES_TRUNCATED: int

def frame(
    buf: Buffer,
    pos: int,
    tag: Buffer,
    want_keys: bool,
    starts: list[int] | None = None,
    /,
) -> tuple[int, bytes, list[bytes] | None, int]:
    """``(stop, pairs, keys, status)`` for the whole documents of ``buf`` from ``pos`` on;
    ``keys`` is None unless ``want_keys``. Never raises for the content of ``buf``."""

def validate(buf: Buffer, pos: int, max_depth: int = 100, /) -> int:
    """The offset of the first document from ``pos`` on that the module does not accept
    (``len(buf)`` when it accepts them all). Never raises for the content of ``buf``."""

def ranges(
    buf: Buffer, target: int, min_doc: int, max_doc: int, /
) -> tuple[list[tuple[int, int]], int, int]:
    """``(ranges, status, bad)``: ``(offset, length)`` ranges of whole documents of about
    ``target`` bytes, a ``RANGES_*`` status and the offset of the defect."""

def resync(buf: Buffer, at: int, chain: int, min_doc: int, max_doc: int, /) -> int:
    """The first offset ``>= at`` where ``chain`` documents in a row look whole (a document
    cut off by the end of ``buf`` does not refute it), or -1: a guess to confirm."""

def hash_backend(hashlib_only: bool = ..., /) -> Literal["openssl", "hashlib"]:
    """Which SHA-256 the module uses; ``hashlib_only`` switches it (tests compare both)."""
