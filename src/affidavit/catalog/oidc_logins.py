"""Repository of single sign-on logins under way (table ``oidc_logins``).

Each row is a key, a sealed blob (a secret wrapped by a key-encryption key: the service
made it and alone can open it) and its creation time. The service takes a row out in a
writer's transaction, so that two of the server's processes never both use one login.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as OrmSession

from affidavit.catalog.rows import aware
from affidavit.catalog.schema import OidcLoginRow


@dataclass(frozen=True, slots=True)
class StoredLogin:
    """A row as stored: the wrapping key's id and version, the sealed bytes, the time."""

    kek_id: str
    kek_version: int
    sealed: bytes
    created_at: datetime


class OidcLoginRepository:
    """Logins under way, by key (see :class:`~affidavit.catalog.schema.OidcLoginRow`)."""

    def __init__(self, session: OrmSession) -> None:
        self._s = session

    def put(self, key: str, stored: StoredLogin) -> None:
        """Insert or replace the row of ``key``."""
        row = self._s.get(OidcLoginRow, key)
        if row is None:
            row = OidcLoginRow(key=key)
            self._s.add(row)
        row.kek_id, row.kek_version = stored.kek_id, stored.kek_version
        row.sealed, row.created_at = stored.sealed, stored.created_at
        self._s.flush()

    def get(self, key: str) -> StoredLogin | None:
        """The row of ``key``, or None."""
        row = self._s.get(OidcLoginRow, key)
        if row is None:
            return None
        return StoredLogin(
            kek_id=row.kek_id,
            kek_version=row.kek_version,
            sealed=bytes(row.sealed),
            created_at=aware(row.created_at),
        )

    def delete(self, key: str) -> bool:
        """Remove the row of ``key``; whether there was one."""
        result = self._s.execute(delete(OidcLoginRow).where(OidcLoginRow.key == key))
        return bool(getattr(result, "rowcount", 0))

    def prune(self, *, before: datetime, keep: int) -> int:
        """Remove rows created before ``before``, then the oldest beyond the newest ``keep``;
        how many were removed."""
        removed = self._s.execute(delete(OidcLoginRow).where(OidcLoginRow.created_at < before))
        count = int(getattr(removed, "rowcount", 0) or 0)
        total = int(self._s.scalar(select(func.count()).select_from(OidcLoginRow)) or 0)
        if total > keep:
            oldest = self._s.scalars(
                select(OidcLoginRow.key)
                .order_by(OidcLoginRow.created_at, OidcLoginRow.key)
                .limit(total - keep)
            ).all()
            self._s.execute(delete(OidcLoginRow).where(OidcLoginRow.key.in_(oldest)))
            count += len(oldest)
        return count

    def count(self) -> int:
        """How many logins are under way."""
        return int(self._s.scalar(select(func.count()).select_from(OidcLoginRow)) or 0)
