"""JSON and table views of governance records (policy versions, controls, results,
findings, exceptions, baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from affidavit.cli.output import plain, when
from affidavit.models.governance import Baseline, ControlFinding, PolicyException


class _ResultLike(Protocol):
    @property
    def control(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def status(self) -> Any: ...

    @property
    def severity(self) -> Any: ...


_STATUS_STYLE = {
    "pass": "[green]pass[/green]",
    "fail": "[bold red]FAIL[/bold red]",
    "excepted": "[yellow]excepted[/yellow]",
    "not-applicable": "[dim]n/a[/dim]",
    "not-evaluated": "[red]not evaluated[/red]",
}


def result_rows(results: Sequence[_ResultLike], *, show_all: bool) -> list[list[Any]]:
    """Rows of the controls table: failures first; passing ones only with ``show_all``."""
    chosen = [r for r in results if show_all or r.status.value not in ("pass", "not-applicable")]
    chosen.sort(key=lambda r: (r.status.value != "fail", r.severity.rank, r.control, r.subject))
    return [
        [
            r.control,
            plain(r.subject),
            _STATUS_STYLE.get(r.status.value, r.status.value),
            r.severity.value,
            plain(r.owner),
            plain(r.message),
        ]
        for r in chosen
    ]


def finding_row(f: ControlFinding) -> list[Any]:
    """A row of the findings table."""
    return [
        f.id,
        f.status.value,
        f.severity.value,
        f.control,
        plain(f.subject),
        plain(f.owner),
        when(f.due_at),
        plain(f.message),
    ]


def exception_json(e: PolicyException) -> dict[str, Any]:
    """An exception."""
    return e.to_json()


def baseline_json(b: Baseline) -> dict[str, Any]:
    """A baseline with its content."""
    return {
        "id": b.id,
        "approved_by": b.approved_by,
        "approved_at": b.approved_at.isoformat(),
        "sha256": b.sha256,
        "seq": b.seq,
        "content": b.content,
    }
