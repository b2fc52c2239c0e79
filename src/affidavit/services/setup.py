"""``affidavit init``: create or upgrade a home, its settings file and its catalog."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from affidavit import __version__
from affidavit.config import DEFAULT_CONFIG_TEXT, Settings
from affidavit.errors import InputError
from affidavit.services.context import App
from affidavit.services.ledger import setup_ledger


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    """What ``init`` found and did."""

    home: Path
    catalog: str
    created_home: bool
    schema_before: str | None
    schema_after: str

    @property
    def changed(self) -> bool:
        """True when the catalog was created or upgraded."""
        return self.schema_before != self.schema_after


def initialise(settings: Settings) -> InitResult:
    """Create the home (mode 0700) with a commented ``affidavit.toml``, and create or upgrade
    the catalog and the ledger's signing key (``keys/ledger.key``, 0600) and origin.
    Idempotent: a second run changes nothing and records nothing."""
    home = settings.home
    created = not home.exists()
    if home.exists() and not home.is_dir():
        raise InputError(f"{home} exists and is not a folder", hint="choose another --home")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not settings.config_file.exists():
            fd = os.open(settings.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(DEFAULT_CONFIG_TEXT)
    except PermissionError as exc:
        raise InputError(
            f"no permission to create {exc.filename}", hint="choose a --home you can write"
        ) from None
    app = App(settings)
    try:
        before, after = app.catalog.upgrade()
        setup_ledger(app)  # the ledger's signing key and origin, once (records ledger.key_created)
        if before != after:
            with app.change() as change:
                change.record(
                    "catalog.initialized" if before is None else "catalog.upgraded",
                    f"catalog:{app.catalog.describe()}",
                    {"schema_before": before, "schema_after": after, "version": __version__},
                )
        return InitResult(
            home=home,
            catalog=app.catalog.describe(),
            created_home=created,
            schema_before=before,
            schema_after=after,
        )
    finally:
        app.close()
