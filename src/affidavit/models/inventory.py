"""Inventory values: sources, datasets, vaults, and what an engine says about its server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from affidavit.constants import Classification, EngineName
from affidavit.errors import InputError

SourceName = NewType("SourceName", str)
VaultName = NewType("VaultName", str)

_NAME_MAX = 64


def check_name(kind: str, name: str) -> str:
    """Return ``name`` when it is a valid source/vault name, else raise :class:`InputError`.

    Names are 1-64 characters of letters, digits, ``-``, ``_`` and ``.``, starting with a
    letter or digit, so that they are safe in paths, URLs and ``SOURCE/DATASET`` references.
    """
    ok = (
        0 < len(name) <= _NAME_MAX
        and name[0].isascii()
        and name[0].isalnum()
        and all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in name)
    )
    if not ok:
        raise InputError(
            f"invalid {kind} name {name!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def parse_classification(text: str) -> Classification:
    """Parse a classification level, raising :class:`InputError` with the allowed values."""
    try:
        return Classification(text.strip().lower())
    except ValueError:
        allowed = "|".join(c.value for c in Classification)
        raise InputError(f"invalid classification {text!r}", hint=f"use one of {allowed}") from None


def parse_engine(text: str) -> EngineName:
    """Parse an engine name, raising :class:`InputError` with the supported values."""
    try:
        return EngineName(text.strip().lower())
    except ValueError:
        allowed = "|".join(e.value for e in EngineName)
        raise InputError(f"unknown engine {text!r}", hint=f"use one of {allowed}") from None


class SecretKind(StrEnum):
    """Where a source's password is found at connect time."""

    ENV = "env"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret (never the secret itself)."""

    kind: SecretKind
    locator: str  # an environment variable name or a file path

    def describe(self) -> str:
        """How the reference reads in a report."""
        return f"${self.locator}" if self.kind is SecretKind.ENV else f"file:{self.locator}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """One registered database endpoint."""

    name: SourceName
    engine: EngineName
    uri: str  # without credentials
    secret: SecretRef | None
    classification: Classification
    region: str | None
    owner: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """One collection / key namespace of a source, as the catalog knows it."""

    source: SourceName
    name: str
    classification: Classification
    inherited: bool  # True while the dataset has not been classified on its own
    reason: str | None
    records: int | None  # at last discovery
    discovered_at: datetime | None


class VaultKind(StrEnum):
    """Storage backends for backup artifacts."""

    FILE = "file"
    S3 = "s3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Vault:
    """Where backup artifacts live."""

    name: VaultName
    kind: VaultKind
    url: str
    region: str | None
    immutable_days: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultProbe:
    """What a vault looks like right now."""

    reachable: bool
    writable: bool | None  # None when it cannot be told without writing
    immutability: str | None  # e.g. "object-lock COMPLIANCE 30d", "read-only files"
    detail: str  # one line, for people


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerDescription:
    """What an engine reports about its server; feeds drift checks later.

    ``settings`` holds the security-relevant configuration (persistence, replication, ...)
    as plain JSON-compatible values.
    """

    engine: EngineName
    version: str
    tls: bool
    auth_required: bool | None  # None when the engine cannot tell
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetCount:
    """A dataset discovered on a live source with its record count."""

    name: str
    records: int


def parse_vault_url(text: str) -> tuple[VaultKind, str]:
    """Check a vault URL and return its kind and normal form.

    ``file:///ABSOLUTE/PATH`` or ``s3://BUCKET[/PREFIX]`` (bucket named by the S3 rules:
    3-63 lower-case letters, digits, ``-`` and ``.``).
    """
    hint = "use file:///absolute/path or s3://bucket/prefix"
    text = text.strip()
    if text.startswith("file://"):
        path = text.removeprefix("file://")
        if not path.startswith("/"):
            raise InputError(f"a file vault needs an absolute path, not {text!r}", hint=hint)
        if "\x00" in path or "/../" in f"{path}/":
            raise InputError(f"invalid vault path in {text!r}", hint=hint)
        return VaultKind.FILE, "file://" + ("/" + path.strip("/") if path.strip("/") else "/")
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        ok = (
            3 <= len(bucket) <= 63
            and all(ch.islower() or ch.isdigit() or ch in "-." for ch in bucket)
            and bucket[0].isalnum()
            and bucket[-1].isalnum()
            and ".." not in bucket
        )
        if not ok:
            raise InputError(
                f"invalid S3 bucket name {bucket!r}",
                hint="bucket names are 3-63 lower-case letters, digits, '-' or '.'",
            )
        prefix = prefix.strip("/")
        return VaultKind.S3, f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    raise InputError(f"unsupported vault URL {text!r}", hint=hint)
