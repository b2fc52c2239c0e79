"""Table views of governance records (control results, findings, exceptions), from their
JSON views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from affidavit.cli.output import plain, when
from affidavit.models.governance import PolicyException, Severity

_STATUS_STYLE = {
    "pass": "[green]pass[/green]",
    "fail": "[bold red]FAIL[/bold red]",
    "excepted": "[yellow]excepted[/yellow]",
    "not-applicable": "[dim]n/a[/dim]",
    "not-evaluated": "[red]not evaluated[/red]",
}


def result_rows(results: Sequence[Mapping[str, Any]], *, show_all: bool) -> list[list[Any]]:
    """Rows of the controls table, from the results' JSON views: failures first; passing
    ones only with ``show_all``."""
    chosen = [r for r in results if show_all or r["status"] not in ("pass", "not-applicable")]
    chosen.sort(
        key=lambda r: (r["status"] != "fail", Severity(r["severity"]).rank, r["control"],
                       r["subject"])
    )  # fmt: skip
    return [
        [
            r["control"],
            plain(r["subject"]),
            _STATUS_STYLE.get(r["status"], r["status"]),
            r["severity"],
            plain(r["owner"]),
            plain(r["message"]),
        ]
        for r in chosen
    ]


def finding_row(f: Mapping[str, Any]) -> list[Any]:
    """A row of the findings table, from a finding's JSON view."""
    return [
        f["id"],
        f["status"],
        f["severity"],
        f["control"],
        plain(f["subject"]),
        plain(f["owner"]),
        when(f["due_at"]),
        plain(f["message"]),
    ]


def finding_order(f: Mapping[str, Any]) -> tuple[int, datetime, str]:
    """Most severe first, then the earliest due (the findings table's order)."""
    return Severity(f["severity"]).rank, datetime.fromisoformat(f["due_at"]), f["id"]


def exception_row(e: Mapping[str, Any]) -> list[Any]:
    """A row of the exceptions table, from an exception's JSON view."""
    return [
        e["id"],
        plain(e["control"]),
        plain(e["subject"]),
        e["status"],
        plain(e["requested_by"]),
        plain(e["approved_by"]),
        when(e["expires_at"]),
        plain(e["reason"]),
    ]


def exception_json(e: PolicyException) -> dict[str, Any]:
    """An exception."""
    return e.to_json()
