"""Rendering: rich tables for people, JSON for machines, one-line errors with hints."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# when stdout is not a terminal (a pipe, a CI log), tables get room instead of 80 columns
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (stable keys, UTF-8)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A readable table; ``None`` cells show as a dim dash."""
    tbl = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for col in columns:
        tbl.add_column(col, overflow="fold")
    for row in rows:
        tbl.add_row(*("[dim]-[/dim]" if cell is None else str(cell) for cell in row))
    return tbl


def show(*renderables: Any) -> None:
    """Print to stdout."""
    console.print(*renderables)


def error(message: str, hint: str | None = None) -> None:
    """``error: ...`` and ``hint: ...`` on stderr, one line each, no traceback."""
    err_console.print(f"[bold red]error:[/bold red] {_escape(message)}")
    if hint:
        err_console.print(f"[yellow]hint:[/yellow] {_escape(hint)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[").replace("\n", " ")


def plain(value: object) -> str | None:
    """A value from a user or a database, shown literally (never read as rich markup);
    ``None`` stays ``None`` (a dim dash in tables)."""
    return None if value is None else escape(str(value))


def when(value: datetime | None) -> str | None:
    """A timestamp for tables: UTC, to the second."""
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else None
