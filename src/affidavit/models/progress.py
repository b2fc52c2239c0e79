"""Progress reporting: library code reports through this; the CLI renders it with rich."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """Receives progress from long-running work. Implementations must be cheap to call."""

    def stage(self, description: str) -> None:
        """A new step has started (shown as a line or a spinner)."""

    def task(self, description: str, total: int | None) -> None:
        """A countable step has started; ``total`` units (None when unknown)."""

    def advance(self, units: int = 1) -> None:
        """``units`` more of the current task are done."""

    def finish(self) -> None:
        """The current task is done."""


class SilentReporter:
    """A reporter that shows nothing (the default for library callers and ``--json``)."""

    def stage(self, description: str) -> None:
        """Ignore."""

    def task(self, description: str, total: int | None) -> None:
        """Ignore."""

    def advance(self, units: int = 1) -> None:
        """Ignore."""

    def finish(self) -> None:
        """Ignore."""
