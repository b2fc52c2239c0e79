"""Per-invocation CLI state: global flags, settings loaded once, the app opened on demand.

Nothing heavy is imported here: every command imports this module, and a command that needs
neither settings nor a catalog (``fingerprint FILE``, ``--help``) must not pay for pydantic or
SQLAlchemy (tests/unit/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # the catalog and the settings' parser load only when a command needs them
    from affidavit.config import Settings
    from affidavit.services.context import App


@dataclass
class CliState:
    """What the root callback parsed; commands reach it through ``ctx.obj``."""

    home: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings with the precedence chain applied, parsed once."""
        if self._settings is None:
            from affidavit.config import load_settings

            self._settings = load_settings(home=self.home, overrides=self.overrides)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """The state of this invocation."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@contextmanager
def app_for(ctx: typer.Context) -> Iterator[App]:
    """Open the catalog of this invocation's home (it must be initialised)."""
    from affidavit.services.context import open_app

    with open_app(state(ctx).settings) as app:
        yield app
