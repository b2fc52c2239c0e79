"""docs/server.md keeps the API's routes and the remote-capable commands of the code: every
route of a resource its routes table lists has its row (method, route and the permission its
gate asks for; a resource documented on its feature's page instead is left to that page), and
every remote-capable command is named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from affidavit.cli.client import REMOTE_COMMANDS
from affidavit.models.permissions import ROUTE_PERMISSIONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
PREFIX = "/api/v1"


def _shape(route: str) -> str:
    """A route with its parameters unnamed (the table says ``{id}`` for ``{backup_id}``)."""
    return re.sub(r"\{[^}]*\}", "{}", route)


def test_every_api_route_has_its_row() -> None:
    rows = {
        (m.group(1), _shape(m.group(2).split("?")[0])): m.group(3)
        for m in re.finditer(r"^\| (GET|POST|DELETE) \| `([^`]+)` \| ([^|]+)\|", DOC, re.M)
    }
    resources = {route.split("/")[1] for _, route in rows}
    missing, wrong = [], []
    for action, permission in ROUTE_PERMISSIONS.items():
        method, _, route = action.partition(" ")
        if not route.startswith(PREFIX + "/") or route.split("/")[3] not in resources:
            continue  # the web pages (docs/web.md), or a resource its own page documents
        gate = rows.get((method, _shape(route.removeprefix(PREFIX))))
        if gate is None:
            missing.append(action)
        elif permission is not None and f"`{permission.value}`" not in gate:
            wrong.append(f"{action}: {gate.strip()}")
    assert missing == [] and wrong == []


def test_every_remote_capable_command_is_named() -> None:
    """In the list of "The CLI as a client" (``group a|b`` names ``group a`` and ``group b``),
    and nothing there that is not remote-capable."""
    listed = DOC[
        DOC.index("So far (`cli/client.py:") : DOC.index("and `login`, `logout`, `whoami`")
    ]
    named = set()
    for group in re.findall(r"`([a-z|-]+(?: [a-z|-]+)*)`", listed):
        *head, tail = group.split(" ")
        named |= {" ".join([*head, leaf]) for leaf in tail.split("|")}
    assert sorted(REMOTE_COMMANDS - named) == []
    assert sorted(named - REMOTE_COMMANDS) == []


def test_every_command_is_known_to_client_mode() -> None:
    """Every command of the CLI is remote-capable, stateless (run on the client), a client
    command, or host-only with its reason: none is left to the 'not yet' refusal."""
    import typer

    from affidavit.cli import client
    from affidavit.cli.main import build_app

    root = typer.main.get_command(build_app())
    context = root.make_context("affidavit", [], resilient_parsing=True)
    commands: list[str] = []

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "list_commands"):  # a group (typer's own click)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), f"{path} {name}".strip())
        else:
            commands.append(path)

    walk(root, "")
    known = (
        client.REMOTE_COMMANDS
        | client.STATELESS_COMMANDS
        | client.CLIENT_COMMANDS
        | set(client.HOST_ONLY_COMMANDS)
    )
    assert len(commands) > 100
    assert sorted(set(commands) - known) == []
    assert sorted(known - set(commands)) == []  # no set names a command that is gone
