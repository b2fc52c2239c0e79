"""Type stubs of the compiled fast path of the RDB fingerprint pass (``_native.c``).

The reader holds the module as the ``ModuleType`` that ``affidavit.native.load_native`` returns,
so these stubs type direct imports (tests, tools) and state the C signatures: arguments are
positional only; a buffer argument takes any object with the buffer protocol."""

from typing import Literal

from typing_extensions import Buffer

#: scan() statuses: the next opcode is for the Python parser / the next record runs past
#: `end` / `limit` keys made
STOP: int
MORE: int
FULL: int

def scan(
    buf: Buffer,
    pos: int,
    end: int,
    expire: int | None,
    as_of: int | None,
    tag: Buffer,
    limit: int,
    /,
) -> tuple[int, int | None, int, list[bytes], bytes]:
    """``(pos, expire, status, keys, pairs)``: the records of ``buf[pos:end]`` parsed,
    encoded and hashed (``pairs``: ``key_hash || record_hash`` of each key, concatenated).
    Raises ``ValueError`` unless ``0 <= pos <= end <= len(buf)``."""

def hash_backend(hashlib_only: bool = ..., /) -> Literal["openssl", "hashlib"]:
    """Which SHA-256 the module uses; ``hashlib_only`` switches it (tests compare both)."""
