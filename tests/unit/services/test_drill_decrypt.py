"""A drill decrypts its fetched artifacts with the parallel age reader (issue 18): the
plaintext is pyrage's byte for byte (files of many sizes, several ranges), written to a
private file; a flipped byte, a cut file or the wrong identity raise ``IntegrityError``
(the drill fails), never a plaintext that did not authenticate past the failure."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from affidavit.crypto.age import encrypt_chunks, new_identity
from affidavit.crypto.age_reader import CHUNK_SIZE
from affidavit.errors import IntegrityError
from affidavit.services import drill

IDENTITY, RECIPIENT = new_identity()


def _encrypted(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    plain = random.Random(size).randbytes(size)
    path = tmp_path / "a.bin.age"
    path.write_bytes(b"".join(encrypt_chunks([plain], RECIPIENT)))
    return path, plain


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 64 * CHUNK_SIZE + 1, 200 * CHUNK_SIZE - 3])
def test_the_plaintext_is_pyrages(tmp_path: Path, size: int) -> None:
    src, plain = _encrypted(tmp_path, size)
    dest = tmp_path / "out" / "a.bin"
    drill._decrypt(src, dest, IDENTITY)
    assert dest.read_bytes() == plain
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


@pytest.mark.parametrize("defect", ["flip", "cut", "identity"])
def test_what_does_not_decrypt_raises(tmp_path: Path, defect: str) -> None:
    size = 200 * CHUNK_SIZE - 3
    src, plain = _encrypted(tmp_path, size)
    raw = bytearray(src.read_bytes())
    identity = IDENTITY
    if defect == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif defect == "cut":
        del raw[-1000:]
    else:
        identity, _ = new_identity()
    src.write_bytes(bytes(raw))
    dest = tmp_path / "a.bin"
    with pytest.raises(IntegrityError):
        drill._decrypt(src, dest, identity)
    written = dest.read_bytes() if dest.exists() else b""
    assert plain.startswith(written) and len(written) < len(plain)
