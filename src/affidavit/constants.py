"""Names and numbers that every layer agrees on (L0: standard library only)."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class ExitCode(IntEnum):
    """Process exit codes, as documented in the README."""

    OK = 0
    SUBJECT_FAILED = 1  # the tool worked and the subject failed (verification, drill, policy)
    BAD_INPUT = 2  # bad input or usage; nothing changed
    CANNOT_RUN = 3  # an operation could not run (unreachable source, vault error)
    INTERNAL = 4  # a bug in affidavit


class Classification(StrEnum):
    """Data classification levels, lowest to highest."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class EngineName(StrEnum):
    """Database engines affidavit can talk to."""

    MONGODB = "mongodb"
    REDIS = "redis"


HOME_ENV: Final = "AFFIDAVIT_HOME"
ENV_PREFIX: Final = "AFFIDAVIT_"
DEFAULT_HOME_DIRNAME: Final = ".affidavit"
CONFIG_FILENAME: Final = "affidavit.toml"
CATALOG_FILENAME: Final = "catalog.sqlite"
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 5.0
INGESTED_LABEL: Final = "ingested"
"""The source label (and first folder of the artifacts) of an ingested backup that names no
source."""
