"""The one error tree of affidavit.

Every error a user can cause or meet carries a one-line ``message``, an ``exit_code`` and a
``hint`` that says what to do next. The CLI catches :class:`Error` in exactly one place and
renders it without a traceback. Third-party exceptions are wrapped at the boundary with
``raise ... from exc``. Each layer owns a subtree.
"""

from __future__ import annotations

from typing import Any

from affidavit.constants import ExitCode


class Error(Exception):
    """Base of every error that affidavit reports to a user."""

    exit_code: ExitCode = ExitCode.INTERNAL
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


# --- not a failure (exit 0): the operation waits for other people's approval ----------------


class ApprovalPending(Error):
    """A gated operation was asked for by an authenticated identity and now waits for other
    people's approval: nothing else changed, a request was recorded. Not a failure (exit 0):
    the CLI prints the request, the server answers 202 with it."""

    exit_code = ExitCode.OK

    def __init__(self, message: str, *, hint: str | None = None, request: dict[str, Any]) -> None:
        super().__init__(message, hint=hint)
        self.request = request


# --- bad input or usage (exit 2): nothing changed -------------------------------------------


class InputError(Error):
    """The user gave something affidavit cannot accept."""

    exit_code = ExitCode.BAD_INPUT


class ConfigError(InputError):
    """The configuration file or environment is malformed."""

    default_hint = "fix the file or variable named above; `affidavit --help` lists the settings"


class NotFound(InputError):
    """A named source, dataset, vault or record does not exist."""


class AlreadyExists(InputError):
    """A name that must be unique is already taken."""


class FormatError(InputError):
    """A file is not in the format it claims to be (truncated, hostile, wrong magic)."""

    default_hint = (
        "the file is damaged or not in the format it was read as: check --format, or copy "
        "it again from its source"
    )


class CatalogVersionError(InputError):
    """The catalog was written by a newer (or unknown) schema version."""

    default_hint = "upgrade affidavit to a version that knows this catalog, or use another --home"


class AccessDenied(InputError):
    """The actor may not do this (separation of duties, missing permission)."""


class StepUpRequired(AccessDenied):
    """The operation needs a fresh multi-factor check (a TOTP code within the last few
    minutes) that the acting identity has not passed: a server answers it with a step-up
    challenge rather than a plain refusal."""

    default_hint = "confirm a current TOTP code (step-up) and retry within five minutes"


# --- an operation could not run (exit 3): nothing half-recorded -----------------------------


class OperationError(Error):
    """An operation could not run for reasons outside the input."""

    exit_code = ExitCode.CANNOT_RUN


class EngineError(OperationError):
    """A database engine could not be reached or answered with an error."""

    default_hint = "check that the server runs, the URI is right and the credentials are set"


class SyncRefused(EngineError):
    """A Redis server refused ``SYNC`` (no permission, or a service that disables it): its
    keyspace can still be read key by key."""


class VaultError(OperationError):
    """A vault could not be reached, read or written."""

    default_hint = "check the vault's storage; `affidavit vault show NAME` probes it"


class CatalogError(OperationError):
    """The catalog database could not be opened or written."""


class CatalogRowDamaged(CatalogError):
    """A catalog row holds a value affidavit never writes (an unknown status or engine, a date
    or JSON document that does not parse): the catalog was altered outside affidavit."""

    default_hint = (
        "the catalog was altered outside affidavit; "
        "run `affidavit ledger verify` / `affidavit policy check`"
    )

    table: str = ""
    row: str = ""
    column: str = ""

    @classmethod
    def at(cls, *, table: str, row: str, column: str, value: str) -> CatalogRowDamaged:
        """The error for column ``column`` of the row with primary key ``row`` in ``table``,
        which holds ``value`` (shown as given: a short ``repr``)."""
        error = cls(f"damaged catalog row: {table} row {row}, column {column} holds {value}")
        error.table, error.row, error.column = table, row, column
        return error


class TooManyRequests(OperationError):
    """An anonymous caller asked for too much too fast (single sign-on starts from one
    address): nothing was done; the API answers 429. Exit 3: try again later."""

    default_hint = "wait a minute and try again"


class AuthenticationFailed(OperationError):
    """Credentials were refused: a wrong name, password, TOTP or recovery code, a replayed
    code, a locked or disabled account, an expired, revoked or unknown session or token.

    Exit 3, not 2: the input was well formed, and the operation could not run because the
    identity behind it could not be established. Exit 2 also promises "nothing changed", and
    a refused login does change something on purpose: the failure is counted towards the
    lockout and recorded in the ledger (``identity.login_failed``); it is fully recorded,
    never half. The message is the same for every cause, so that it tells a guesser nothing
    (which part was wrong, whether the name exists); the ledger records the cause for the
    auditor."""

    default_hint = (
        "check the name, password and code; after repeated failures an account is locked "
        "for a while (docs/identities.md)"
    )


class KeystoreError(OperationError):
    """A key could not be loaded, unwrapped or used."""


class SigningRefused(OperationError):
    """The ledger's signer will not sign: the catalog's tree does not provably extend the
    last tree it signed (entries it never signed, a truncated or rewritten history, a
    ledger that does not begin with its key's creation)."""

    default_hint = (
        "the catalog was altered outside affidavit: run `affidavit ledger verify`; "
        "docs/operations.md says how to recover a genuinely lost catalog"
    )


# --- the tool worked and the subject failed (exit 1) -----------------------------------------


class SubjectFailed(Error):
    """The subject (a backup, a ledger, a policy) failed its check."""

    exit_code = ExitCode.SUBJECT_FAILED


class IntegrityError(SubjectFailed):
    """Data does not match its digest, proof or signature."""


class PolicyViolation(SubjectFailed):
    """An action or state breaks a policy control."""


# --- a bug --------------------------------------------------------------------------------


class InternalError(Error):
    """Something happened that affidavit's code did not expect."""

    exit_code = ExitCode.INTERNAL
    default_hint = "this is a bug in affidavit; please report it with the command you ran"
