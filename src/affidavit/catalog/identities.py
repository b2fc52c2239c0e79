"""Repository of identities: accounts, role grants, API tokens, login sessions, recovery
codes, TOTP credentials and failed-login counters.

Like every repository it works inside one unit of work and never commits; the service that
changes an identity appends its ledger event in the same transaction. Rows are read through
:mod:`affidavit.catalog.rows`, so that a value affidavit never writes (an unknown kind, role or
permission, a scope list that is not JSON) raises
:class:`~affidavit.errors.CatalogRowDamaged`. Secrets never pass through here in the clear:
the callers hand over hashes, digests and wrapped secrets.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as OrmSession

from affidavit.catalog.rows import aware, column, json_list, optional
from affidavit.catalog.schema import (
    AccountRow,
    ApiTokenRow,
    LoginFailureRow,
    LoginSessionRow,
    RecoveryCodeRow,
    RoleGrantRow,
    TotpCredentialRow,
)
from affidavit.errors import AlreadyExists, NotFound
from affidavit.models.identity import (
    Account,
    AccountKind,
    ApiToken,
    AuthMethod,
    LoginThrottle,
    RoleGrant,
    Session,
    TotpCredential,
)
from affidavit.models.permissions import Permission, Role

_Held = TypeVar("_Held", Session, ApiToken)


@dataclass(frozen=True, slots=True)
class Bearer(Generic[_Held]):
    """A session or an API token with what authenticating it needs (one statement)."""

    held: _Held
    secret_sha256: str
    account: Account
    roles: frozenset[Role]  # the account's role rows, before the ledger vouches for them


def _scopes(value: Any) -> frozenset[Permission]:
    return frozenset(Permission(p) for p in json_list(value))


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("not bytes")
    return bytes(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


class IdentityRepository:
    """Accounts and everything that authenticates or authorizes them."""

    def __init__(self, session: OrmSession) -> None:
        self._s = session

    # -- accounts -------------------------------------------------------------------------

    def count_accounts(self) -> int:
        """How many accounts exist (disabled ones included)."""
        return int(self._s.scalar(select(func.count()).select_from(AccountRow)) or 0)

    def add_account(self, account: Account, *, password_hash: str | None) -> None:
        """Insert ``account``; raise :class:`AlreadyExists` when the name is taken."""
        taken = self._s.scalars(select(AccountRow.id).where(AccountRow.name == account.name))
        if taken.first() is not None:
            raise AlreadyExists(
                f"an account named {account.name!r} already exists", hint="pick another name"
            )
        self._s.add(
            AccountRow(
                id=account.id,
                name=account.name,
                kind=account.kind.value,
                display_name=account.display_name,
                email=account.email,
                password_hash=password_hash,
                created_at=account.created_at,
                created_by=account.created_by,
                oidc_issuer=account.oidc_issuer,
                oidc_subject=account.oidc_subject,
            )
        )
        self._s.flush()

    def account(self, name: str) -> Account:
        """The account called ``name``; raises :class:`NotFound`."""
        return self._account(self._account_row(name))

    def find_account(self, name: str) -> Account | None:
        """The account called ``name``, or None."""
        row = self._s.scalars(select(AccountRow).where(AccountRow.name == name)).one_or_none()
        return None if row is None else self._account(row)

    def account_by_id(self, account_id: str) -> Account:
        """The account with id ``account_id``; raises :class:`NotFound`."""
        row = self._s.get(AccountRow, account_id)
        if row is None:
            raise NotFound(f"no account with id {account_id!r}")
        return self._account(row)

    def accounts(self) -> builtins.list[Account]:
        """Every account, by name."""
        rows = list(self._s.scalars(select(AccountRow).order_by(AccountRow.name)))
        totp = {
            r.account_id: r.confirmed_at is not None
            for r in self._s.scalars(select(TotpCredentialRow))
        }
        locks = {r.key: r for r in self._s.scalars(select(LoginFailureRow))}
        return [_account(row, totp=totp.get(row.id, False), lock=locks.get(row.id)) for row in rows]

    def password_hash(self, account_id: str) -> str | None:
        """The stored argon2id hash of the account (None: it has no password)."""
        row = self._s.get(AccountRow, account_id)
        if row is None:
            raise NotFound(f"no account with id {account_id!r}")
        return column(row, "password_hash", optional(_text_value))

    def set_password_hash(self, account_id: str, password_hash: str) -> None:
        """Replace the account's password hash."""
        row = self._row(account_id)
        row.password_hash = password_hash
        self._s.flush()

    def disable_account(self, account_id: str, *, at: datetime, reason: str) -> None:
        """Disable the account for good."""
        row = self._row(account_id)
        row.disabled_at, row.disabled_reason = at, reason
        self._s.flush()

    def accounts_by_oidc(self, issuer: str, subject: str) -> builtins.list[Account]:
        """The accounts linked to the OpenID subject ``(issuer, subject)``: one, or none (more
        than one only in a catalog edited behind affidavit's back)."""
        rows = self._s.scalars(
            select(AccountRow).where(
                AccountRow.oidc_issuer == issuer, AccountRow.oidc_subject == subject
            )
        )
        return [self._account(row) for row in rows]

    def link_oidc(self, account_id: str, *, issuer: str, subject: str) -> None:
        """Link the account to the OpenID subject ``(issuer, subject)``; raise
        :class:`AlreadyExists` when another account holds it. One subject maps to at most one
        account: the check runs in the caller's write transaction, which every writer takes
        in turn (``BEGIN IMMEDIATE``; on PostgreSQL the ledger's table lock), so two links of
        the same subject cannot both pass it."""
        row = self._row(account_id)
        holders = self._s.scalars(
            select(AccountRow.name).where(
                AccountRow.oidc_issuer == issuer,
                AccountRow.oidc_subject == subject,
                AccountRow.id != account_id,
            )
        ).all()
        if holders:
            raise AlreadyExists(
                f"the OpenID subject {subject!r} of {issuer} is linked to {holders[0]!r} already",
                hint=f"one subject maps to one account: if linking {holders[0]!r} was the "
                "mistake, link it to its own subject first",
            )
        row.oidc_issuer, row.oidc_subject = issuer, subject
        self._s.flush()

    def _row(self, account_id: str) -> AccountRow:
        row = self._s.get(AccountRow, account_id)
        if row is None:
            raise NotFound(f"no account with id {account_id!r}")
        return row

    def _account_row(self, name: str) -> AccountRow:
        row = self._s.scalars(select(AccountRow).where(AccountRow.name == name)).one_or_none()
        if row is None:
            raise NotFound(
                f"no account named {name!r}", hint="`affidavit user list` shows the accounts"
            )
        return row

    def _account(self, row: AccountRow) -> Account:
        totp = self._s.get(TotpCredentialRow, row.id)
        lock = self._s.get(LoginFailureRow, row.id)
        return _account(row, totp=totp is not None and totp.confirmed_at is not None, lock=lock)

    # -- role grants ----------------------------------------------------------------------

    def add_grant(self, account_id: str, role: Role, *, at: datetime, by: str, seq: int) -> None:
        """Record that the account holds ``role`` (granted by the event at ``seq``)."""
        held = self._s.scalars(
            select(RoleGrantRow.id).where(
                RoleGrantRow.account_id == account_id, RoleGrantRow.role == role.value
            )
        ).first()
        if held is not None:
            raise AlreadyExists(f"the account already holds the role {role.value}")
        self._s.add(
            RoleGrantRow(account_id=account_id, role=role.value, granted_at=at, granted_by=by,
                         seq=seq)
        )  # fmt: skip
        self._s.flush()

    def remove_grant(self, account_id: str, role: Role) -> bool:
        """Remove the grant; False when the account did not hold the role."""
        done = self._s.execute(
            delete(RoleGrantRow).where(
                RoleGrantRow.account_id == account_id, RoleGrantRow.role == role.value
            )
        )
        self._s.flush()
        return bool(getattr(done, "rowcount", 0))

    def roles(self, account_id: str) -> frozenset[Role]:
        """The roles the account holds."""
        rows = self._s.scalars(select(RoleGrantRow).where(RoleGrantRow.account_id == account_id))
        return frozenset(column(r, "role", Role) for r in rows)

    def grants(self) -> builtins.list[RoleGrant]:
        """Every grant, by account name then role."""
        names = {r.id: r.name for r in self._s.scalars(select(AccountRow))}
        rows = self._s.scalars(select(RoleGrantRow).order_by(RoleGrantRow.id))
        out = [
            RoleGrant(
                account=names.get(r.account_id, r.account_id),
                role=column(r, "role", Role),
                granted_at=column(r, "granted_at", aware),
                granted_by=r.granted_by,
                seq=r.seq,
            )
            for r in rows
        ]
        return sorted(out, key=lambda g: (g.account, g.role.value))

    def holders(self, role: Role) -> builtins.list[str]:
        """The ids of the enabled accounts that hold ``role``."""
        rows = self._s.execute(
            select(RoleGrantRow.account_id)
            .join(AccountRow, AccountRow.id == RoleGrantRow.account_id)
            .where(RoleGrantRow.role == role.value, AccountRow.disabled_at.is_(None))
        )
        return [account_id for (account_id,) in rows]

    # -- TOTP and recovery codes ----------------------------------------------------------

    def totp(self, account_id: str) -> TotpCredential | None:
        """The account's TOTP credential (confirmed or pending), or None."""
        row = self._s.get(TotpCredentialRow, account_id)
        if row is None:
            return None
        return TotpCredential(
            account_id=row.account_id,
            wrapped_secret=column(row, "wrapped_secret", _bytes),
            kek_id=row.kek_id,
            kek_version=column(row, "kek_version", _int),
            created_at=column(row, "created_at", aware),
            confirmed_at=column(row, "confirmed_at", optional(aware)),
            last_step=column(row, "last_step", optional(_int)),
        )

    def totp_wrapped_by(self, kek_id: str) -> builtins.list[TotpCredential]:
        """Every TOTP credential wrapped by a version of the key ``kek_id``."""
        rows = self._s.scalars(
            select(TotpCredentialRow.account_id).where(TotpCredentialRow.kek_id == kek_id)
        )
        found = [self.totp(account_id) for account_id in rows.all()]
        return [credential for credential in found if credential is not None]

    def rewrap_totp(
        self, account_id: str, *, wrapped_secret: bytes, kek_id: str, kek_version: int
    ) -> None:
        """Replace the wrapped secret of the account's credential (a key rotation)."""
        row = self._totp_row(account_id)
        row.wrapped_secret, row.kek_id, row.kek_version = wrapped_secret, kek_id, kek_version
        self._s.flush()

    def put_totp(self, credential: TotpCredential) -> None:
        """Store a (pending) credential, replacing any the account had."""
        self.delete_totp(credential.account_id)
        self._s.add(
            TotpCredentialRow(
                account_id=credential.account_id,
                wrapped_secret=credential.wrapped_secret,
                kek_id=credential.kek_id,
                kek_version=credential.kek_version,
                created_at=credential.created_at,
                confirmed_at=credential.confirmed_at,
                last_step=credential.last_step,
            )
        )
        self._s.flush()

    def confirm_totp(self, account_id: str, *, at: datetime, step: int) -> None:
        """Mark the pending credential confirmed at ``at`` with its first accepted step."""
        row = self._totp_row(account_id)
        row.confirmed_at, row.last_step = at, step
        self._s.flush()

    def accept_step(self, account_id: str, step: int) -> None:
        """Record ``step`` as the newest accepted time step."""
        row = self._totp_row(account_id)
        row.last_step = step
        self._s.flush()

    def delete_totp(self, account_id: str) -> bool:
        """Remove the account's credential; False when it had none."""
        row = self._s.get(TotpCredentialRow, account_id)
        if row is None:
            return False
        self._s.delete(row)
        self._s.flush()
        return True

    def _totp_row(self, account_id: str) -> TotpCredentialRow:
        row = self._s.get(TotpCredentialRow, account_id)
        if row is None:
            raise NotFound("the account has no TOTP credential")
        return row

    def replace_recovery_codes(
        self, account_id: str, digests: Iterable[str], *, at: datetime
    ) -> None:
        """Drop the account's recovery codes and store new ones (their SHA-256)."""
        self._s.execute(delete(RecoveryCodeRow).where(RecoveryCodeRow.account_id == account_id))
        for digest in digests:
            self._s.add(RecoveryCodeRow(account_id=account_id, code_sha256=digest, created_at=at))
        self._s.flush()

    def unused_recovery_codes(self, account_id: str) -> builtins.list[tuple[int, str]]:
        """``(row id, SHA-256)`` of the account's unused recovery codes."""
        rows = self._s.scalars(
            select(RecoveryCodeRow).where(
                RecoveryCodeRow.account_id == account_id, RecoveryCodeRow.used_at.is_(None)
            )
        )
        return [(r.id, r.code_sha256) for r in rows]

    def use_recovery_code(self, code_id: int, *, at: datetime) -> None:
        """Mark a recovery code used."""
        row = self._s.get(RecoveryCodeRow, code_id)
        if row is None:
            raise NotFound(f"no recovery code {code_id}")
        row.used_at = at
        self._s.flush()

    # -- failed logins --------------------------------------------------------------------

    def throttle(self, key: str) -> LoginThrottle:
        """The failed-login counter of ``key`` (zero when none was kept)."""
        row = self._s.get(LoginFailureRow, key)
        if row is None:
            return LoginThrottle(key=key)
        return LoginThrottle(
            key=key,
            failures=column(row, "failures", _int),
            lockouts=column(row, "lockouts", _int),
            last_failure_at=column(row, "last_failure_at", optional(aware)),
            locked_until=column(row, "locked_until", optional(aware)),
        )

    def put_throttle(self, throttle: LoginThrottle) -> None:
        """Store the counter (a zero counter removes the row)."""
        row = self._s.get(LoginFailureRow, throttle.key)
        if throttle.failures == 0 and throttle.lockouts == 0 and throttle.locked_until is None:
            if row is not None:
                self._s.delete(row)
                self._s.flush()
            return
        if row is None:
            row = LoginFailureRow(key=throttle.key)
            self._s.add(row)
        row.failures, row.lockouts = throttle.failures, throttle.lockouts
        row.last_failure_at, row.locked_until = throttle.last_failure_at, throttle.locked_until
        self._s.flush()

    # -- API tokens -----------------------------------------------------------------------

    def add_token(self, token: ApiToken, *, account_id: str, secret_sha256: str) -> None:
        """Store a new token (its secret's SHA-256 only)."""
        self._s.add(
            ApiTokenRow(
                id=token.id,
                account_id=account_id,
                secret_sha256=secret_sha256,
                scopes=json.dumps(sorted(p.value for p in token.scopes)),
                created_at=token.created_at,
                created_by=token.created_by,
                expires_at=token.expires_at,
            )
        )
        self._s.flush()

    def token(self, token_id: str) -> tuple[ApiToken, str, str] | None:
        """``(token, account id, secret SHA-256)``, or None."""
        row = self._s.get(ApiTokenRow, token_id)
        if row is None:
            return None
        return self._token(row), row.account_id, row.secret_sha256

    def tokens(self, account_id: str | None = None) -> builtins.list[ApiToken]:
        """Tokens (of one account), oldest first."""
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id)
        if account_id is not None:
            query = query.where(ApiTokenRow.account_id == account_id)
        names = {r.id: r.name for r in self._s.scalars(select(AccountRow))}
        return [self._token(row, names) for row in self._s.scalars(query)]

    def revoke_token(self, token_id: str, *, at: datetime, by: str) -> None:
        """Revoke the token."""
        row = self._s.get(ApiTokenRow, token_id)
        if row is None:
            raise NotFound(f"no token {token_id!r}", hint="`affidavit token list` shows them")
        row.revoked_at, row.revoked_by = at, by
        self._s.flush()

    def touch_token(self, token_id: str, *, at: datetime) -> None:
        """Record a use of the token."""
        row = self._s.get(ApiTokenRow, token_id)
        if row is not None:
            row.last_used_at = at
            self._s.flush()

    def _token(self, row: ApiTokenRow, names: dict[str, str] | None = None) -> ApiToken:
        if names is None:
            account = self._s.get(AccountRow, row.account_id)
            name = account.name if account is not None else row.account_id
        else:
            name = names.get(row.account_id, row.account_id)
        return ApiToken(
            id=row.id,
            account=name,
            scopes=column(row, "scopes", _scopes),
            created_at=column(row, "created_at", aware),
            created_by=row.created_by,
            expires_at=column(row, "expires_at", aware),
            revoked_at=column(row, "revoked_at", optional(aware)),
            revoked_by=row.revoked_by,
            last_used_at=column(row, "last_used_at", optional(aware)),
        )

    # -- login sessions -------------------------------------------------------------------

    def add_session(self, session: Session, *, account_id: str, secret_sha256: str) -> None:
        """Store a new session (its secret's SHA-256 only)."""
        self._s.add(
            LoginSessionRow(
                id=session.id,
                account_id=account_id,
                secret_sha256=secret_sha256,
                method=session.method.value,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                idle_expires_at=session.idle_expires_at,
                absolute_expires_at=session.absolute_expires_at,
                mfa_at=session.mfa_at,
                client_address=session.client_address,
                client_agent=session.client_agent,
            )
        )
        self._s.flush()

    def session(self, session_id: str) -> tuple[Session, str, str] | None:
        """``(session, account id, secret SHA-256)``, or None."""
        row = self._s.get(LoginSessionRow, session_id)
        if row is None:
            return None
        account = self._s.get(AccountRow, row.account_id)
        name = account.name if account is not None else row.account_id
        value = Session(
            id=row.id,
            account=name,
            method=column(row, "method", AuthMethod),
            created_at=column(row, "created_at", aware),
            last_seen_at=column(row, "last_seen_at", aware),
            idle_expires_at=column(row, "idle_expires_at", aware),
            absolute_expires_at=column(row, "absolute_expires_at", aware),
            mfa_at=column(row, "mfa_at", optional(aware)),
            ended_at=column(row, "ended_at", optional(aware)),
            client_address=row.client_address,
            client_agent=row.client_agent,
        )
        return value, row.account_id, row.secret_sha256

    def touch_session(self, session_id: str, *, at: datetime, idle_expires_at: datetime) -> None:
        """Record activity on the session (moves its idle expiry)."""
        row = self._session_row(session_id)
        row.last_seen_at, row.idle_expires_at = at, idle_expires_at
        self._s.flush()

    def set_session_mfa(self, session_id: str, *, at: datetime) -> None:
        """Record a passed MFA check (step-up) on the session."""
        row = self._session_row(session_id)
        row.mfa_at = at
        self._s.flush()

    def end_session(self, session_id: str, *, at: datetime) -> None:
        """End the session (logout)."""
        row = self._session_row(session_id)
        if row.ended_at is None:
            row.ended_at = at
            self._s.flush()

    def end_sessions(self, account_id: str, *, at: datetime, keep: str | None = None) -> int:
        """End every open session of the account but ``keep``; return how many."""
        rows = self._s.scalars(
            select(LoginSessionRow).where(
                LoginSessionRow.account_id == account_id, LoginSessionRow.ended_at.is_(None)
            )
        )
        ended = 0
        for row in rows:
            if row.id != keep:
                row.ended_at = at
                ended += 1
        self._s.flush()
        return ended

    # -- a bearer's facts, in one statement ------------------------------------------------

    def bearer_session(self, session_id: str) -> Bearer[Session] | None:
        """What authenticating a session secret needs, read in one statement: the session,
        its secret's SHA-256, its account (with TOTP and lockout) and the account's role
        rows; None when there is no such session."""
        found = self._bearer(LoginSessionRow, session_id)
        if found is None:
            return None
        row, account, roles = found
        session = Session(
            id=row.id,
            account=account.name,
            method=column(row, "method", AuthMethod),
            created_at=column(row, "created_at", aware),
            last_seen_at=column(row, "last_seen_at", aware),
            idle_expires_at=column(row, "idle_expires_at", aware),
            absolute_expires_at=column(row, "absolute_expires_at", aware),
            mfa_at=column(row, "mfa_at", optional(aware)),
            ended_at=column(row, "ended_at", optional(aware)),
            client_address=row.client_address,
            client_agent=row.client_agent,
        )
        return Bearer(held=session, secret_sha256=row.secret_sha256, account=account, roles=roles)

    def bearer_token(self, token_id: str) -> Bearer[ApiToken] | None:
        """:meth:`bearer_session` for an API token."""
        found = self._bearer(ApiTokenRow, token_id)
        if found is None:
            return None
        row, account, roles = found
        token = self._token(row, {account.id: account.name})
        return Bearer(held=token, secret_sha256=row.secret_sha256, account=account, roles=roles)

    def _bearer(
        self, table: type[LoginSessionRow] | type[ApiTokenRow], key: str
    ) -> tuple[Any, Account, frozenset[Role]] | None:
        query = (
            select(table, AccountRow, TotpCredentialRow.confirmed_at, LoginFailureRow,
                   RoleGrantRow)
            .join(AccountRow, AccountRow.id == table.account_id)
            .outerjoin(TotpCredentialRow, TotpCredentialRow.account_id == AccountRow.id)
            .outerjoin(LoginFailureRow, LoginFailureRow.key == AccountRow.id)
            .outerjoin(RoleGrantRow, RoleGrantRow.account_id == AccountRow.id)
            .where(table.id == key)
        )  # fmt: skip
        rows = self._s.execute(query).all()
        if not rows:
            return None
        held, account_row, confirmed, lock, _ = rows[0]
        account = _account(account_row, totp=confirmed is not None, lock=lock)
        roles = frozenset(column(r[4], "role", Role) for r in rows if r[4] is not None)
        return held, account, roles

    def _session_row(self, session_id: str) -> LoginSessionRow:
        row = self._s.get(LoginSessionRow, session_id)
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return row


def _text_value(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _account(row: AccountRow, *, totp: bool, lock: LoginFailureRow | None) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        kind=column(row, "kind", AccountKind),
        created_at=column(row, "created_at", aware),
        created_by=row.created_by,
        display_name=row.display_name,
        email=row.email,
        disabled_at=column(row, "disabled_at", optional(aware)),
        disabled_reason=row.disabled_reason,
        has_password=row.password_hash is not None,
        totp_enrolled=totp,
        oidc_issuer=row.oidc_issuer,
        oidc_subject=row.oidc_subject,
        locked_until=None if lock is None else column(lock, "locked_until", optional(aware)),
    )
