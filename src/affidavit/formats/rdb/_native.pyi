"""Type stubs of the compiled fast path (``_native.c``)."""

STOP: int
MORE: int
FULL: int

def scan(
    buf: bytes,
    pos: int,
    end: int,
    expire: int | None,
    as_of: int | None,
    tag: bytes,
    limit: int,
    /,
) -> tuple[int, int | None, int, list[bytes], bytes]: ...
def hash_backend(hashlib_only: bool = ..., /) -> str: ...
