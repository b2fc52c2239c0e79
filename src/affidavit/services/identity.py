"""Authenticated identities: accounts, passwords, TOTP, login sessions, step-up MFA, API
tokens, and the one authorization check every entry point makes.

Every function is one use case, called once per request (by the CLI now, by the server
next): it takes the :class:`App`, the acting :class:`Principal` where someone acts, returns
frozen values and raises the project's errors. Each change is one transaction with its ledger
event (``App.change``), whose actor is the acting account's name; every event's details say
how that identity was established (``auth``). No secret enters the ledger or the catalog in
the clear.

Authorization. :func:`authorize` is the one check: a principal may do what one of its roles
grants (:mod:`affidavit.models.permissions`), nothing by default. Roles are *vouched by the
ledger*: a role counts only when its catalog row exists **and** the newest ``role.granted`` /
``role.revoked`` (or ``identity.bootstrapped``) event for that account and role grants it, so
someone who can edit the catalog but not forge signed events cannot grant themselves a role.
Sensitive steps (role grants, token issue, another account's password or TOTP reset)
also need a fresh MFA check (:func:`require_fresh_mfa`): a TOTP code at login or by
:func:`step_up` within :data:`STEP_UP_WINDOW`.

Local mode. Without a server the CLI acts as the OS user (:func:`local_principal`), whose
identity affidavit does not verify and who holds no permission: local commands are not
authorized by role (as before), and anything reported about them says "not authenticated".
Identity management itself accepts the local OS user only to create the first administrator
(:func:`bootstrap_admin`), on the host that owns the home; after that it needs a real login.

Logins. :func:`login` checks the password (argon2id), then a TOTP code (or a one-time
recovery code) when the account has one enrolled. A TOTP code is accepted one step either
side of now, and only for a time step newer than the last one accepted for that account (a
replayed code is refused). Every refusal counts towards a lockout: after
:data:`LOCKOUT_THRESHOLD` consecutive failures the account is locked for
:data:`LOCKOUT_BASE`, doubling with each further lockout up to :data:`LOCKOUT_MAX`; the count
starts again after a success or a day without failures. Failures are ledger events
(``identity.login_failed``, with the cause, never the password), and attempts against a
locked account are refused without any write, so the ledger grows by at most
:data:`LOCKOUT_THRESHOLD` events per account per lockout period whatever an attacker sends.
Names that do not exist share one counter (``*unknown*``) and their events name no account
(a mistyped name is often a password). Every refusal has the same message.

Sessions last :data:`IDLE_TIMEOUT` without use and :data:`ABSOLUTE_TIMEOUT` in all; their
secrets (``afs_...``) and API tokens' (``afv_...``) are shown once and stored as SHA-256.
Authenticating a session or a token writes nothing to the ledger (it changes no state; the
access log of the server records requests); its last use is refreshed at most once every
:data:`TOUCH_EVERY`.

TOTP secrets are wrapped with a key-encryption key the way backup identities are, bound to
the account's id (``services.keys``): with the AWS KMS key when one is configured, else with a
local key file of their own, ``HOME/keys/identity-kek.json`` (protected by the same
``AFFIDAVIT_PASSPHRASE``). Not ``kek.json`` itself: ``keys rotate`` re-wraps the backup
identities and then retires the old KEK versions, which would leave the TOTP secrets
unreadable and lock every person out. (KMS keeps every generation of its key material, and
this process never retires one, so the same KMS key is safe.)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from affidavit.catalog.store import UnitOfWork
from affidavit.config import Settings
from affidavit.crypto import passwords, tokens, totp
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    InputError,
    NotFound,
)
from affidavit.keystores.base import Keystore, WrappedSecret
from affidavit.models.approval import GatedOperation
from affidavit.models.identity import (
    MAX_DISPLAY_NAME,
    MAX_EMAIL,
    UNKNOWN_ACCOUNT,
    Account,
    AccountKind,
    ApiToken,
    AuthMethod,
    IssuedToken,
    LoginThrottle,
    OidcIdentity,
    Principal,
    Session,
    SessionGrant,
    TotpCredential,
    TotpEnrolment,
    account_name,
    oidc_issuer,
    oidc_subject,
)
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import (
    APPROVING,
    Permission,
    Role,
    permissions_of,
)
from affidavit.services import keys
from affidavit.services.alerts import raise_alert
from affidavit.services.context import KEYS_DIRNAME, App, Change
from affidavit.services.policy_vouch import read_events
from affidavit.services.principals import (
    authorize,
    is_service,
    ledger_services,
    require_fresh_mfa,
    vouched_holders,
    vouched_roles,
)
from affidavit.services.requests import Authority, gate, linked_subjects

IDLE_TIMEOUT: Final = timedelta(minutes=30)
ABSOLUTE_TIMEOUT: Final = timedelta(hours=12)
LOCKOUT_THRESHOLD: Final = 5
LOCKOUT_BASE: Final = timedelta(minutes=15)
LOCKOUT_MAX: Final = timedelta(hours=24)
TOKEN_MAX_LIFETIME: Final = timedelta(days=90)
TOUCH_EVERY: Final = timedelta(seconds=60)
IDENTITY_KEK_FILENAME: Final = "identity-kek.json"
ANONYMOUS: Final = "anonymous"
"""The ledger actor of a refused login: the identity was not established."""

_REFUSED = "login refused: wrong name, password or code, or the account is locked or disabled"
_TOTP_CONTEXT: Final = b"affidavit totp secret\x00"
_CSRF_TAG: Final = "affidavit csrf v1\x00"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("naive datetime")
    return now


def _require_owner(principal: Principal, name: str, what: str) -> None:
    """Only the account's owner, authenticated, may do ``what`` (enrol their TOTP)."""
    if not principal.authenticated or principal.name != name:
        raise AccessDenied(
            f"only {name!r} itself, logged in, may {what}",
            hint=f"log in as {name!r} (the CLI does it when it is given no --as)",
        )


def _principal(
    uow: UnitOfWork,
    account: Account,
    *,
    method: AuthMethod,
    mfa_at: datetime | None,
    session_id: str | None = None,
    token_id: str | None = None,
    scopes: frozenset[Permission] | None = None,
    role_rows: frozenset[Role] | None = None,
) -> Principal:
    services = ledger_services(uow)
    service = is_service(uow, account, services)
    roles = vouched_roles(uow, account, services=services, rows=role_rows)
    permissions = permissions_of(roles)
    if service:
        permissions -= APPROVING
    if scopes is not None:
        permissions &= scopes
    return Principal(
        name=account.name,
        kind=AccountKind.SERVICE if service else account.kind,
        method=method,
        account_id=account.id,
        roles=roles,
        permissions=permissions,
        mfa_at=mfa_at,
        session_id=session_id,
        token_id=token_id,
    )


@contextmanager
def _acting(app: App, actor: str, client: ClientInfo | None = None) -> Iterator[Change]:
    """``app.change()`` whose events name ``actor`` (and ``client``, when given)."""
    with app.change() as change:
        change.actor = actor
        if client is not None:
            change.client = client
        yield change


def _record(
    change: Change,
    principal: Principal,
    action: str,
    subject: str,
    details: dict[str, Any],
) -> int:
    """Record an event of ``principal`` (details say how it authenticated); its seq."""
    return change.record(action, subject, {**details, "auth": principal.method.value}).seq


# -- the TOTP secret's key -------------------------------------------------------------------


def identity_keystore(settings: Settings) -> Keystore:
    """The keystore that wraps TOTP secrets: the configured AWS KMS key, else the local key
    file ``HOME/keys/identity-kek.json`` (see the module docstring for why not ``kek.json``)."""
    if keys.keystore_kind(settings) is keys.KeystoreKind.KMS:
        return keys.keystore_for(settings)
    passphrase = settings.passphrase.get_secret_value() if settings.passphrase else None
    return _file_keystore(settings.home / KEYS_DIRNAME / IDENTITY_KEK_FILENAME, passphrase)


@functools.lru_cache(maxsize=16)
def _file_keystore(path: Path, passphrase: str | None) -> Keystore:
    """One :class:`FileKeystore` per key file and passphrase for the process: it keeps the
    key scrypt derived from the passphrase, so that a TOTP check costs microseconds rather
    than a key derivation (which, run only after a right password, would tell by its time
    that the password was right)."""
    from affidavit.keystores.file import FileKeystore

    return FileKeystore(path, passphrase=passphrase)


def _wrap_totp(app: App, account_id: str, secret: str) -> WrappedSecret:
    keystore = identity_keystore(app.settings)
    return keystore.wrap(secret.encode(), context=_TOTP_CONTEXT + account_id.encode())


@dataclass(frozen=True, slots=True)
class TotpToRewrap:
    """One TOTP secret a rotation re-wraps: its account's name, the secret, and the wrapped
    bytes it was read from (re-wrapped only if the credential still holds them)."""

    name: str
    secret: str = field(repr=False)
    wrapped: bytes = field(repr=False)


def totp_secrets_to_rewrap(app: App, kek_id: str) -> dict[str, TotpToRewrap]:
    """For a rotation of the key ``kek_id``: when that key also wraps the TOTP secrets (an
    AWS KMS keystore wraps both), every TOTP secret it wraps, unwrapped (by account id); else
    nothing. Raises before anything changes when one does not unwrap."""
    if identity_keystore(app.settings).current().kek_id != kek_id:
        return {}
    with app.read() as uow:
        ids = uow.identities
        credentials = ids.totp_wrapped_by(kek_id)
        names = {c.account_id: ids.account_by_id(c.account_id).name for c in credentials}
    return {
        c.account_id: TotpToRewrap(
            name=names[c.account_id], secret=_unwrap_totp(app, c), wrapped=c.wrapped_secret
        )
        for c in credentials
    }


def rewrap_totp_secrets(
    app: App, uow: UnitOfWork, secrets: Mapping[str, TotpToRewrap]
) -> list[str]:
    """Wrap ``secrets`` (:func:`totp_secrets_to_rewrap`) under the keystore's current
    version, in ``uow`` (the rotation's transaction); the names of their accounts.

    A credential reset or enrolled again since it was read (another transaction, while the
    rotation unwrapped and re-wrapped) is left as it is now: writing the secret read earlier
    over it would bring back the secret the reset removed (a lost device's). It keeps the
    version it is wrapped by, which the rotation then does not retire."""
    done = []
    for account_id, item in secrets.items():
        held = uow.identities.totp(account_id)
        if held is None or held.wrapped_secret != item.wrapped:
            continue
        wrapped = _wrap_totp(app, account_id, item.secret)
        uow.identities.rewrap_totp(
            account_id,
            wrapped_secret=wrapped.ciphertext,
            kek_id=wrapped.kek_id,
            kek_version=wrapped.version,
        )
        done.append(item.name)
    return sorted(done)


def _unwrap_totp(app: App, credential: TotpCredential) -> str:
    keystore = identity_keystore(app.settings)
    wrapped = WrappedSecret(
        kek_id=credential.kek_id,
        version=credential.kek_version,
        ciphertext=credential.wrapped_secret,
    )
    context = _TOTP_CONTEXT + credential.account_id.encode()
    return keystore.unwrap(wrapped, context=context).decode()


# -- input checks ------------------------------------------------------------------------------


def _check_password(password: str, name: str) -> None:
    problems = passwords.password_problems(password, account=name)
    if problems:
        raise InputError(
            "the password is not acceptable: " + "; ".join(problems),
            hint=f"use a passphrase of at least {passwords.MIN_LENGTH} characters",
        )


def _optional_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > limit or not value.isprintable():
        raise InputError(
            f"the {what} must be printable and at most {limit} characters",
            hint=f"shorten the {what}",
        )
    return value


def _email(value: str | None) -> str | None:
    email = _optional_text(value, "email", MAX_EMAIL)
    if email is not None and (email.count("@") != 1 or " " in email or email.startswith("@")):
        raise InputError(f"{email!r} is not an email address", hint="--email NAME@DOMAIN")
    return email


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise InputError("a reason is required", hint='--reason "why"')
    if len(text) > 1000:
        raise InputError("the reason is longer than 1000 characters", hint="say it shorter")
    return text


# -- accounts ----------------------------------------------------------------------------------


def _bootstrapped_already() -> AccessDenied:
    return AccessDenied(
        "accounts exist already: the first administrator was created before",
        hint="an administrator adds accounts: `affidavit user add NAME --as ADMIN`",
    )


def bootstrap_admin(
    app: App,
    principal: Principal,
    name: str,
    password: str,
    *,
    display_name: str | None = None,
    email: str | None = None,
    now: datetime | None = None,
) -> Account:
    """Create the first account, a person holding ``admin``, while no account exists, on the
    host that owns the home: ``principal`` must be the local OS user (a server never calls
    this for a request). Recorded ``identity.bootstrapped`` (with the OS user who did it)."""
    at = _now(now)
    if principal.method is not AuthMethod.LOCAL_OS_USER:
        raise AccessDenied(
            "the first administrator is created on the host that owns the home, not through "
            "a login",
            hint="run `affidavit user add NAME` there",
        )
    name = account_name(name)
    with app.read() as uow:
        if uow.identities.count_accounts():
            raise _bootstrapped_already()
    _check_password(password, name)
    account = Account(
        id=tokens.new_id(),
        name=name,
        kind=AccountKind.HUMAN,
        created_at=at,
        created_by=principal.name,
        display_name=_optional_text(display_name, "display name", MAX_DISPLAY_NAME),
        email=_email(email),
        has_password=True,
    )
    hashed = passwords.hash_password(password)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        if ids.count_accounts():  # again, in the transaction that serialises writers
            raise _bootstrapped_already()
        ids.add_account(account, password_hash=hashed)
        seq = _record(
            change,
            principal,
            "identity.bootstrapped",
            f"account:{name}",
            {
                "account_id": account.id,
                "kind": account.kind.value,
                "role": Role.ADMIN.value,
                "os_user": app.actor,
            },
        )
        ids.add_grant(account.id, Role.ADMIN, at=at, by=principal.name, seq=seq)
    return account


BREAK_GLASS_MIN_REASON: Final = 20


def break_glass(
    app: App,
    principal: Principal,
    name: str,
    password: str,
    *,
    reason: str,
    now: datetime | None = None,
) -> Account:
    """The break-glass path of an organisation locked out of its own server (every
    administrator lost their second factor, left, or was disabled): on the host that owns the
    home, the local OS user creates a new person holding ``admin``, without anyone's
    approval. It is loud, never silent: one transaction records ``identity.break_glass`` (with
    the OS user and the reason), ``account.created`` and ``role.granted``; then an alert goes
    to every configured webhook; the ``access.segregation_of_duties`` control reports it for
    as long as the period covers it. ``principal`` must be the local OS user (a server never
    calls this for a request)."""
    at = _now(now)
    if principal.method is not AuthMethod.LOCAL_OS_USER:
        raise AccessDenied(
            "break-glass is done on the host that owns the home, not through a login",
            hint="run `affidavit user break-glass NAME --reason ...` there",
        )
    why = _reason(reason)
    if len(why) < BREAK_GLASS_MIN_REASON:
        raise InputError(
            f"break-glass needs a reason of at least {BREAK_GLASS_MIN_REASON} characters",
            hint="say who is locked out and why, and who authorised this (it is alerted and "
            "reported)",
        )
    name = account_name(name)
    _check_password(password, name)
    hashed = passwords.hash_password(password)
    account = Account(
        id=tokens.new_id(),
        name=name,
        kind=AccountKind.HUMAN,
        created_at=at,
        created_by=principal.name,
        has_password=True,
    )
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        if ids.find_account(name) is not None:
            raise AlreadyExists(
                f"an account named {name!r} exists",
                hint="break-glass creates a new account: choose another name",
            )
        ids.add_account(account, password_hash=hashed)
        glass = _record(
            change,
            principal,
            "identity.break_glass",
            f"account:{name}",
            {"account": name, "account_id": account.id, "reason": why, "os_user": app.actor},
        )
        _record(
            change,
            principal,
            "account.created",
            f"account:{name}",
            {"account_id": account.id, "kind": account.kind.value, "break_glass": glass},
        )
        seq = _record(
            change,
            principal,
            "role.granted",
            f"account:{name}",
            {
                "account_id": account.id,
                "role": Role.ADMIN.value,
                "approval": {"standing": "break-glass", "event": glass},
            },
        )
        ids.add_grant(account.id, Role.ADMIN, at=at, by=principal.name, seq=seq)
    raise_alert(
        app,
        kind="identity.break_glass",
        subject=f"account:{name}",
        summary=f"break-glass: {app.actor} created the administrator {name!r} on the host",
        details={"reason": why, "os_user": app.actor, "ledger_seq": glass},
    )
    return account


def create_account(
    app: App,
    principal: Principal,
    name: str,
    *,
    kind: AccountKind = AccountKind.HUMAN,
    password: str | None = None,
    display_name: str | None = None,
    email: str | None = None,
    now: datetime | None = None,
) -> Account:
    """Create an account with no role (``account.manage``). A person needs a password that
    passes the policy; a service account has none (it authenticates with API tokens).
    Recorded ``account.created`` (never the email: the ledger cannot forget)."""
    authorize(principal, Permission.ACCOUNT_MANAGE)
    at = _now(now)
    name = account_name(name)
    hashed = None
    if kind is AccountKind.HUMAN:
        if password is None:
            raise InputError(
                "a person's account needs a password",
                hint="--password-file FILE, or answer the prompt",
            )
        _check_password(password, name)
        hashed = passwords.hash_password(password)
    elif password is not None:
        raise InputError(
            "a service account has no password", hint="issue it an API token: `token create`"
        )
    account = Account(
        id=tokens.new_id(),
        name=name,
        kind=kind,
        created_at=at,
        created_by=principal.name,
        display_name=_optional_text(display_name, "display name", MAX_DISPLAY_NAME),
        email=_email(email),
        has_password=hashed is not None,
    )
    with _acting(app, principal.name) as change:
        change.uow.identities.add_account(account, password_hash=hashed)
        _record(
            change,
            principal,
            "account.created",
            f"account:{name}",
            {"account_id": account.id, "kind": kind.value},
        )
    return account


def list_accounts(app: App, principal: Principal) -> list[Account]:
    """Every account, by name (``account.read``)."""
    authorize(principal, Permission.ACCOUNT_READ)
    with app.read() as uow:
        return uow.identities.accounts()


def get_account(app: App, principal: Principal, name: str) -> Account:
    """One account (``account.read``, or the account itself)."""
    name = account_name(name)
    authorize(principal, Permission.ACCOUNT_READ, self_service_for=name)
    with app.read() as uow:
        return uow.identities.account(name)


def disable_account(
    app: App,
    principal: Principal,
    name: str,
    *,
    reason: str,
    authority: Authority | None = None,
    now: datetime | None = None,
) -> Account:
    """Disable an account for good (``account.manage``; a gated operation, so that one
    administrator cannot remove the others who would approve what they ask for): its
    sessions end, its tokens stop working. The last enabled administrator cannot be
    disabled. Recorded ``account.disabled``."""
    authorize(principal, Permission.ACCOUNT_MANAGE)
    at = _now(now)
    name = account_name(name)
    why = _reason(reason)
    with app.read() as uow:  # refused before a request is recorded
        _may_disable(uow, name)
    allowed = gate(
        app,
        GatedOperation.ACCOUNT_DISABLE,
        {"account": name, "reason": why},
        target=f"account:{name}",
        reason=why,
        principal=principal,
        authority=authority,
        now=now,
    )
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        account = _may_disable(change.uow, name)
        ids.disable_account(account.id, at=at, reason=why)
        ended = ids.end_sessions(account.id, at=at)
        _record(
            change,
            principal,
            "account.disabled",
            f"account:{name}",
            {
                "account_id": account.id,
                "reason": why,
                "sessions_ended": ended,
                **allowed.event_details(),
            },
        )
        allowed.seal(change)
        return ids.account(name)


def _may_disable(uow: UnitOfWork, name: str) -> Account:
    account = uow.identities.account(name)
    if account.disabled:
        raise InputError(
            f"the account {name!r} is disabled already", hint="`affidavit user list` shows it"
        )
    if vouched_holders(uow, Role.ADMIN) == [account.id]:
        raise AccessDenied(
            f"{name!r} is the last enabled administrator",
            hint="grant admin to another person first",
        )
    return account


def unlock_account(
    app: App, principal: Principal, name: str, *, now: datetime | None = None
) -> Account:
    """Lift a lockout after failed logins (``account.manage``). Recorded
    ``account.unlocked``."""
    authorize(principal, Permission.ACCOUNT_MANAGE)
    name = account_name(name)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        account = ids.account(name)
        throttle = ids.throttle(account.id)
        if throttle == LoginThrottle(key=account.id):
            raise InputError(f"{name!r} has no failed logins to forget", hint="it is not locked")
        ids.put_throttle(LoginThrottle(key=account.id))
        _record(
            change,
            principal,
            "account.unlocked",
            f"account:{name}",
            {"account_id": account.id, "was_locked_until": _iso(throttle.locked_until)},
        )
        return ids.account(name)


def set_password(
    app: App,
    principal: Principal,
    name: str,
    new_password: str,
    *,
    current_password: str | None = None,
    client: ClientInfo | None = None,
    now: datetime | None = None,
) -> None:
    """Set a person's password: their own (with the current one), or another account's
    (``account.manage`` and a fresh MFA check). The account's other sessions end. Recorded
    ``account.password_set``; a wrong current password is a failed login."""
    name = account_name(name)
    authorize(principal, Permission.ACCOUNT_MANAGE, self_service_for=name)
    at = _now(now)
    own = principal.authenticated and principal.name == name
    if not own:
        require_fresh_mfa(principal, now=at)
    with app.read() as uow:
        account = uow.identities.account(name)
        stored = uow.identities.password_hash(account.id)
        throttle = uow.identities.throttle(account.id)
    if account.kind is AccountKind.SERVICE:
        raise InputError("a service account has no password", hint="it uses API tokens")
    _check_password(new_password, name)
    if own:
        if current_password is None:
            raise InputError(
                "changing your own password needs the current one",
                hint="log in as the account with its current password",
            )
        if _locked(throttle, at):  # a session must not guess the password past a lockout
            raise AuthenticationFailed(_REFUSED)
        if stored is None or not passwords.verify_password(stored, current_password):
            _fail(app, account, "password", client=client, at=at, action="identity.login_failed")
            raise AuthenticationFailed(_REFUSED)
    hashed = passwords.hash_password(new_password)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        ids.set_password_hash(account.id, hashed)
        ended = ids.end_sessions(account.id, at=at, keep=principal.session_id if own else None)
        _record(
            change,
            principal,
            "account.password_set",
            f"account:{name}",
            {"account_id": account.id, "own": own, "sessions_ended": ended},
        )


# -- TOTP enrolment ----------------------------------------------------------------------------


def begin_totp(
    app: App, principal: Principal, name: str, *, now: datetime | None = None
) -> TotpEnrolment:
    """First step of a TOTP enrolment, by the account's owner: a new secret, kept wrapped
    and pending until :func:`confirm_totp`; the ``otpauth://`` URI for an authenticator app.
    Refused while a confirmed TOTP exists (reset it first). Recorded
    ``identity.totp_enrolment_started``."""
    name = account_name(name)
    _require_owner(principal, name, "enrol its TOTP")
    at = _now(now)
    with app.read() as uow:
        account = uow.identities.account(name)
        current = uow.identities.totp(account.id)
    if account.kind is AccountKind.SERVICE:
        raise InputError("a service account has no TOTP", hint="it uses API tokens")
    if current is not None and current.confirmed_at is not None:
        raise InputError(
            f"{name!r} has a TOTP enrolled already",
            hint="reset it first (`affidavit user totp-reset`), then enrol the new device",
        )
    secret = totp.new_totp_secret()
    wrapped = _wrap_totp(app, account.id, secret)
    credential = TotpCredential(
        account_id=account.id,
        wrapped_secret=wrapped.ciphertext,
        kek_id=wrapped.kek_id,
        kek_version=wrapped.version,
        created_at=at,
    )
    with _acting(app, principal.name) as change:
        change.uow.identities.put_totp(credential)
        _record(
            change,
            principal,
            "identity.totp_enrolment_started",
            f"account:{name}",
            {"account_id": account.id, "kek_id": wrapped.kek_id, "kek_version": wrapped.version},
        )
    return TotpEnrolment(
        account=name, uri=totp.provisioning_uri(secret, account=name), secret=secret
    )


def confirm_totp(
    app: App, principal: Principal, name: str, code: str, *, now: datetime | None = None
) -> tuple[str, ...]:
    """Second step: a valid code from the authenticator confirms the pending enrolment.
    Returns the new one-time recovery codes, shown this once (only their SHA-256 is kept).
    A wrong code changes nothing (exit 2). Recorded ``identity.totp_enrolled``."""
    name = account_name(name)
    _require_owner(principal, name, "enrol its TOTP")
    at = _now(now)
    with app.read() as uow:
        account = uow.identities.account(name)
        pending = uow.identities.totp(account.id)
    if pending is None or pending.confirmed_at is not None:
        raise InputError(
            f"{name!r} has no TOTP enrolment waiting for a code",
            hint="start one: `affidavit user totp-enroll NAME`",
        )
    step = totp.verify_totp(_unwrap_totp(app, pending), code, at=at)
    if step is None:
        raise InputError(
            "the code does not match the new TOTP secret",
            hint="check the authenticator's clock and enter the code it shows now",
        )
    codes = tokens.new_recovery_codes()
    digests = [tokens.recovery_code_digest(c) for c in codes]
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        again = ids.totp(account.id)
        if again is None or again.created_at != pending.created_at or again.confirmed_at:
            raise InputError(
                f"the TOTP enrolment of {name!r} changed meanwhile",
                hint="start again: `affidavit user totp-enroll NAME`",
            )
        ids.confirm_totp(account.id, at=at, step=step)
        ids.replace_recovery_codes(account.id, [d for d in digests if d], at=at)
        _record(
            change,
            principal,
            "identity.totp_enrolled",
            f"account:{name}",
            {"account_id": account.id, "recovery_codes": len(codes)},
        )
    return codes


def reset_totp(app: App, principal: Principal, name: str, *, now: datetime | None = None) -> None:
    """Remove an account's TOTP and recovery codes (a lost or replaced device): by its owner
    or with ``account.manage``, in both cases with a fresh MFA check (an owner who lost the
    device asks an administrator). Recorded ``identity.totp_reset``."""
    name = account_name(name)
    authorize(principal, Permission.ACCOUNT_MANAGE, self_service_for=name)
    at = _now(now)
    require_fresh_mfa(principal, now=at)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        account = ids.account(name)
        if not ids.delete_totp(account.id):
            raise InputError(f"{name!r} has no TOTP to reset", hint="nothing to do")
        ids.replace_recovery_codes(account.id, [], at=at)
        _record(
            change, principal, "identity.totp_reset", f"account:{name}", {"account_id": account.id}
        )


# -- logins and failed-login throttling -------------------------------------------------------


def _locked(throttle: LoginThrottle, at: datetime) -> bool:
    return throttle.locked_until is not None and at < throttle.locked_until


def _after_failure(throttle: LoginThrottle, at: datetime) -> LoginThrottle:
    """The counter after one more failure at ``at``: the threshold reached locks for
    LOCKOUT_BASE doubled per earlier lockout (a day without failures forgets them)."""
    failures, lockouts = throttle.failures, throttle.lockouts
    if throttle.last_failure_at is not None and at - throttle.last_failure_at > LOCKOUT_MAX:
        failures, lockouts = 0, 0  # a day without failures forgets them
    failures += 1
    locked_until = None
    if failures >= LOCKOUT_THRESHOLD:
        locked_until = at + min(LOCKOUT_BASE * (2 ** min(lockouts, 16)), LOCKOUT_MAX)
        failures, lockouts = 0, lockouts + 1
    return LoginThrottle(
        key=throttle.key,
        failures=failures,
        lockouts=lockouts,
        last_failure_at=at,
        locked_until=locked_until,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _fail(
    app: App,
    account: Account | None,
    reason: str,
    *,
    client: ClientInfo | None,
    at: datetime,
    action: str,
    key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Count a failure and record it (one transaction), unless a lockout is in force.
    ``key``: the counter, when not the account's (or, with no account, ``*unknown*``);
    ``extra``: more details of the event."""
    if key is None:
        key = account.id if account is not None else UNKNOWN_ACCOUNT
    with _acting(app, ANONYMOUS, client) as change:
        ids = change.uow.identities
        throttle = ids.throttle(key)
        if _locked(throttle, at):
            return  # refused without a record: the lockout bounds what is written
        after = _after_failure(throttle, at)
        ids.put_throttle(after)
        details: dict[str, Any] = {**(extra or {}), "reason": reason, "failures": after.failures}
        if after.locked_until is not None:
            details["locked_until"] = after.locked_until.isoformat()
            details["lockout"] = after.lockouts
        if account is None:
            change.record(action, "identity:login", details)
        else:
            details["account_id"] = account.id
            change.record(action, f"account:{account.name}", details)


def login(
    app: App,
    name: str,
    password: str,
    totp_code: str | None = None,
    *,
    client: ClientInfo,
    now: datetime | None = None,
) -> SessionGrant:
    """Log a person in: password, then the TOTP code (or a one-time recovery code) when one
    is enrolled. Returns the new session, its secret (shown once) and the principal.

    Refused with :class:`AuthenticationFailed` (exit 3, one message for every cause) for an
    unknown name, a wrong password, a disabled or service account, a missing, wrong or
    replayed code, a used recovery code, or a lockout in force; every refusal but the last
    is counted and recorded ``identity.login_failed``. A success resets the count and is
    recorded ``identity.login``."""
    at = _now(now)
    try:
        wanted: str | None = account_name(name)
    except InputError:
        wanted = None
    with app.read() as uow:
        ids = uow.identities
        account = ids.find_account(wanted) if wanted is not None else None
        key = account.id if account is not None else UNKNOWN_ACCOUNT
        locked = _locked(ids.throttle(key), at)
        stored = ids.password_hash(account.id) if account is not None else None
        credential = ids.totp(account.id) if account is not None else None
        recovery = ids.unused_recovery_codes(account.id) if account is not None else []
    if locked:  # nothing written while locked, after the work of any refusal: a quick
        passwords.spend_verification(password)  # refusal would tell a name from its lock
        raise AuthenticationFailed(_REFUSED)
    if stored is None:
        passwords.spend_verification(password)
    password_ok = stored is not None and passwords.verify_password(stored, password)
    reason: str | None = None
    factor = _Factor(method=AuthMethod.PASSWORD)
    if account is None:
        reason = "unknown-account"
    elif not password_ok:
        reason = "password"
    elif account.disabled:
        reason = "disabled"
    elif credential is not None and credential.confirmed_at is not None:
        factor = _second_factor(app, credential, recovery, totp_code or "", at)
        reason = factor.refused
    if reason is not None or account is None:
        _fail(
            app,
            account,
            reason or "unknown-account",
            client=client,
            at=at,
            action="identity.login_failed",
        )
        raise AuthenticationFailed(_REFUSED)
    return _open_session(app, account, stored, password, factor, client=client, at=at)


@dataclass(frozen=True, slots=True)
class _Factor:
    """What the second factor of a login showed: the method it makes, the TOTP step or the
    recovery code it used, or why it was refused."""

    method: AuthMethod
    step: int | None = None
    recovery_id: int | None = None
    refused: str | None = None


def _second_factor(
    app: App,
    credential: TotpCredential,
    recovery: list[tuple[int, str]],
    code: str,
    at: datetime,
) -> _Factor:
    """Check a TOTP code (not replayed) or an unused recovery code."""
    code = code.strip()
    if not code:
        return _Factor(method=AuthMethod.PASSWORD, refused="totp-missing")
    if totp.looks_like_totp(code):
        step = totp.verify_totp(_unwrap_totp(app, credential), code, at=at)
        if step is None:
            return _Factor(method=AuthMethod.PASSWORD, refused="totp")
        if credential.last_step is not None and step <= credential.last_step:
            return _Factor(method=AuthMethod.PASSWORD, refused="totp-replayed")
        return _Factor(method=AuthMethod.PASSWORD_TOTP, step=step)
    digest = tokens.recovery_code_digest(code)
    if digest is None:
        return _Factor(method=AuthMethod.PASSWORD, refused="totp")
    matches = [i for i, stored in recovery if tokens.same_digest(stored, digest)]
    if not matches:
        return _Factor(method=AuthMethod.PASSWORD, refused="recovery-code")
    return _Factor(method=AuthMethod.PASSWORD_RECOVERY, recovery_id=matches[0])


def _open_session(
    app: App,
    account: Account,
    stored: str | None,
    password: str,
    factor: _Factor,
    *,
    client: ClientInfo,
    at: datetime,
) -> SessionGrant:
    """Record the successful login: re-check (inside the write transaction that serialises
    logins) that the code was not used meanwhile and no lockout began; open the session."""
    method, step, recovery_id = factor.method, factor.step, factor.recovery_id
    session_id = tokens.new_id()
    secret = tokens.new_bearer_secret(tokens.SESSION_PREFIX, session_id)
    mfa_at = at if method in (AuthMethod.PASSWORD_TOTP, AuthMethod.PASSWORD_RECOVERY) else None
    session = Session(
        id=session_id,
        account=account.name,
        method=method,
        created_at=at,
        last_seen_at=at,
        idle_expires_at=at + IDLE_TIMEOUT,
        absolute_expires_at=at + ABSOLUTE_TIMEOUT,
        mfa_at=mfa_at,
        client_address=client.address,
        client_agent=client.agent,
    )
    rehash = (
        passwords.hash_password(password)
        if stored is not None and passwords.needs_rehash(stored)
        else None
    )
    replayed = False
    principal: Principal | None = None
    with _acting(app, account.name, client) as change:
        ids = change.uow.identities
        if _locked(ids.throttle(account.id), at):
            raise AuthenticationFailed(_REFUSED)  # locked meanwhile: nothing written
        if step is not None:
            current = ids.totp(account.id)
            if current is None or (current.last_step is not None and step <= current.last_step):
                replayed = True
            else:
                ids.accept_step(account.id, step)
        if recovery_id is not None:
            if recovery_id not in {i for i, _ in ids.unused_recovery_codes(account.id)}:
                replayed = True
            else:
                ids.use_recovery_code(recovery_id, at=at)
        if not replayed:
            ids.put_throttle(LoginThrottle(key=account.id))
            if rehash is not None:
                ids.set_password_hash(account.id, rehash)
            ids.add_session(
                session, account_id=account.id, secret_sha256=tokens.secret_digest(secret)
            )
            details: dict[str, Any] = {
                "account_id": account.id,
                "session": session_id,
                "mfa": mfa_at is not None,
                "auth": method.value,
            }
            if recovery_id is not None:
                details["recovery_codes_left"] = len(ids.unused_recovery_codes(account.id))
            change.record("identity.login", f"account:{account.name}", details)
            principal = _principal(
                change.uow, account, method=method, mfa_at=mfa_at, session_id=session_id
            )
    if principal is None:  # a concurrent login used the same code first
        _fail(app, account, "totp-replayed", client=client, at=at, action="identity.login_failed")
        raise AuthenticationFailed(_REFUSED)
    return SessionGrant(session=session, secret=secret, principal=principal)


def authenticate_session(app: App, secret: str, *, now: datetime | None = None) -> Principal:
    """The principal of a session secret (one request): refused with
    :class:`AuthenticationFailed` when the secret is unknown or wrong, the session ended,
    idled past :data:`IDLE_TIMEOUT` or lived past :data:`ABSOLUTE_TIMEOUT`, or its account is
    disabled. Nothing is recorded in the ledger; the session's last use moves forward (at
    most once every :data:`TOUCH_EVERY`)."""
    at = _now(now)
    refused = AuthenticationFailed(
        "the session is not valid (expired, ended or unknown)", hint="log in again"
    )
    session_id = tokens.bearer_id(secret, tokens.SESSION_PREFIX)
    if session_id is None:
        raise refused
    with app.read() as uow:
        found = uow.identities.bearer_session(session_id)
        if found is None or not tokens.same_digest(
            found.secret_sha256, tokens.secret_digest(secret)
        ):
            raise refused
        session, account = found.held, found.account
        if not session.usable(at) or account.disabled:
            raise refused
        principal = _principal(
            uow,
            account,
            method=AuthMethod.SESSION,
            mfa_at=session.mfa_at,
            session_id=session.id,
            role_rows=found.roles,
        )
    if at - session.last_seen_at >= TOUCH_EVERY:
        with app.change() as change:  # no event: activity changes no state
            change.uow.identities.touch_session(
                session.id,
                at=at,
                idle_expires_at=min(at + IDLE_TIMEOUT, session.absolute_expires_at),
            )
    return principal


def logout(app: App, principal: Principal, *, now: datetime | None = None) -> None:
    """End the principal's session. Recorded ``identity.logout``."""
    if principal.session_id is None or principal.account_id is None:
        raise InputError("this identity has no session to end", hint="only a login has one")
    at = _now(now)
    with _acting(app, principal.name) as change:
        change.uow.identities.end_session(principal.session_id, at=at)
        _record(
            change,
            principal,
            "identity.logout",
            f"account:{principal.name}",
            {"account_id": principal.account_id, "session": principal.session_id},
        )


def step_up(
    app: App,
    principal: Principal,
    code: str,
    *,
    client: ClientInfo | None = None,
    now: datetime | None = None,
) -> Principal:
    """A fresh MFA check for a logged-in person: a current TOTP code (not replayed) moves
    the session's ``mfa_at`` to now; returns the principal with it. A wrong code is a failed
    login (counted, recorded ``identity.step_up_failed``, may lock the account)."""
    at = _now(now)
    if principal.session_id is None or principal.account_id is None:
        raise AccessDenied("only a logged-in person can confirm a TOTP code (step-up)")
    with app.read() as uow:
        account = uow.identities.account_by_id(principal.account_id)
        credential = uow.identities.totp(account.id)
        throttle = uow.identities.throttle(account.id)
    if credential is None or credential.confirmed_at is None:
        raise InputError(
            f"{account.name!r} has no TOTP enrolled",
            hint="enrol one first: `affidavit user totp-enroll NAME`",
        )
    if _locked(throttle, at) or account.disabled:
        raise AuthenticationFailed(_REFUSED)
    step = totp.verify_totp(_unwrap_totp(app, credential), code, at=at)
    reason = None
    if step is None:
        reason = "totp"
    elif credential.last_step is not None and step <= credential.last_step:
        reason = "totp-replayed"
    if reason is None:
        assert step is not None
        with _acting(app, principal.name, client) as change:
            ids = change.uow.identities
            current = ids.totp(account.id)
            if current is not None and (current.last_step is None or step > current.last_step):
                ids.accept_step(account.id, step)
                ids.set_session_mfa(principal.session_id, at=at)
                _record(
                    change,
                    principal,
                    "identity.mfa_verified",
                    f"account:{account.name}",
                    {"account_id": account.id, "session": principal.session_id},
                )
                return replace(principal, mfa_at=at)
        reason = "totp-replayed"
    _fail(app, account, reason, client=client, at=at, action="identity.step_up_failed")
    raise AuthenticationFailed(_REFUSED)


# -- single sign-on (OpenID Connect) -----------------------------------------------------------

OIDC_UNVERIFIED: Final = "*oidc*"
"""The throttle key shared by the OIDC refusals made before a provider vouched for anyone (an
unknown or replayed state, a code the provider refused, an ID token that fails its checks):
like unknown names at the password login, they add at most :data:`LOCKOUT_THRESHOLD` events
to the ledger per lockout period, whatever an attacker sends (the access log has every one)."""
_OIDC_REFUSED = "single sign-on refused: the OpenID identity is not linked to an enabled account"


def _oidc_key(issuer: str, subject: str) -> str:
    """The throttle key of an OpenID subject linked to no account (57 characters)."""
    return "oidc:" + tokens.secret_digest(f"{issuer}\x00{subject}")[:52]


def link_oidc(
    app: App,
    principal: Principal,
    name: str,
    *,
    issuer: str,
    subject: str,
    now: datetime | None = None,
) -> Account:
    """Link a person's account to an OpenID provider's subject ``(issuer, subject)``, so that
    the person can log in by single sign-on (``account.manage`` and a fresh MFA check). One
    subject maps to at most one account (the catalog refuses a second, :class:`AlreadyExists`);
    a service account is never linked (it authenticates with API tokens only); linking again
    replaces the account's subject. Recorded ``account.oidc_linked`` (with the previous link):
    a login by that subject counts only while the newest such event of the account names it."""
    authorize(principal, Permission.ACCOUNT_MANAGE)
    at = _now(now)
    require_fresh_mfa(principal, now=at)
    name = account_name(name)
    issuer, subject = oidc_issuer(issuer), oidc_subject(subject)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        account = ids.account(name)
        if is_service(change.uow, account):
            raise InputError(
                f"{name!r} is a service account: it authenticates with API tokens only",
                hint="link a person's account",
            )
        if account.disabled:
            raise InputError(
                f"the account {name!r} is disabled", hint="a disabled account never logs in again"
            )
        if (account.oidc_issuer, account.oidc_subject) == (issuer, subject):
            raise InputError(f"{name!r} is linked to that subject already", hint="nothing to do")
        ids.link_oidc(account.id, issuer=issuer, subject=subject)  # refuses a current link
        if any(  # and one the ledger ever gave another account
            other != account.id and (issuer, subject) in subjects
            for other, subjects in linked_subjects(change.uow).items()
        ):
            raise AlreadyExists(
                "that subject was linked to another account before: a subject stays one "
                "person's, so that relinking cannot make two people one (or one person two)",
                hint="link the account to a subject of its own",
            )
        previous = None
        if account.oidc_issuer is not None or account.oidc_subject is not None:
            previous = {"issuer": account.oidc_issuer, "subject": account.oidc_subject}
        _record(
            change,
            principal,
            "account.oidc_linked",
            f"account:{name}",
            {"account_id": account.id, "issuer": issuer, "subject": subject, "previous": previous},
        )
        return ids.account(name)


def _oidc_link_vouched(uow: UnitOfWork, account: Account) -> bool:
    """Whether the ledger's newest ``account.oidc_linked`` event of the account names the
    subject its catalog row holds (a link written into the catalog behind affidavit's back
    does not log anyone in)."""
    newest = None
    for event in read_events(uow.ledger, "account.oidc_linked"):
        if event.details.get("account_id") == account.id:
            newest = event
    return (
        newest is not None
        and newest.details.get("issuer") == account.oidc_issuer
        and newest.details.get("subject") == account.oidc_subject
    )


def record_oidc_refusal(
    app: App,
    reason: str,
    *,
    client: ClientInfo | None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Record a single sign-on refused before the provider vouched for anyone (``reason``:
    ``oidc-state``, ``oidc-binding``, ``oidc-provider-error``, ``oidc-exchange``,
    ``oidc-token``, ...) as ``identity.login_failed``, counted under :data:`OIDC_UNVERIFIED`."""
    _fail(
        app,
        None,
        reason,
        client=client,
        at=_now(now),
        action="identity.login_failed",
        key=OIDC_UNVERIFIED,
        extra={**(details or {}), "auth": AuthMethod.OIDC.value},
    )


def oidc_account(
    app: App, who: OidcIdentity, *, client: ClientInfo, now: datetime | None = None
) -> Account:
    """The enabled person's account linked to the subject an OpenID provider vouched for.
    Refused with :class:`AuthenticationFailed` (one message) when no account is linked to it
    (there is no account created on the fly), when the ledger does not vouch for the link,
    when the account is disabled or a service account; every refusal is recorded
    ``identity.login_failed`` with the issuer and subject (an unlinked subject is counted
    under its own key, the others under the account)."""
    at = _now(now)
    with app.read() as uow:
        found = uow.identities.accounts_by_oidc(who.issuer, who.subject)
        account = found[0] if len(found) == 1 else None
        reason = None
        if account is None:
            reason = "oidc-unlinked" if not found else "oidc-ambiguous"
        elif not _oidc_link_vouched(uow, account):
            reason = "oidc-link-unvouched"
        elif account.disabled:
            reason = "disabled"
        elif is_service(uow, account):
            reason = "service-account"
    if reason is None and account is not None:
        return account
    extra = {"auth": AuthMethod.OIDC.value, "issuer": who.issuer, "subject": who.subject}
    key = _oidc_key(who.issuer, who.subject) if account is None else None
    _fail(
        app, account, reason or "oidc-unlinked", client=client, at=at,
        action="identity.login_failed", key=key, extra=extra,
    )  # fmt: skip
    raise AuthenticationFailed(
        f"{_OIDC_REFUSED} (issuer {who.issuer}, subject {who.subject})",
        hint="an administrator links it: `affidavit user link-oidc NAME --issuer ISSUER "
        "--subject SUBJECT --as ADMIN` (docs/identities.md)",
    )


def open_oidc_session(
    app: App, who: OidcIdentity, *, client: ClientInfo, now: datetime | None = None
) -> SessionGrant:
    """Log a person in by single sign-on: the account linked to ``who``
    (:func:`oidc_account`, refusals recorded), a new session with the method ``oidc`` whose
    MFA check is the provider's authentication time when the provider showed MFA
    (``who.mfa``), else none. Recorded ``identity.login`` with the issuer and subject. The
    password lockout does not apply (no password is tried), and a success does not reset
    the account's failed-password count."""
    at = _now(now)
    account = oidc_account(app, who, client=client, now=at)
    session_id = tokens.new_id()
    secret = tokens.new_bearer_secret(tokens.SESSION_PREFIX, session_id)
    mfa_at = min(who.authenticated_at, at) if who.mfa else None
    session = Session(
        id=session_id,
        account=account.name,
        method=AuthMethod.OIDC,
        created_at=at,
        last_seen_at=at,
        idle_expires_at=at + IDLE_TIMEOUT,
        absolute_expires_at=at + ABSOLUTE_TIMEOUT,
        mfa_at=mfa_at,
        client_address=client.address,
        client_agent=client.agent,
    )
    with _acting(app, account.name, client) as change:
        ids = change.uow.identities
        current = ids.account_by_id(account.id)
        if current.disabled or (current.oidc_issuer, current.oidc_subject) != (
            who.issuer,
            who.subject,
        ):  # disabled or relinked meanwhile
            raise AuthenticationFailed(_OIDC_REFUSED)
        ids.add_session(session, account_id=account.id, secret_sha256=tokens.secret_digest(secret))
        change.record(
            "identity.login",
            f"account:{account.name}",
            {
                "account_id": account.id,
                "session": session_id,
                "mfa": mfa_at is not None,
                "auth": AuthMethod.OIDC.value,
                "issuer": who.issuer,
                "subject": who.subject,
                "acr": who.acr,
                "amr": list(who.amr),
                "authenticated_at": who.authenticated_at.isoformat(),
            },
        )
        principal = _principal(
            change.uow, account, method=AuthMethod.OIDC, mfa_at=mfa_at, session_id=session_id
        )
    return SessionGrant(session=session, secret=secret, principal=principal)


# -- API tokens (service accounts) -------------------------------------------------------------


def create_token(
    app: App,
    principal: Principal,
    account: str,
    scopes: frozenset[Permission] | set[Permission],
    expires_in: timedelta,
    *,
    now: datetime | None = None,
) -> IssuedToken:
    """Issue an API token to a service account (``token.manage`` and a fresh MFA check).
    ``scopes`` must be a non-empty subset of what the account's roles grant (never an
    approving permission), ``expires_in`` at most :data:`TOKEN_MAX_LIFETIME`. The secret is
    returned once; the catalog keeps its SHA-256. Recorded ``token.created``."""
    authorize(principal, Permission.TOKEN_MANAGE)
    at = _now(now)
    require_fresh_mfa(principal, now=at)
    name = account_name(account)
    wanted = frozenset(scopes)
    if not wanted:
        raise InputError("a token needs at least one scope", hint="--scope PERMISSION")
    if expires_in <= timedelta(0) or expires_in > TOKEN_MAX_LIFETIME:
        raise InputError(
            f"a token lives between a moment and {TOKEN_MAX_LIFETIME.days} days",
            hint=f"--expires-in DAYS (at most {TOKEN_MAX_LIFETIME.days})",
        )
    token_id = tokens.new_id()
    secret = tokens.new_bearer_secret(tokens.TOKEN_PREFIX, token_id)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        target = ids.account(name)
        if target.kind is not AccountKind.SERVICE:
            raise InputError(
                f"{name!r} is a person: API tokens are for service accounts",
                hint="create one: `affidavit user add NAME --service`",
            )
        if target.disabled:
            raise InputError(
                f"the account {name!r} is disabled", hint="a disabled account gets no new token"
            )
        approving = wanted & APPROVING
        if approving:
            raise AccessDenied(
                "a token can never approve: " + ", ".join(sorted(p.value for p in approving)),
                hint="approvals are made by people, with a fresh MFA check",
            )
        allowed = permissions_of(vouched_roles(change.uow, target))
        beyond = wanted - allowed
        if beyond:
            raise AccessDenied(
                f"{name!r} does not hold " + ", ".join(sorted(p.value for p in beyond)),
                hint="a token's scopes are a subset of its account's roles: grant a role first",
            )
        token = ApiToken(
            id=token_id,
            account=name,
            scopes=wanted,
            created_at=at,
            created_by=principal.name,
            expires_at=at + expires_in,
        )
        ids.add_token(token, account_id=target.id, secret_sha256=tokens.secret_digest(secret))
        _record(
            change,
            principal,
            "token.created",
            f"account:{name}",
            {
                "account_id": target.id,
                "token": token_id,
                "scopes": sorted(p.value for p in wanted),
                "expires_at": token.expires_at.isoformat(),
            },
        )
    return IssuedToken(token=token, secret=secret)


def authenticate_token(app: App, secret: str, *, now: datetime | None = None) -> Principal:
    """The principal of an API token (one request): its account's roles cut down to the
    token's scopes. Refused with :class:`AuthenticationFailed` when the token is unknown,
    wrong, revoked or expired, or its account is disabled. Nothing is recorded in the ledger;
    the token's last use moves forward (at most once every :data:`TOUCH_EVERY`)."""
    at = _now(now)
    refused = AuthenticationFailed(
        "the API token is not valid (expired, revoked or unknown)",
        hint="ask an administrator for a new token",
    )
    token_id = tokens.bearer_id(secret, tokens.TOKEN_PREFIX)
    if token_id is None:
        raise refused
    with app.read() as uow:
        found = uow.identities.bearer_token(token_id)
        if found is None or not tokens.same_digest(
            found.secret_sha256, tokens.secret_digest(secret)
        ):
            raise refused
        token, account = found.held, found.account
        if not token.usable(at) or account.disabled or account.kind is not AccountKind.SERVICE:
            raise refused
        principal = _principal(
            uow,
            account,
            method=AuthMethod.TOKEN,
            mfa_at=None,
            token_id=token.id,
            scopes=token.scopes,
            role_rows=found.roles,
        )
    if token.last_used_at is None or at - token.last_used_at >= TOUCH_EVERY:
        with app.change() as change:  # no event: a use changes no state
            change.uow.identities.touch_token(token.id, at=at)
    return principal


def authenticate(app: App, secret: str, *, now: datetime | None = None) -> Principal:
    """The principal of a bearer secret of either kind, told apart by its prefix: an API
    token (``afv_``, :func:`authenticate_token`) or a session secret (``afs_`` or anything
    else, :func:`authenticate_session`). Raises :class:`AuthenticationFailed`."""
    if tokens.bearer_id(secret, tokens.TOKEN_PREFIX) is not None:
        return authenticate_token(app, secret, now=now)
    return authenticate_session(app, secret, now=now)


def csrf_token(session_secret: str) -> str:
    """The anti-CSRF token of a login session: a digest of its secret under its own domain
    tag, so it reveals nothing of the secret. A browser page gets it with the login and
    sends it back in a header on every state-changing request made with the session cookie
    (which a cross-site request cannot read or forge)."""
    return tokens.secret_digest(_CSRF_TAG + session_secret)


def csrf_matches(session_secret: str, presented: str) -> bool:
    """Whether ``presented`` is the anti-CSRF token of the session (constant time)."""
    return tokens.same_digest(csrf_token(session_secret), presented)


def revoke_token(
    app: App, principal: Principal, token_id: str, *, now: datetime | None = None
) -> ApiToken:
    """Revoke an API token (``token.manage``). Recorded ``token.revoked``."""
    authorize(principal, Permission.TOKEN_MANAGE)
    at = _now(now)
    with _acting(app, principal.name) as change:
        ids = change.uow.identities
        found = ids.token(token_id.strip())
        if found is None:
            raise NotFound(f"no token {token_id!r}", hint="`affidavit token list` shows them")
        token, account_id, _ = found
        if token.revoked_at is not None:
            raise InputError(
                f"the token {token.id} is revoked already", hint="`affidavit token list` shows it"
            )
        ids.revoke_token(token.id, at=at, by=principal.name)
        _record(
            change,
            principal,
            "token.revoked",
            f"account:{token.account}",
            {"account_id": account_id, "token": token.id},
        )
        found = ids.token(token.id)
        assert found is not None
        return found[0]


def list_tokens(app: App, principal: Principal, account: str | None = None) -> list[ApiToken]:
    """API tokens (of one account), oldest first, never their secrets (``account.read``)."""
    authorize(principal, Permission.ACCOUNT_READ)
    with app.read() as uow:
        account_id = None
        if account is not None:
            account_id = uow.identities.account(account_name(account)).id
        return uow.identities.tokens(account_id)
