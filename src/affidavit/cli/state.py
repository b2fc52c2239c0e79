"""Per-invocation CLI state: global flags, settings loaded once, the app opened on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from affidavit.config import Settings, load_settings
from affidavit.services.context import App, open_app


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
    with open_app(state(ctx).settings) as app:
        yield app
