"""Type stubs of the compiled index-entry assembly (``_native.c``).

``index`` and ``accumulator`` hold the module as the ``ModuleType`` that
``affidavit.native.load_native`` returns, so these stubs type direct imports (tests, tools) and
state the C signatures: arguments are positional only; a buffer argument takes any object with
the buffer protocol (numpy arrays are named because their stubs declare the protocol only
from Python 3.12)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

def packed_entries(
    pairs: Buffer,
    blob: Buffer,
    offsets: Buffer | npt.NDArray[np.int64],
    lengths: Buffer | npt.NDArray[np.int32],
    prefix_max: int,
    /,
) -> bytes:
    """The index entries ``pair || u16be(len) || key`` of the keys
    ``blob[offsets[i] : offsets[i] + lengths[i]]`` (native int64 offsets, int32 lengths),
    a key longer than ``prefix_max`` cut to it. Raises ``ValueError`` for a key outside
    ``blob`` or counts that disagree."""

def take_keys(keys: list[bytes], order: Buffer | npt.NDArray[Any], /) -> tuple[bytes, bytes]:
    """``(blob, lengths)``: ``keys[order[0]] + keys[order[1]] + ...`` (native int64 indexes)
    and the native int32 length of each. Raises ``IndexError`` for an index outside ``keys``
    and ``TypeError`` for a key that is not ``bytes``."""
