"""Identity values: accounts, role grants, API tokens, login sessions, and the
:class:`Principal`, the authenticated identity behind one request.

None of these values ever holds a secret in the clear that outlives the call which created
it: a password is kept only as its argon2id hash, a token or session secret only as its
SHA-256, a TOTP secret only wrapped by a key-encryption key. The one-time secrets handed to
a caller (:class:`SessionGrant`, :class:`IssuedToken`, :class:`TotpEnrolment`) keep them out of
``repr``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from affidavit.errors import InputError
from affidavit.models.permissions import Permission, Role

_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MAX_DISPLAY_NAME: Final = 200
MAX_EMAIL: Final = 254
MAX_OIDC_ISSUER: Final = 2000
MAX_OIDC_SUBJECT: Final = 255  # OpenID Connect Core 1.0 §2: at most 255 ASCII characters


class AccountKind(StrEnum):
    """A person, or automation (which authenticates with API tokens only)."""

    HUMAN = "human"
    SERVICE = "service"


class AuthMethod(StrEnum):
    """How the identity of a request was established."""

    # (names of methods, not secrets: S105)
    PASSWORD_TOTP = "password+totp"  # noqa: S105 - password and a TOTP code
    PASSWORD_RECOVERY = "password+recovery-code"  # noqa: S105 - and a one-time recovery code
    PASSWORD = "password"  # noqa: S105 - password alone: no TOTP enrolled (no MFA)
    SESSION = "session"  # a session secret from an earlier login
    TOKEN = "token"  # noqa: S105 - an API token of a service account
    LOCAL_OS_USER = "local-os-user"  # local mode: the OS user at the terminal, not verified
    OIDC = "oidc"  # single sign-on: an OpenID provider's ID token (MFA when it showed one)


def account_name(text: str) -> str:
    """The account name ``text`` stands for (lower case, trimmed); raises :class:`InputError`
    unless it is 1-64 of ``a-z 0-9 . _ @ -``, starting with a letter or digit."""
    name = text.strip().lower()
    if not _NAME.fullmatch(name):
        raise InputError(
            f"{text[:80]!r} is not a valid account name",
            hint="1-64 characters: letters, digits, '.', '_', '@', '-' (starting with a letter "
            "or digit)",
        )
    return name


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (only this host reaches it)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def oidc_issuer(text: str) -> str:
    """The OpenID provider's issuer identifier ``text`` stands for (trimmed, otherwise exact:
    OpenID Connect compares issuers as strings); raises :class:`InputError` unless it is an
    ``https`` URL (``http`` to a loopback address only) without credentials, query or
    fragment."""
    value = text.strip()
    parts = urlsplit(value)
    host = parts.hostname or ""
    if (
        not value
        or len(value) > MAX_OIDC_ISSUER
        or parts.scheme not in ("https", "http")
        or not host
        or (parts.scheme == "http" and not is_loopback_host(host))
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in value)
    ):
        raise InputError(
            f"{text[:100]!r} is not an OpenID provider's issuer URL",
            hint="the provider's `issuer` exactly, e.g. https://login.example.com/realms/main "
            "(https; http only to a loopback address)",
        )
    return value


def oidc_subject(text: str) -> str:
    """An OpenID provider's subject identifier (``sub``) as given: 1-255 printable ASCII
    characters without spaces; raises :class:`InputError` otherwise."""
    if not 0 < len(text) <= MAX_OIDC_SUBJECT or any(not 0x20 < ord(ch) < 0x7F for ch in text):
        raise InputError(
            f"{text[:80]!r} is not an OpenID subject identifier",
            hint="the `sub` claim exactly: 1-255 printable ASCII characters, no spaces",
        )
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A local account (a person or a service)."""

    id: str
    name: str
    kind: AccountKind
    created_at: datetime
    created_by: str
    display_name: str | None = None
    email: str | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    has_password: bool = False
    totp_enrolled: bool = False
    oidc_issuer: str | None = None
    oidc_subject: str | None = None
    locked_until: datetime | None = None

    @property
    def disabled(self) -> bool:
        """Whether the account was disabled (for good: it never authenticates again)."""
        return self.disabled_at is not None

    def locked(self, now: datetime) -> bool:
        """Whether a lockout after failed logins is in force at ``now``."""
        return self.locked_until is not None and now < self.locked_until

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (no secret: the account holds none)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "display_name": self.display_name,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
            "disabled_reason": self.disabled_reason,
            "has_password": self.has_password,
            "totp_enrolled": self.totp_enrolled,
            "oidc_issuer": self.oidc_issuer,
            "oidc_subject": self.oidc_subject,
            "locked_until": self.locked_until.isoformat() if self.locked_until else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleGrant:
    """One role held by one account."""

    account: str  # the account's name
    role: Role
    granted_at: datetime
    granted_by: str
    seq: int | None = None  # the ledger event that granted it (role.granted)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "account": self.account,
            "role": self.role.value,
            "granted_at": self.granted_at.isoformat(),
            "granted_by": self.granted_by,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiToken:
    """An API token of a service account. The secret is never stored or shown again: the
    catalog keeps its SHA-256."""

    id: str
    account: str  # the account's name
    scopes: frozenset[Permission]
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    last_used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (never the secret)."""
        return {
            "id": self.id,
            "account": self.account,
            "scopes": sorted(p.value for p in self.scopes),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A login session: what a successful :func:`login` opened. The secret is kept only as
    its SHA-256."""

    id: str
    account: str  # the account's name
    method: AuthMethod  # how the login authenticated
    created_at: datetime
    last_seen_at: datetime
    idle_expires_at: datetime  # last_seen_at + the idle timeout
    absolute_expires_at: datetime  # created_at + the absolute timeout
    mfa_at: datetime | None = None  # the last TOTP check (login or step-up)
    ended_at: datetime | None = None  # logout, or the account disabled / its password reset
    client_address: str | None = None
    client_agent: str | None = None

    def usable(self, now: datetime) -> bool:
        """Not ended, not idle too long, not past its absolute lifetime at ``now``."""
        return (
            self.ended_at is None and now < self.idle_expires_at and now < self.absolute_expires_at
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (never the secret)."""
        return {
            "id": self.id,
            "account": self.account,
            "method": self.method.value,
            "created_at": self.created_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "idle_expires_at": self.idle_expires_at.isoformat(),
            "absolute_expires_at": self.absolute_expires_at.isoformat(),
            "mfa_at": self.mfa_at.isoformat() if self.mfa_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is behind one request, as established by authentication (or, in local mode, as
    asserted by the OS). ``permissions`` is what the request may do: the union of the
    account's roles, cut down to a token's scopes for a token; empty for the local OS user,
    whose commands are not authorized by role at all (local mode enforces nothing)."""

    name: str  # the account's name (local mode: the OS login name or --actor)
    kind: AccountKind
    method: AuthMethod
    account_id: str | None = None  # None in local mode
    roles: frozenset[Role] = frozenset()
    permissions: frozenset[Permission] = frozenset()
    mfa_at: datetime | None = None
    session_id: str | None = None
    token_id: str | None = None

    @property
    def authenticated(self) -> bool:
        """Whether affidavit verified this identity (False for the local OS user)."""
        return self.method is not AuthMethod.LOCAL_OS_USER

    def holds(self, permission: Permission) -> bool:
        """Whether this identity may do ``permission`` (never in local mode)."""
        return self.authenticated and permission in self.permissions

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``whoami``)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "method": self.method.value,
            "authenticated": self.authenticated,
            "account_id": self.account_id,
            "roles": sorted(r.value for r in self.roles),
            "permissions": sorted(p.value for p in self.permissions),
            "mfa_at": self.mfa_at.isoformat() if self.mfa_at else None,
            "session_id": self.session_id,
            "token_id": self.token_id,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcIdentity:
    """Whom an OpenID provider vouched for, from an ID token that passed every check
    (signature, issuer, audience, expiry, nonce): the provider's issuer and subject, when the
    person authenticated there, how (``acr``, ``amr``), and whether that counts as MFA."""

    issuer: str
    subject: str
    authenticated_at: datetime  # the token's auth_time, else its iat
    mfa: bool
    acr: str | None = None
    amr: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the ledger's details of an OIDC login)."""
        return {
            "issuer": self.issuer,
            "subject": self.subject,
            "authenticated_at": self.authenticated_at.isoformat(),
            "mfa": self.mfa,
            "acr": self.acr,
            "amr": list(self.amr),
        }


# -- stored state the service reads (catalog values) ----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpCredential:
    """An account's TOTP secret as the catalog keeps it: wrapped by a key-encryption key,
    bound to the account's id. ``confirmed_at`` is None while the enrolment waits for its
    first code; ``last_step`` is the newest time step accepted (a code of that step or an
    older one is a replay)."""

    account_id: str
    wrapped_secret: bytes = field(repr=False)
    kek_id: str
    kek_version: int
    created_at: datetime
    confirmed_at: datetime | None = None
    last_step: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginThrottle:
    """The failed-login counter of one account (or of every unknown name together):
    consecutive failures since the last success or lockout, consecutive lockouts (each one
    doubles the next), and the lockout in force."""

    key: str  # the account's id, or UNKNOWN_ACCOUNT
    failures: int = 0
    lockouts: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None


UNKNOWN_ACCOUNT: Final = "*unknown*"
"""The throttle key shared by every login attempt that names no existing account."""


# -- one-time secrets handed to the caller ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionGrant:
    """A successful login: the session, its secret (shown once, never stored) and the
    principal it authenticates."""

    session: Session
    secret: str = field(repr=False)
    principal: Principal


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedToken:
    """A new API token and its secret (shown once, never stored)."""

    token: ApiToken
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpEnrolment:
    """The first step of a TOTP enrolment: the ``otpauth://`` URI for an authenticator app
    (it holds the secret: show it to the account's owner only, once)."""

    account: str
    uri: str = field(repr=False)
    secret: str = field(repr=False)  # base32, for typing it in by hand
