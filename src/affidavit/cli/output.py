"""Rendering: rich tables for people, JSON for machines, one-line errors with hints.

``rich`` is imported when something is first shown to people (:data:`console` and
:data:`err_console` are made on first use): a ``--json`` run never needs it."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    console: Console
    err_console: Console

_CONSOLES: dict[str, Console] = {}


def _console(name: str) -> Console:
    """``console`` (stdout) or ``err_console`` (stderr), made once."""
    made = _CONSOLES.get(name)
    if made is None:
        from rich.console import Console

        if name == "console":  # not a terminal (a pipe, a CI log): tables get 160 columns
            made = Console(
                highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160
            )
        else:
            made = Console(stderr=True, highlight=False, soft_wrap=True)
        made = _CONSOLES.setdefault(name, made)
    return made


def __getattr__(name: str) -> Any:
    """The consoles, made on first use (PEP 562)."""
    if name in ("console", "err_console"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the ``--json`` option of every command that prints a result
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

_T = TypeVar("_T")
# C0 and C1 controls but tab and newline, and the bidirectional overrides and isolates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (stable keys, UTF-8)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_result(data: Any, message: str, *, json_out: bool) -> int:
    """The output of a command that did one thing: ``data`` as JSON under ``--json``, else the
    one-line ``message`` for people; returns the exit code, 0."""
    if json_out:
        print_json(data)
    else:
        show(message)
    return 0


def print_list(
    title: str,
    key: str,
    items: Sequence[_T],
    *,
    item_json: Callable[[_T], Any],
    columns: Sequence[str],
    row: Callable[[_T], Sequence[Any]],
    json_out: bool,
    empty: str | None = None,
) -> int:
    """The output of a command that lists records: ``{key: [item_json(item), ...]}`` under
    ``--json``; else the line ``empty`` when there are no items and it is given, or a table
    titled ``title`` with ``columns`` and a ``row`` per item. Returns the exit code, 0."""
    if json_out:
        print_json({key: [item_json(item) for item in items]})
    elif not items and empty is not None:
        show(empty)
    else:
        show(table(title, columns, [row(item) for item in items]))
    return 0


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A readable table; ``None`` cells show as a dim dash."""
    from rich.table import Table

    tbl = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for col in columns:
        tbl.add_column(col, overflow="fold")
    for row in rows:
        tbl.add_row(*("[dim]-[/dim]" if cell is None else str(cell) for cell in row))
    return tbl


def show(*renderables: Any) -> None:
    """Print to stdout."""
    _console("console").print(*renderables)


def error(message: str, hint: str | None = None) -> None:
    """``error: ...`` and ``hint: ...`` on stderr, one line each, no traceback. In colour
    on a terminal; elsewhere (a pipe, a log, ``--json`` scripts) plain text written here,
    without loading rich for it (and so without its emoji codes or tab expansion)."""
    if not _is_terminal(sys.stderr):
        lines = [f"error: {_one_line(message)}"]
        if hint:
            lines.append(f"hint: {_one_line(hint)}")
        try:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):  # stderr closed (None) or gone
            pass
        return
    err = _console("err_console")
    err.print(f"[bold red]error:[/bold red] {_escape(message)}")
    if hint:
        err.print(f"[yellow]hint:[/yellow] {_escape(hint)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[").replace("\n", " ")


def _one_line(text: str) -> str:
    """``text`` on one line, its control and bidirectional characters shown as escapes."""
    flat = text.replace("\r\n", " ").replace("\n", " ")
    return _UNSAFE.sub(lambda m: m[0].encode("unicode_escape").decode(), flat)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def plain(value: object) -> str | None:
    """A value from a user or a database, shown literally (never read as rich markup, and
    control and bidirectional-override characters shown as escapes such as ``\\x1b``, never
    sent to the terminal: a login name tried against the server is logged as it came);
    ``None`` stays ``None`` (a dim dash in tables)."""
    if value is None:
        return None
    from rich.markup import escape

    return escape(_UNSAFE.sub(lambda m: m[0].encode("unicode_escape").decode(), str(value)))


def when(value: datetime | str | None) -> str | None:
    """A timestamp for tables (a datetime, or its ISO 8601 text as JSON views hold it): UTC,
    to the second."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else None
