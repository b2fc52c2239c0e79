"""A rich progress reporter for long work (silent under ``--json``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Self

from affidavit.cli import output

if TYPE_CHECKING:  # rich loads when a reporter is made (never under --json)
    from rich.progress import TaskID


class RichReporter:
    """Renders :class:`affidavit.models.progress.Reporter` calls as rich progress on stderr.

    On a terminal: live bars and spinners. Elsewhere (a pipe, a CI log): one plain line per
    step, and nothing left behind when the work fails, so an error stays a single line.
    """

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = output.err_console
        self._live = self._console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._task: TaskID | None = None

    def stage(self, description: str) -> None:
        """Show a finished-step line for the previous stage and a spinner for this one."""
        if not self._live:
            self._console.print(f"- {description}", highlight=False)
            return
        self.finish()
        self._task = self._progress.add_task(description, total=1)

    def task(self, description: str, total: int | None) -> None:
        """Start a bar."""
        if not self._live:
            self._console.print(f"- {description}", highlight=False)
            return
        self.finish()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, units: int = 1) -> None:
        """Move the bar."""
        if self._task is not None:
            self._progress.advance(self._task, units)

    def finish(self) -> None:
        """Complete the current bar."""
        if self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, completed=task.total or task.completed)
            self._task = None

    def __enter__(self) -> Self:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._live:
            return
        if exc is None:
            self.finish()
        self._progress.stop()


@contextmanager
def reporting(json_out: bool) -> Iterator[RichReporter | None]:
    """A progress reporter for long work, or none under ``--json`` (stdout stays pure JSON)."""
    if json_out:
        yield None
        return
    with RichReporter() as reporter:
        yield reporter
