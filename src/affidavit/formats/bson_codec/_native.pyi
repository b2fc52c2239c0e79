"""Type stubs of the compiled fast path (``_native.c``)."""

STOP: int
MORE: int
MAX_DOCUMENT: int

def frame(
    buf: bytes,
    pos: int,
    tag: bytes,
    want_keys: bool,
    starts: list[int] | None = ...,
    /,
) -> tuple[int, bytes, list[bytes] | None, int]: ...
def hash_backend(hashlib_only: bool = ..., /) -> str: ...
