"""Who acts in a local-mode command that needs an authenticated identity: ``--as NAME`` logs
in as that account for the one command (a real login through the same service the server
uses: password, then a TOTP or recovery code; failures count towards the lockout and are
recorded) and logs out when the command ends. Without ``--as`` the command acts as the local
OS user, whom affidavit does not verify.

Secrets are prompted for with hidden input, or read from a file of mode 0600; they are
never accepted as arguments. A TOTP code may be given as ``--as-code`` (valid for seconds, and
never accepted twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer

from affidavit.cli.state import app_for
from affidavit.models.identity import Principal, account_name
from affidavit.models.ledger import ClientInfo
from affidavit.services import identity, principals
from affidavit.services.context import App
from affidavit.services.secrets import make_secret_ref, resolve_secret

CLI_CLIENT = ClientInfo(agent="affidavit-cli")
_T = TypeVar("_T")

AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this account: log in with its password and TOTP code for this command.",
    ),
]
AsPasswordFileOpt = Annotated[
    str | None,
    typer.Option(help="File (mode 0600) holding the password of the --as account."),
]
AsCodeOpt = Annotated[
    str | None,
    typer.Option(help="TOTP or recovery code of the --as account (prompted when needed)."),
]


def secret_file(path: str) -> str:
    value = resolve_secret(make_secret_ref(env=None, file=path))
    assert value is not None
    return value


@contextmanager
def acting(
    application: App,
    as_name: str | None,
    password_file: str | None,
    code: str | None,
) -> Iterator[tuple[Principal, str | None]]:
    """The principal of this command and the password it logged in with: the local OS user
    without ``--as``, else a login as that account (ended when the command ends)."""
    if as_name is None:
        yield principals.local_principal(application), None
        return
    name = account_name(as_name)
    if password_file is not None:
        password = secret_file(password_file)
    else:
        password = typer.prompt(f"Password for {name}", hide_input=True)
        if code is None:
            code = typer.prompt(
                f"TOTP code for {name} (or a recovery code; empty if none is enrolled)",
                default="",
                show_default=False,
            )
    grant = identity.login(application, name, password, code or None, client=CLI_CLIENT)
    try:
        yield grant.principal, password
    finally:
        identity.logout(application, grant.principal)


def as_caller(ctx: typer.Context, call: Callable[[App, Principal], _T]) -> _T:
    """``call(app, principal)`` on this host's home, as the account of the command's ``--as``
    options (``as_name``, ``as_password_file``, ``as_code`` among its parameters), or the
    local OS user without them: the local half of a command that needs an identity."""
    given = ctx.params
    with (
        app_for(ctx) as application,
        acting(
            application, given.get("as_name"), given.get("as_password_file"), given.get("as_code")
        ) as (who, _),
    ):
        return call(application, who)
