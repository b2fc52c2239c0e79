"""Type stubs of the compiled fast path (``_native.c``)."""

from mmap import mmap

STOP: int
MORE: int
MAX_DOCUMENT: int
VALIDATE_MAX_DEPTH: int
RANGES_OK: int
RANGES_MALFORMED: int
RANGES_TRUNCATED: int

def frame(
    buf: bytes,
    pos: int,
    tag: bytes,
    want_keys: bool,
    starts: list[int] | None = ...,
    /,
) -> tuple[int, bytes, list[bytes] | None, int]: ...
def validate(buf: bytes | memoryview, pos: int, max_depth: int = ..., /) -> int: ...
def ranges(
    buf: bytes | memoryview | mmap, target: int, min_doc: int, max_doc: int, /
) -> tuple[list[tuple[int, int]], int, int]: ...
def hash_backend(hashlib_only: bool = ..., /) -> str: ...
