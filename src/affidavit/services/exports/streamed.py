"""A backup's BSON data artifact read for an export's worker processes as it is decrypted:
no ciphertext copy and no plaintext file (the serial pass writes both into its private
folder, :func:`~.passes._fetch`).

The ciphertext streams out of the vault and is hashed as it passes; the age reader
(:func:`affidavit.crypto.age_reader.decrypt_stream`, in this process: the cores are the
workers') authenticates every 64 KiB chunk before its plaintext is handed on; the
documents are framed into batches (:class:`affidavit.formats.base.BsonFramer`: the framing
checks of the serial pass). The
ciphertext's size and SHA-256 are compared with the catalog's (which the signed manifest
vouched for) when the stream ends: records are then already on their way to the workers,
but nothing of the run leaves before the end of the pass, and a mismatch fails the run
before anything is delivered. A ciphertext that does not decrypt and does not match its
digest is reported as the serial pass reports it (the digest), after the rest of it is
hashed; so is one that decrypts (re-encrypted with the backup's own key) to what does not
frame as BSON (not the framing error: the serial pass checks the digest first).
"""

from __future__ import annotations

import gzip
from collections.abc import Generator, Iterable, Iterator
from typing import BinaryIO, Final, cast

from affidavit.crypto.age_reader import decrypt_stream
from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import IntegrityError
from affidavit.formats.base import GZIP_MAGIC, BsonFramer
from affidavit.models.backup import Backup, BackupArtifact
from affidavit.services.backends import vault_backend
from affidavit.services.context import App
from affidavit.services.keys import keystore_for, unwrap_identity

_CHUNK: Final = 256 * 1024


class _PieceReader:
    """A ``read(n)`` over an iterator of byte pieces (what :class:`BsonFramer` and
    :class:`gzip.GzipFile` read from)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._held: list[bytes] = []
        self._size = 0

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer at the end), left to be read."""
        self._gather(n)
        data = b"".join(self._held)
        self._held = [data] if data else []
        return data[:n]

    def _gather(self, n: int) -> None:
        while self._size < n:
            piece = next(self._pieces, None)
            if piece is None:
                return
            self._held.append(piece)
            self._size += len(piece)

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left for a negative ``n``); ``b""`` at the end."""
        self._gather(n if n >= 0 else 1 << 62)
        data = b"".join(self._held)
        if 0 <= n < len(data):
            out, rest = data[:n], data[n:]
            self._held, self._size = [rest], len(rest)
            return out
        self._held, self._size = [], 0
        return data


def streamed_batches(
    app: App, backup: Backup, artifact: BackupArtifact, size: int
) -> Iterator[bytes]:
    """The documents of ``artifact`` (one dataset's BSON file, maybe gzipped) in batches of
    about ``size`` bytes of whole documents, decrypted as they are read (see the module
    docstring). Raises :class:`IntegrityError` (a ciphertext that is not the signed one),
    :class:`~affidavit.errors.FormatError` (framing)."""
    with app.read() as uow:
        vault = uow.vaults.get(backup.vault)
    backend = vault_backend(vault)
    identity = unwrap_identity(keystore_for(app.settings), backup)
    digest = Sha256Stream()

    def cipher() -> Generator[bytes, None, None]:
        with backend.open(artifact.path) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                yield chunk

    source = cipher()

    def check() -> None:
        if digest.length != artifact.size or digest.hexdigest() != artifact.sha256:
            raise IntegrityError(
                f"{artifact.path} does not match its signed digest",
                hint=f"run `affidavit verify run {backup.id}`; nothing was exported",
            )

    pieces = decrypt_stream(source, identity)
    try:
        reader = _PieceReader(pieces)
        stream: BinaryIO = cast(BinaryIO, reader)
        if reader.peek(2) == GZIP_MAGIC:
            stream = cast(BinaryIO, gzip.GzipFile(fileobj=stream))
        framer = BsonFramer(stream, source=artifact.path)
        while (batch := framer.next_batch(size)) is not None:
            yield batch[0]
    except Exception:
        # A ciphertext that does not decrypt, or decrypts (a forgery with the backup's own
        # key) to what is not BSON: hash the rest, and a ciphertext that is not the signed
        # one says so, as the serial pass (which checks the digest first) says it.
        drained = True
        try:
            for _ in source:
                pass
        except Exception:  # the vault failed too: the first error stands
            drained = False
        if drained:
            check()
        raise
    finally:
        if isinstance(pieces, Generator):  # the age reader's: stop it
            pieces.close()
        source.close()
    check()
