"""The application context every use case runs in: settings, catalog, and the one choke point
through which state changes are made (a catalog write plus its ledger event, one transaction)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from affidavit.catalog.store import Catalog, UnitOfWork
from affidavit.config import Settings
from affidavit.ledger.log import LedgerLog
from affidavit.models.ledger import ClientInfo, Event


@dataclass
class Change:
    """One unit of work in progress: repositories plus :meth:`record` for its events."""

    uow: UnitOfWork
    actor: str
    client: ClientInfo
    log: LedgerLog

    def record(self, action: str, subject: str, details: Mapping[str, Any] | None = None) -> Event:
        """Append a ledger event in this transaction."""
        return self.log.append(
            actor=self.actor, action=action, subject=subject, details=details, client=self.client
        )


class App:
    """Opened once per command (CLI) or per process (server)."""

    def __init__(self, settings: Settings, *, client: ClientInfo | None = None) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.effective_catalog_url)
        self.client = client or ClientInfo(agent="affidavit-cli")

    @property
    def actor(self) -> str:
        """Who is acting."""
        return self.settings.effective_actor

    @contextmanager
    def change(self) -> Iterator[Change]:
        """A write transaction whose events commit with it, or not at all."""
        with self.catalog.unit_of_work() as uow:
            yield Change(uow=uow, actor=self.actor, client=self.client, log=LedgerLog(uow.ledger))

    @contextmanager
    def read(self) -> Iterator[UnitOfWork]:
        """A read-only view of the catalog."""
        with self.catalog.reader() as uow:
            yield uow

    def close(self) -> None:
        """Release the catalog."""
        self.catalog.close()


@contextmanager
def open_app(settings: Settings, *, client: ClientInfo | None = None) -> Iterator[App]:
    """Open the catalog (which must exist at this affidavit's schema version)."""
    app = App(settings, client=client)
    try:
        app.catalog.check_schema()
        yield app
    finally:
        app.close()
