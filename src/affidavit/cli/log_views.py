"""How the CLI prints the two Merkle logs' verification reports (the ledger's and the access
log's), from their JSON views: the same text whether the report was computed on this host or
answered by a server (client mode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from affidavit.cli.output import error, plain, print_json, show, table
from affidavit.constants import ExitCode


def print_log_verification(
    data: Mapping[str, Any], *, json_out: bool, log_name: str, signed: str, unsigned: str = ""
) -> int:
    """Print a log's verification report ``data`` (``{"ok", "size", "root", "checkpoint",
    "findings", "key"}``, ``"expired"`` for the access log) and return its exit code: 0 when
    it verifies, 1 otherwise. ``log_name``: "ledger" or "access log"; ``signed``: how its
    checkpoint's origin is introduced; ``unsigned``: what is said without a checkpoint."""
    if json_out:
        print_json(data)
    elif data["ok"]:
        checkpoint, expired = data["checkpoint"], data.get("expired")
        show(
            f"[green]ok[/green]: {data['size']} entries"
            + (f" ({expired} expired)" if expired else "")
            + f", root {data['root']}"
            + (f", {signed} {checkpoint['origin']}" if checkpoint else unsigned)
        )
        key = data["key"]
        if key:
            show(f"[dim]verified with {key['vkey']} ({key['from']})[/dim]")
    else:
        title = log_name[0].upper() + log_name[1:].replace(" ", "-")
        show(
            table(
                f"{title} findings",
                ["code", "seq", "message"],
                [[f["code"], f["seq"], plain(f["message"])] for f in data["findings"]],
            )
        )
        error(f"the {log_name} does not verify: {len(data['findings'])} finding(s)")
    return 0 if data["ok"] else int(ExitCode.SUBJECT_FAILED)
