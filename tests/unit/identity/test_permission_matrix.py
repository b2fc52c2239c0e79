"""The permission matrix: least privilege, nothing by default, every operation covered, no
approving power for automation, and the documentation equal to the data."""

from __future__ import annotations

from pathlib import Path

import typer

from affidavit.cli.main import build_app
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.models.permissions import (
    APPROVING,
    COMMAND_PERMISSIONS,
    HUMAN_ONLY_ROLES,
    READ_ONLY,
    ROLES,
    Permission,
    Role,
    matrix_markdown,
    permissions_of,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "identities.md"
P = Permission


def test_nobody_holds_anything_by_default() -> None:
    assert permissions_of(set()) == frozenset()
    someone = Principal(name="x", kind=AccountKind.HUMAN, method=AuthMethod.SESSION)
    assert not any(someone.holds(p) for p in Permission)
    local = Principal(
        name="root",
        kind=AccountKind.HUMAN,
        method=AuthMethod.LOCAL_OS_USER,
        permissions=frozenset(Permission),  # even if someone filled it in
    )
    assert not any(local.holds(p) for p in Permission)


def test_auditor_and_viewer_change_nothing() -> None:
    for role in (Role.AUDITOR, Role.VIEWER):
        assert ROLES[role] <= READ_ONLY, ROLES[role] - READ_ONLY


def test_the_auditor_reads_through_its_engagements_only() -> None:
    """No global read: everything an auditor sees comes through ``audit.read``, which the
    audit service scopes to its open engagements and their windows (docs/audit.md)."""
    assert ROLES[Role.AUDITOR] == frozenset({P.AUDIT_READ})
    everyone_elses = permissions_of({r for r in Role if r is not Role.AUDITOR})
    assert P.AUDIT_READ in everyone_elses  # the others who read engagements see them all


def test_every_permission_is_held_by_some_role() -> None:
    held = permissions_of(set(Role))
    assert held == frozenset(Permission), frozenset(Permission) - held


def test_the_roles_separate_duties() -> None:
    approver, operator = ROLES[Role.APPROVER], ROLES[Role.OPERATOR]
    assert approver & APPROVING
    assert not approver & {P.BACKUP_RUN, P.BACKUP_INGEST, P.BACKUP_DELETE, P.HOLD_RELEASE}
    assert not approver - READ_ONLY - APPROVING  # approves and reads, nothing else
    assert not operator & (APPROVING | {P.BACKUP_DELETE, P.HOLD_RELEASE, P.KEYS_EXPORT_IDENTITY})
    for role, held in ROLES.items():  # whoever makes backups cannot destroy them
        assert not {P.BACKUP_RUN, P.BACKUP_DELETE} <= held, role
        assert not {P.POLICY_PROPOSE, P.POLICY_APPROVE} <= held, role
        assert not {P.EXCEPTION_REQUEST, P.EXCEPTION_APPROVE} <= held, role
    admin = ROLES[Role.ADMIN]
    assert not admin & {P.BACKUP_RUN, P.BACKUP_DELETE, P.POLICY_APPROVE, P.KEYS_EXPORT_IDENTITY}


def test_automation_can_never_hold_an_approving_role() -> None:
    for role, held in ROLES.items():
        if held & APPROVING:
            assert role in HUMAN_ONLY_ROLES, role
    assert {Role.ADMIN, Role.APPROVER, Role.SECURITY_OFFICER} <= HUMAN_ONLY_ROLES
    assert Role.OPERATOR not in HUMAN_ONLY_ROLES


def _cli_commands() -> set[str]:
    found: set[str] = set()

    def walk(command: object, prefix: str) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found.add(prefix)

    walk(typer.main.get_command(build_app(None)), "")
    return found


def test_every_cli_command_has_a_rule() -> None:
    """A new command (a new route, later) cannot arrive without its permission."""
    commands = _cli_commands()
    assert set(COMMAND_PERMISSIONS) == commands, (
        f"without a rule: {sorted(commands - set(COMMAND_PERMISSIONS))}; "
        f"stale: {sorted(set(COMMAND_PERMISSIONS) - commands)}"
    )
    used = {p for p in COMMAND_PERMISSIONS.values() if p is not None}
    future = {P.ACCESS_LOG_READ, P.ACCESS_LOG_EXPORT}  # access-log show|verify|export: next
    assert used | future == frozenset(Permission)


def test_the_documented_matrix_is_the_matrix() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- matrix:begin -->\n", "<!-- matrix:end -->"
    assert begin in text
    assert end in text
    documented = text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"
    assert documented == matrix_markdown(), "regenerate with models.permissions.matrix_markdown()"
