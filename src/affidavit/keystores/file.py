"""The local file keystore: versioned AES-256 KEKs in one JSON file (the default keystore).

File format (``affidavit-file-keystore-v1``), UTF-8 JSON, mode ``0600``, written atomically
(temporary file in the same folder, ``fsync``, rename, ``fsync`` of the folder)::

    {
      "format": "affidavit-file-keystore-v1",
      "body": {
        "kek_id": "file:<file name at creation>",
        "protection": null | {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
                              "salt": "<base64, 16 bytes>", "check": "<base64>"},
        "versions": [{"version": 1, "created_at": "<ISO 8601>", "retired_at": null,
                      "key": "<base64>"}, ...]
      },
      "sha256": "<hex SHA-256 of body as compact JSON with sorted keys>"
    }

Without a passphrase ``key`` is the raw 32-byte KEK. With a passphrase it is the KEK wrapped
(AES-256-GCM, :mod:`affidavit.crypto.kek`) under a key derived from the passphrase with scrypt;
the associated data binds the key id and the version's number and dates, so editing a
version (un-retiring it, say) is detected. ``check`` is a fixed string wrapped the same way; it
tells a wrong passphrase from a tampered file. ``sha256`` catches any other edit or damage; it
is a checksum, not a signature: whoever can write the file can also recompute it (and, without a
passphrase, read every key).

Secrets are wrapped with AES-256-GCM under the current version with associated data
``"affidavit-kek-wrap-v1" || u32(len(kek_id)) || kek_id || u32(version) || context``.

The passphrase is given by the caller (services read ``AFFIDAVIT_PASSPHRASE``); this module
never reads the environment. It never logs or returns key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from affidavit.crypto import kek
from affidavit.crypto.digest import constant_time_equal, sha256_hex
from affidavit.crypto.key_file import read_key_file
from affidavit.durable import write_atomic
from affidavit.errors import KeystoreError
from affidavit.keystores.base import KekVersion, Keystore, WrappedSecret

__all__ = ["FORMAT", "FileKeystore"]

FORMAT: Final = "affidavit-file-keystore-v1"
_MAX_FILE_SIZE: Final = 1 << 20
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CHECK_TEXT: Final = b"affidavit-file-keystore passphrase check"
_PASSPHRASE_HINT: Final = "set AFFIDAVIT_PASSPHRASE to the passphrase of the key file"  # noqa: S105


@dataclass(frozen=True, slots=True)
class _Version:
    version: int
    created_at: datetime
    retired_at: datetime | None
    key: bytes = b""

    def public(self, kek_id: str) -> KekVersion:
        return KekVersion(
            kek_id=kek_id,
            version=self.version,
            created_at=self.created_at,
            retired_at=self.retired_at,
        )


@dataclass(frozen=True, slots=True)
class _State:
    kek_id: str
    salt: bytes | None  # None: not passphrase-protected
    versions: tuple[_Version, ...]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _wrap_ad(kek_id: str, version: int, context: bytes) -> bytes:
    ident = kek_id.encode()
    return b"affidavit-kek-wrap-v1" + _u32(len(ident)) + ident + _u32(version) + context


def _version_ad(kek_id: str, version: _Version) -> bytes:
    meta = [kek_id, version.version, version.created_at.isoformat()]
    meta.append(version.retired_at.isoformat() if version.retired_at else None)
    return b"affidavit-kek-file-v1" + _canonical(meta)


def _check_ad(kek_id: str) -> bytes:
    return b"affidavit-kek-check-v1" + kek_id.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


def _when(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError("not a timestamp")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return value


class FileKeystore(Keystore):
    """Versioned KEKs in a local JSON file, optionally protected by a passphrase.

    The file is created on first use (:meth:`current`, :meth:`wrap`, :meth:`rotate`) with the
    passphrase given here, if any. Every call re-reads the file, so rotations made by another
    process are seen; changes are made under an exclusive lock on ``PATH.lock``.
    """

    def __init__(self, path: Path, *, passphrase: str | None) -> None:
        if passphrase is not None and not passphrase:
            raise KeystoreError("the passphrase is empty", hint=_PASSPHRASE_HINT)
        self.path = Path(path)
        self._passphrase = passphrase
        self._derived: tuple[bytes, bytes] | None = None  # (salt, key): scrypt is slow

    def __repr__(self) -> str:
        protected = self._passphrase is not None
        return f"FileKeystore({str(self.path)!r}, passphrase={'***' if protected else None})"

    # --- the interface -------------------------------------------------------------------

    def current(self) -> KekVersion:
        state = self._load_or_create()
        return state.versions[-1].public(state.kek_id)

    def versions(self) -> list[KekVersion]:
        state = self._load(missing_ok=True)
        if state is None:
            return []
        return [v.public(state.kek_id) for v in state.versions]

    def wrap(self, secret: bytes, *, context: bytes) -> WrappedSecret:
        state = self._load_or_create()
        version = state.versions[-1]
        blob = kek.wrap(
            version.key, secret, associated_data=_wrap_ad(state.kek_id, version.version, context)
        )
        return WrappedSecret(kek_id=state.kek_id, version=version.version, ciphertext=blob)

    def unwrap(self, wrapped: WrappedSecret, *, context: bytes) -> bytes:
        state = self._load(missing_ok=False)
        assert state is not None
        if wrapped.kek_id != state.kek_id:
            raise KeystoreError(
                f"the secret was wrapped by {wrapped.kek_id}, not by {state.kek_id}",
                hint="use the keystore that wrapped it",
            )
        version = next((v for v in state.versions if v.version == wrapped.version), None)
        if version is None:
            raise KeystoreError(f"{state.kek_id} has no version {wrapped.version}")
        if version.retired_at is not None:
            raise KeystoreError(
                f"{state.kek_id} version {version.version} was retired on "
                f"{version.retired_at.isoformat()} and can no longer unwrap",
                hint="secrets must be re-wrapped under the current version before retiring",
            )
        return kek.unwrap(
            version.key,
            wrapped.ciphertext,
            associated_data=_wrap_ad(state.kek_id, version.version, context),
        )

    def rotate(self) -> KekVersion:
        with self._locked():
            state = self._load(missing_ok=True)
            if state is None:
                state = self._new_state()
            else:
                number = state.versions[-1].version + 1
                fresh = _Version(number, datetime.now(UTC), None, kek.new_key())
                state = replace(state, versions=(*state.versions, fresh))
            self._save(state)
        return state.versions[-1].public(state.kek_id)

    def retire(self, version: int) -> None:
        with self._locked():
            state = self._load(missing_ok=False)
            assert state is not None
            found = next((v for v in state.versions if v.version == version), None)
            if found is None:
                raise KeystoreError(f"{state.kek_id} has no version {version}")
            if found.retired_at is not None:
                return
            if found is state.versions[-1]:
                raise KeystoreError(
                    f"{state.kek_id} version {version} is the current version",
                    hint="rotate first, re-wrap the secrets, then retire the old version",
                )
            retired = replace(found, retired_at=datetime.now(UTC))
            versions = tuple(retired if v is found else v for v in state.versions)
            self._save(replace(state, versions=versions))

    # --- file handling -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
        except OSError as exc:
            raise KeystoreError(f"cannot lock key file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load_or_create(self) -> _State:
        state = self._load(missing_ok=True)
        if state is not None:
            return state
        with self._locked():
            state = self._load(missing_ok=True)  # another process may have won the race
            if state is None:
                state = self._new_state()
                self._save(state)
        return state

    def _new_state(self) -> _State:
        salt = kek.new_salt() if self._passphrase is not None else None
        first = _Version(1, datetime.now(UTC), None, kek.new_key())
        return _State(kek_id=f"file:{self.path.name}", salt=salt, versions=(first,))

    def _passphrase_key(self, salt: bytes) -> bytes:
        if self._passphrase is None:
            raise KeystoreError(
                f"key file {self.path} is protected by a passphrase", hint=_PASSPHRASE_HINT
            )
        if self._derived is None or not constant_time_equal(self._derived[0], salt):
            self._derived = (salt, kek.derive_key(self._passphrase, salt))
        return self._derived[1]

    def _read(self) -> bytes | None:
        data = read_key_file(self.path, limit=_MAX_FILE_SIZE)
        if data is not None and len(data) > _MAX_FILE_SIZE:
            raise KeystoreError(f"key file {self.path} is too large")
        return data

    def _load(self, *, missing_ok: bool) -> _State | None:
        data = self._read()
        if data is None:
            if missing_ok:
                return None
            raise KeystoreError(
                f"key file {self.path} does not exist",
                hint="the secrets it wrapped cannot be unwrapped without it; restore it from "
                "its backup",
            )
        damaged = f"key file {self.path} is damaged or was altered"
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not an {FORMAT} file")
            body = doc["body"]
            if not constant_time_equal(
                sha256_hex(_canonical(body)).encode(), str(doc["sha256"]).encode()
            ):
                raise ValueError("its checksum does not match")
            return self._parse(body)
        except KeystoreError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise KeystoreError(
                f"{damaged}: {exc}" if isinstance(exc, ValueError) else damaged,
                hint="restore the key file from its backup",
            ) from exc

    def _parse(self, body: dict[str, Any]) -> _State:
        kek_id = body["kek_id"]
        if not isinstance(kek_id, str) or not kek_id.startswith("file:"):
            raise ValueError("bad kek_id")
        protection = body["protection"]
        salt: bytes | None = None
        if protection is not None:
            if self._passphrase is None:
                raise KeystoreError(
                    f"key file {self.path} is protected by a passphrase", hint=_PASSPHRASE_HINT
                )
            params = (protection["kdf"], protection["n"], protection["r"], protection["p"])
            if params != ("scrypt", kek.SCRYPT_N, kek.SCRYPT_R, kek.SCRYPT_P):
                raise ValueError("unknown passphrase protection")
            salt = _unb64(protection["salt"])
            derived = self._passphrase_key(salt)
            try:
                check = kek.unwrap(
                    derived, _unb64(protection["check"]), associated_data=_check_ad(kek_id)
                )
            except KeystoreError as exc:
                raise KeystoreError(
                    f"wrong passphrase for key file {self.path}", hint=_PASSPHRASE_HINT
                ) from exc
            if not constant_time_equal(check, _CHECK_TEXT):
                raise ValueError("bad passphrase check")
        elif self._passphrase is not None:
            raise KeystoreError(
                f"key file {self.path} is not passphrase-protected, but a passphrase was given",
                hint="unset AFFIDAVIT_PASSPHRASE for this key file",
            )
        versions: list[_Version] = []
        for number, item in enumerate(body["versions"], start=1):
            if item["version"] != number:
                raise ValueError("versions are not numbered 1, 2, ...")
            retired = item["retired_at"]
            version = _Version(
                number, _when(item["created_at"]), None if retired is None else _when(retired)
            )
            raw = _unb64(item["key"])
            if salt is not None:
                try:
                    raw = kek.unwrap(
                        self._passphrase_key(salt),
                        raw,
                        associated_data=_version_ad(kek_id, version),
                    )
                except KeystoreError as exc:
                    raise ValueError(f"version {number} does not match its key") from exc
            if len(raw) != kek.KEY_SIZE:
                raise ValueError(f"version {number} has no {kek.KEY_SIZE}-byte key")
            versions.append(replace(version, key=raw))
        if not versions or versions[-1].retired_at is not None:
            raise ValueError("no current version")
        return _State(kek_id=kek_id, salt=salt, versions=tuple(versions))

    def _serialise(self, state: _State) -> bytes:
        protection: dict[str, Any] | None = None
        if state.salt is not None:
            derived = self._passphrase_key(state.salt)
            check = kek.wrap(derived, _CHECK_TEXT, associated_data=_check_ad(state.kek_id))
            protection = {
                "kdf": "scrypt",
                "n": kek.SCRYPT_N,
                "r": kek.SCRYPT_R,
                "p": kek.SCRYPT_P,
                "salt": _b64(state.salt),
                "check": _b64(check),
            }
        versions = []
        for v in state.versions:
            key = v.key
            if state.salt is not None:
                key = kek.wrap(
                    self._passphrase_key(state.salt),
                    key,
                    associated_data=_version_ad(state.kek_id, v),
                )
            versions.append(
                {
                    "version": v.version,
                    "created_at": v.created_at.isoformat(),
                    "retired_at": v.retired_at.isoformat() if v.retired_at else None,
                    "key": _b64(key),
                }
            )
        body = {"kek_id": state.kek_id, "protection": protection, "versions": versions}
        doc = {"format": FORMAT, "body": body, "sha256": sha256_hex(_canonical(body))}
        return json.dumps(doc, indent=2).encode() + b"\n"

    def _save(self, state: _State) -> None:
        data = self._serialise(state)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, data, mode=0o600)
        except OSError as exc:
            raise KeystoreError(f"cannot write key file {self.path}: {exc.strerror}") from exc
