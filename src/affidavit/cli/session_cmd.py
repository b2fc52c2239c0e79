"""``affidavit login URL``, ``logout``, ``whoami``: the CLI's session with a server (client
mode, docs/server.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, err_console, plain, print_json, show, table
from affidavit.cli.state import state
from affidavit.errors import InputError
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.services.secrets import make_secret_ref, resolve_secret


def _password(path: str | None, name: str) -> str:
    if path is not None:
        value = resolve_secret(make_secret_ref(env=None, file=path))
        assert value is not None
        return value
    prompted: str = typer.prompt(f"Password for {name}", hide_input=True)
    return prompted


def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="The server, e.g. https://host:8443.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Account name (prompted when not given).")
    ] = None,
    password_file: Annotated[
        str | None, typer.Option(help="File (mode 0600) holding the password (else prompted).")
    ] = None,
    code: Annotated[
        str | None,
        typer.Option(help="TOTP or recovery code (prompted when not given; empty if none)."),
    ] = None,
    oidc: Annotated[
        bool,
        typer.Option(
            "--oidc",
            help="Single sign-on: open the URL shown, log in at the identity provider, then "
            "type the one-time code the server shows.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Log in to an affidavit server (password, then a TOTP or recovery code; or single
    sign-on with --oidc) and keep the session in $XDG_CONFIG_HOME/affidavit/session.json
    (mode 0600)."""
    server = client.Client(url)
    if oidc:
        if name is not None or password_file is not None or code is not None:
            raise InputError(
                "--oidc logs in at the identity provider: no --name, --password-file or --code",
                hint="`affidavit login URL --oidc`",
            )
        answer = _single_sign_on(server)
    else:
        account = name or typer.prompt("Account name", default=state(ctx).settings.effective_actor)
        password = _password(password_file, account)
        if code is None:
            code = typer.prompt(
                "TOTP code (or a recovery code; empty if none is enrolled)",
                default="",
                show_default=False,
            )
        answer = server.post(
            "/auth/login", {"name": account, "password": password, "totp": code or None}
        )
    session = answer["session"]
    saved = client.SavedSession(
        server=server.server,
        account=str(session["account"]),
        session_id=str(session["id"]),
        expires_at=str(session["absolute_expires_at"]),
        secret=str(answer["secret"]),
    )
    path = client.save_session(saved)
    if json_out:
        print_json({"server": saved.server, "session": session, "principal": answer["principal"]})
        return 0
    roles = ", ".join(answer["principal"]["roles"]) or "no role"
    show(
        f"Logged in to {plain(saved.server)} as {plain(saved.account)} ({roles}); the "
        f"session ends at {plain(saved.expires_at)} at the latest. Kept in {plain(path)}."
    )
    return 0


def _single_sign_on(server: client.Client) -> Any:
    """The CLI's side of single sign-on (docs/server.md): ask the server for a login, show
    the identity provider's URL (on stderr: stdout stays for --json), read the one-time code
    the server shows after the provider's login, and redeem it with the flow's secret (which
    never leaves this process but to the server)."""
    begun = server.post("/auth/oidc/cli")
    err_console.print(
        "Open this URL in a browser and log in at your identity provider (within 10 minutes):"
    )
    err_console.print(plain(str(begun["url"])))
    entered = str(typer.prompt("One-time code shown after the login", err=True)).strip()
    return server.post(
        "/auth/oidc/cli/redeem",
        {"flow": begun["flow"], "flow_secret": begun["flow_secret"], "code": entered},
    )


def logout(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """End the saved session on its server and forget it here."""
    remote, saved = client.session_client(client.configured_server(ctx))
    ended = True
    try:
        remote.post("/auth/logout")
    except client.RemoteError as exc:
        if exc.status != 401:
            raise
        ended = False  # expired or ended already: nothing left to end there
    client.forget_session()
    if json_out:
        print_json({"server": saved.server, "account": saved.account, "ended": ended})
    else:
        show(f"Logged out of {plain(saved.server)} ({plain(saved.account)}).")
    return 0


def whoami(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Who the server takes you for (roles, permissions, how you were authenticated, the
    age of your last MFA check); without a session, the local mode's unverified OS user."""
    server = client.configured_server(ctx)
    if server is None and client.load_session() is None:
        local = Principal(
            name=state(ctx).settings.effective_actor,
            kind=AccountKind.HUMAN,
            method=AuthMethod.LOCAL_OS_USER,
        )
        data: dict[str, Any] = {"server": None, **local.to_json()}
    else:
        remote, saved = client.session_client(server)
        data = {"server": saved.server, **remote.get("/whoami")}
    if json_out:
        print_json(data)
        return 0
    if data["server"] is None:
        show(
            f"{plain(data['name'])}: the local OS user, not authenticated (local mode: "
            "affidavit does not verify this identity). `affidavit login URL` logs in to a "
            "server."
        )
        return 0
    age = data.get("mfa_age_seconds")
    rows = [
        ["server", data["server"]],
        ["account", data["name"]],
        ["kind", data["kind"]],
        ["authenticated by", data["method"]],
        ["roles", ", ".join(data["roles"]) or None],
        ["permissions", ", ".join(data["permissions"]) or None],
        ["last MFA check", f"{age} s ago" if age is not None else None],
    ]
    show(table("Who am I", ["field", "value"], [[k, plain(v)] for k, v in rows]))
    return 0
