"""Type stubs of the compiled index-entry assembly (``_native.c``)."""

from typing import Any

def packed_entries(
    pairs: Any, blob: Any, offsets: Any, lengths: Any, prefix_max: int, /
) -> bytes: ...
def take_keys(keys: list[bytes], order: Any, /) -> tuple[bytes, bytes]: ...
