"""``affidavit user|role|token ...``: local accounts, their roles and API tokens.

Who acts. Without a server, the CLI runs as the OS user, whom affidavit does not verify;
that identity may do exactly one thing here: create the first administrator
(``affidavit user add NAME`` while no account exists). Everything after that needs an
authenticated administrator: ``--as NAME`` logs in as that account for the one command (a
real login: password, then a TOTP or recovery code; failures count towards the lockout and
are recorded), and logs out at its end. The server (``affidavit serve``) will provide the
authenticated channel instead; the commands stay the same.

Secrets are prompted for with hidden input, or read from a file of mode 0600
(``--password-file``, ``--as-password-file``); they are never accepted as arguments. A TOTP
code may be given as ``--as-code`` (it is valid for seconds and cannot be replayed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from affidavit.cli import client
from affidavit.cli.acting import (
    CLI_CLIENT,
    AsCodeOpt,
    AsOpt,
    AsPasswordFileOpt,
    acting,
    as_caller,
    secret_file,
)
from affidavit.cli.output import JsonOpt, plain, print_json, show, table, when
from affidavit.cli.state import app_for
from affidavit.errors import InputError
from affidavit.models.identity import AccountKind, TotpEnrolment, account_name
from affidavit.models.permissions import ROLE_DESCRIPTIONS, ROLES, Permission, Role
from affidavit.services import identity, principals, roles

_LOCAL_MODE = (
    "\n\nWithout a server the CLI acts as the OS user, whom affidavit does not verify: that "
    "identity may only create the first administrator (`user add NAME` while no account "
    "exists). Everything else needs an authenticated account: --as NAME logs in as it for "
    "the one command (its password, then a TOTP or recovery code; failures count towards the "
    "lockout and are recorded) and logs out at the end. See docs/identities.md."
)
user_app = typer.Typer(
    help="Local accounts: people and service accounts." + _LOCAL_MODE, no_args_is_help=True
)
role_app = typer.Typer(
    help="Roles held by accounts (the permission matrix)." + _LOCAL_MODE, no_args_is_help=True
)
token_app = typer.Typer(help="API tokens of service accounts." + _LOCAL_MODE, no_args_is_help=True)


NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Account name.")]


def _new_password(path: str | None, whose: str) -> str:
    if path is not None:
        return secret_file(path)
    value: str = typer.prompt(
        f"New password for {whose}", hide_input=True, confirmation_prompt=True
    )
    return value


def _account_row(a: Mapping[str, Any]) -> list[Any]:
    """A row of the accounts table, from an account's JSON view."""
    locked = a["locked_until"] and datetime.now(UTC) < datetime.fromisoformat(a["locked_until"])
    state = "disabled" if a["disabled_at"] else ("locked" if locked else "active")
    return [
        plain(a["name"]),
        a["kind"],
        plain(a["display_name"]),
        "yes" if a["totp_enrolled"] else "no",
        state,
        when(a["created_at"]),
        plain(a["created_by"]),
    ]


# -- user --------------------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: NameArg,
    service: Annotated[
        bool, typer.Option("--service", help="A service account (API tokens, no password).")
    ] = False,
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    password_file: Annotated[
        str | None, typer.Option(help="File (mode 0600) holding the new account's password.")
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Add an account. While no account exists, this creates the first administrator as
    the local OS user (recorded `identity.bootstrapped`); afterwards it needs an
    administrator: --as ADMIN, or through the server (remote-capable: --server)."""
    kind = AccountKind.SERVICE if service else AccountKind.HUMAN
    remote = client.remote(ctx)
    if remote is not None:  # an administrator through the server (never the bootstrap)
        new = None if service else _new_password(password_file, account_name(name))
        body = {"name": name, "service": service, "password": new,
                "display_name": display_name, "email": email}  # fmt: skip
        return _added(remote.post("/accounts", {k: v for k, v in body.items() if v is not None}),
                      json_out)  # fmt: skip
    with app_for(ctx) as application:
        if as_name is None:
            if service:
                raise InputError(
                    "a service account is added by an administrator",
                    hint="the first account is a person (the first administrator); then "
                    "`affidavit user add NAME --service --as ADMIN`",
                )
            password = _new_password(password_file, account_name(name))
            account = identity.bootstrap_admin(
                application,
                principals.local_principal(application),
                name,
                password,
                display_name=display_name,
                email=email,
            )
            bootstrapped = True
        else:
            bootstrapped = False
            with acting(application, as_name, as_password_file, as_code) as (principal, _):
                new = None if service else _new_password(password_file, account_name(name))
                account = identity.create_account(
                    application,
                    principal,
                    name,
                    kind=kind,
                    password=new,
                    display_name=display_name,
                    email=email,
                )
    return _added({"account": account.to_json(), "bootstrapped": bootstrapped}, json_out)


def _added(data: dict[str, Any], json_out: bool) -> int:
    account = data["account"]
    if json_out:
        print_json(data)
    elif data["bootstrapped"]:
        show(
            f"Created the first administrator [bold]{plain(account['name'])}[/bold]. Next: "
            f"`affidavit user totp-enroll {plain(account['name'])}`."
        )
    else:
        show(f"Added {account['kind']} account [bold]{plain(account['name'])}[/bold] (no role).")
    return 0


@user_app.command("break-glass")
def user_break_glass(
    ctx: typer.Context,
    name: NameArg,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Who is locked out, why, and who authorised this (at least 20 characters; "
            "recorded, alerted and reported).",
        ),
    ],
    password_file: Annotated[
        str | None, typer.Option(help="File (mode 0600) holding the new account's password.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (scripts).")
    ] = False,
    json_out: JsonOpt = False,
) -> int:
    """Break glass: on the host that owns the home, create a new administrator without
    anyone's approval, for an organisation locked out of its own server. Loud by design: it
    is a ledger event, an alert to every webhook, and a finding of the
    access.segregation_of_duties control (docs/identities.md)."""
    with app_for(ctx) as application:
        if not yes:
            typer.confirm(
                f"Create the administrator {account_name(name)!r} without approval? This is "
                "recorded, alerted and reported as break-glass",
                abort=True,
            )
        password = _new_password(password_file, account_name(name))
        account = identity.break_glass(
            application, principals.local_principal(application), name, password, reason=reason
        )
    if json_out:
        print_json({"account": account.to_json(), "break_glass": True})
    else:
        show(
            f"[bold red]Break-glass[/bold red]: created the administrator "
            f"[bold]{plain(account.name)}[/bold]; recorded (identity.break_glass), alerted, and "
            f"reported by access.segregation_of_duties. Next: `affidavit user totp-enroll "
            f"{plain(account.name)}`."
        )
    return 0


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """List accounts (needs account.read: --as NAME; remote-capable: --server)."""
    remote = client.remote(ctx)
    data = (
        remote.get("/accounts")
        if remote is not None
        else as_caller(ctx, lambda app, who: {
            "accounts": [a.to_json() for a in identity.list_accounts(app, who)]
        })
    )  # fmt: skip
    if json_out:
        print_json(data)
        return 0
    accounts = data["accounts"]
    show(
        table(
            "Accounts",
            ["name", "kind", "display name", "TOTP", "state", "created", "by"],
            [_account_row(a) for a in accounts],
        )
    )
    return 0


@user_app.command("disable")
def user_disable(
    ctx: typer.Context,
    name: NameArg,
    reason: Annotated[str, typer.Option(help="Why the account is disabled.")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Disable an account for good: its sessions end and its tokens stop working. A gated
    operation (docs/approvals.md); remote-capable: --server."""
    remote = client.remote(ctx)
    if remote is not None:
        data = remote.post(f"{client.route('accounts', name)}/disable", {"reason": reason})
    else:
        data = as_caller(ctx, lambda app, who: {
            "account": identity.disable_account(app, who, name, reason=reason).to_json()
        })  # fmt: skip
    if json_out:
        print_json(data)
    else:
        show(f"Disabled {plain(data['account']['name'])}.")
    return 0


@user_app.command("unlock")
def user_unlock(
    ctx: typer.Context,
    name: NameArg,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Lift a lockout after failed logins (remote-capable: --server)."""
    data = client.remote_post(ctx, f"{client.route('accounts', name)}/unlock", {})
    if data is None:
        data = as_caller(ctx, lambda app, who: {
            "account": identity.unlock_account(app, who, name).to_json()
        })  # fmt: skip
    if json_out:
        print_json(data)
    else:
        show(f"Unlocked {plain(data['account']['name'])}.")
    return 0


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: NameArg,
    new_password_file: Annotated[
        str | None, typer.Option(help="File (mode 0600) holding the new password.")
    ] = None,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="Act as this administrator (default: NAME itself)."),
    ] = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
) -> int:
    """Change a password: your own (you log in as NAME with the current one), or another
    account's as an administrator (--as ADMIN, with a fresh TOTP code). Remote-capable
    (--server): your own with the current password (--as-password-file, or prompted), or
    another's as the administrator logged in (--code for the step-up)."""
    target = account_name(name)
    remote = client.remote_session(ctx)
    if remote is not None:
        session, me = remote
        new = _new_password(new_password_file, target)
        if me == target:
            current = (
                secret_file(as_password_file)
                if as_password_file is not None
                else str(typer.prompt(f"Current password for {target}", hide_input=True))
            )
            body = {"account": target, "current_password": current, "password": new}
            session.post("/me/password", body)
        else:
            if code:
                session.post("/auth/step-up", {"code": code})
            session.post(f"{client.route('accounts', target)}/password", {"password": new})
        show(f"Password of {plain(target)} changed; its other sessions ended.")
        return 0
    with (
        app_for(ctx) as application,
        acting(application, as_name or target, as_password_file, as_code) as (principal, old),
    ):
        new = _new_password(new_password_file, target)
        own = principal.name == target
        identity.set_password(
            application,
            principal,
            target,
            new,
            current_password=old if own else None,
            client=CLI_CLIENT,
        )
    show(f"Password of {plain(target)} changed; its other sessions ended.")
    return 0


def _show_qr(uri: str) -> None:
    """The URI as a QR code on the terminal, when ``qrcode`` is installed and stdout is one."""
    if not sys.stdout.isatty():
        return
    try:
        import qrcode  # optional (affidavit[qr]); untyped
    except ImportError:
        return
    code = qrcode.QRCode(border=1)
    code.add_data(uri)
    code.print_ascii(out=sys.stdout, invert=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Enrolment:
    """The two steps of a TOTP enrolment, through the server or on this host: begin (the
    account, ``uri`` and ``secret``), then confirm with a code (the recovery codes)."""

    begin: Callable[[], dict[str, str]]
    confirm: Callable[[str], list[str]]


@user_app.command("totp-enroll")
def user_totp_enroll(
    ctx: typer.Context,
    name: NameArg,
    begin: Annotated[
        bool, typer.Option("--begin", help="Only start: print the otpauth URI and stop.")
    ] = False,
    code: Annotated[
        str | None,
        typer.Option(help="Confirm the enrolment started with --begin with this code."),
    ] = None,
    as_password_file: AsPasswordFileOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Enrol a TOTP authenticator for your account NAME (you log in with your password).
    Prints the otpauth URI (and a QR code on a terminal when `qrcode` is installed), asks for
    a code to confirm, then prints ten one-time recovery codes: they are shown only now.
    Scripts run it in two steps: --begin, then --code CODE. Remote-capable (--server): for
    the account logged in, which must be NAME."""
    target = account_name(name)
    if code is not None and begin:
        raise InputError(
            "give either --begin or --code, not both", hint="--begin first, then --code CODE"
        )
    remote = client.remote(ctx)
    if remote is not None:
        session = remote

        def begin_remote() -> dict[str, str]:
            return dict(session.post("/me/totp", {"account": target}))

        def confirm_remote(given: str) -> list[str]:
            confirmed = session.post("/me/totp/confirm", {"account": target, "code": given})
            return list(confirmed["recovery_codes"])

        steps = _Enrolment(begin=begin_remote, confirm=confirm_remote)
        return _enrol(steps, target, begin=begin, code=code, json_out=json_out)
    with (
        app_for(ctx) as application,
        acting(application, target, as_password_file, "") as (principal, _),
    ):
        steps = _Enrolment(
            begin=lambda: _begun(identity.begin_totp(application, principal, target)),
            confirm=lambda given: list(
                identity.confirm_totp(application, principal, target, given)
            ),
        )
        return _enrol(steps, target, begin=begin, code=code, json_out=json_out)


def _begun(enrolment: TotpEnrolment) -> dict[str, str]:
    return {"account": enrolment.account, "uri": enrolment.uri, "secret": enrolment.secret}


def _enrol(steps: _Enrolment, target: str, *, begin: bool, code: str | None,
           json_out: bool) -> int:  # fmt: skip
    """Run an enrolment's steps and print as ``user totp-enroll`` does."""
    if code is None:
        started = steps.begin()
        if begin:
            if json_out:
                print_json({"account": target, "uri": started["uri"]})
            else:
                show(started["uri"])
            return 0
        show(f"Add this to your authenticator app (secret {started['secret']}):")
        show(started["uri"])
        _show_qr(started["uri"])
        code = str(typer.prompt("Code shown by the authenticator"))
    codes = steps.confirm(code)
    if json_out:
        print_json({"account": target, "totp_enrolled": True, "recovery_codes": codes})
        return 0
    show(f"TOTP enrolled for {plain(target)}. Recovery codes (each works once; keep them safe):")
    for recovery in codes:
        show(f"  {recovery}")
    return 0


@user_app.command("totp-reset")
def user_totp_reset(
    ctx: typer.Context,
    name: NameArg,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="Act as this administrator (default: NAME itself)."),
    ] = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
) -> int:
    """Remove an account's TOTP and recovery codes (a lost or replaced device); needs a
    fresh TOTP code of whoever acts. Remote-capable (--server): your own, or another's as
    the administrator logged in (--code for the step-up)."""
    target = account_name(name)
    remote = client.remote_session(ctx)
    if remote is not None:
        session, me = remote
        if code:
            session.post("/auth/step-up", {"code": code})
        if me == target:
            session.delete("/me/totp", {"account": target})
        else:
            session.delete(f"{client.route('accounts', target)}/totp")
    else:
        with (
            app_for(ctx) as application,
            acting(application, as_name or target, as_password_file, as_code) as (principal, _),
        ):
            identity.reset_totp(application, principal, target)
    show(f"TOTP of {plain(target)} removed; enrol a new one with `user totp-enroll`.")
    return 0


@user_app.command("link-oidc")
def user_link_oidc(
    ctx: typer.Context,
    name: NameArg,
    issuer: Annotated[
        str, typer.Option(help="The OpenID provider's issuer URL, exactly as it states it.")
    ],
    subject: Annotated[
        str, typer.Option(help="The person's subject identifier (`sub`) at that provider.")
    ],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Link a person's account to an OpenID provider's subject, for single sign-on (an
    administrator, with a fresh TOTP code). One subject maps to one account; a subject
    linked to no account is refused at login (no account is created on the fly).
    Remote-capable: --server (--code for the step-up)."""
    body = {"issuer": issuer, "subject": subject}
    data = client.remote_post(ctx, f"{client.route('accounts', name)}/oidc", body, code)
    if data is None:
        data = as_caller(ctx, lambda app, who: {"account": (
            identity.link_oidc(app, who, name, issuer=issuer, subject=subject).to_json()
        )})  # fmt: skip
    if json_out:
        print_json(data)
    else:
        account = data["account"]
        show(
            f"Linked {plain(account['name'])} to subject {plain(account['oidc_subject'])} of "
            f"{plain(account['oidc_issuer'])}."
        )
    return 0


# -- role --------------------------------------------------------------------------------------


@role_app.command("grant")
def role_grant(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Argument(metavar="ROLE", help="admin, operator, approver, ...")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Grant a role (an administrator, with a fresh TOTP code; never to oneself; a service
    account never gets admin, approver or security_officer). A gated operation; remote-capable:
    --server."""
    data = client.remote_post(ctx, f"{client.route('accounts', name)}/roles", {"role": role}, code)
    if data is None:
        data = as_caller(ctx, lambda app, who: {
            "grant": roles.grant_role(app, who, name, role).to_json()
        })  # fmt: skip
    grant = data["grant"]
    if json_out:
        print_json(data)
    else:
        show(f"Granted {grant['role']} to {plain(grant['account'])} (ledger seq {grant['seq']}).")
    return 0


@role_app.command("revoke")
def role_revoke(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Argument(metavar="ROLE")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
) -> int:
    """Revoke a role (an administrator, with a fresh TOTP code). A gated operation;
    remote-capable: --server."""
    done = client.remote_post(
        ctx, client.route("accounts", name, "roles", role), {}, code, method="DELETE"
    )
    if done is None:
        as_caller(ctx, lambda app, who: roles.revoke_role(app, who, name, role))  # fmt: skip
    show(f"Revoked {plain(role)} from {plain(name)}.")
    return 0


@role_app.command("list")
def role_list(
    ctx: typer.Context,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """The roles (with their permissions) and who holds them (remote-capable: --server)."""
    remote = client.remote(ctx)
    data = (
        remote.get("/roles")
        if remote is not None
        else as_caller(ctx, lambda app, who: roles.grants_json(roles.list_grants(app, who)))
    )  # fmt: skip
    if json_out:
        print_json(data)
        return 0
    holdings = data["accounts"]
    show(
        table(
            "Roles",
            ["role", "permissions", "for", "held by"],
            [
                [
                    r.value,
                    len(ROLES[r]),
                    ROLE_DESCRIPTIONS[r],
                    ", ".join(
                        plain(h["account"]) or "" for h in holdings if r.value in h["effective"]
                    ),
                ]
                for r in Role
            ],
        )
    )
    unconfirmed = [
        f"{h['account']}:{g['role']}"
        for h in holdings
        for g in h["grants"]
        if g["role"] not in h["effective"]
    ]
    if unconfirmed:
        show(
            "[yellow]catalog grants the ledger does not confirm (not counted):[/yellow] "
            + (plain(", ".join(unconfirmed)) or "")
        )
    return 0


# -- token -------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="A service account.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="A permission the token may use (repeatable)."),
    ],
    expires_in: Annotated[
        float, typer.Option("--expires-in", help="Days until the token expires (at most 90).")
    ],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    code: client.StepUpCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Issue an API token to a service account (an administrator, with a fresh TOTP code).
    The secret is printed once and never again."""
    scopes = set()
    for value in scope:
        try:
            scopes.add(Permission(value.strip()))
        except ValueError:
            raise InputError(
                f"{value[:60]!r} is not a permission",
                hint="docs/identities.md lists them (e.g. backup.run)",
            ) from None
    if not 0 < expires_in <= 3650:
        raise InputError(
            "--expires-in takes a number of days greater than 0", hint="e.g. --expires-in 30"
        )
    body = {"account": account, "scopes": sorted(p.value for p in scopes),
            "expires_in_days": expires_in}  # fmt: skip
    data = client.remote_post(ctx, "/tokens", body, code)
    if data is None:
        issued = as_caller(ctx, lambda app, who: (
            identity.create_token(app, who, account, scopes, timedelta(days=expires_in))
        ))  # fmt: skip
        data = {"token": issued.token.to_json(), "secret": issued.secret}
    if json_out:
        print_json(data)
        return 0
    token = data["token"]
    show(
        f"Token {token['id']} for {plain(token['account'])}, expires "
        f"{when(token['expires_at'])}. Its secret (shown only now):"
    )
    show(plain(data["secret"]))
    return 0


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Argument(metavar="[ACCOUNT]", help="Only this account's tokens.")
    ] = None,
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """List API tokens (never their secrets; remote-capable: --server)."""
    remote = client.remote(ctx)
    data = (
        remote.get("/tokens", account=account)
        if remote is not None
        else as_caller(ctx, lambda app, who: {
            "tokens": [t.to_json() for t in identity.list_tokens(app, who, account)]
        })
    )  # fmt: skip
    if json_out:
        print_json(data)
        return 0
    show(
        table(
            "API tokens",
            ["id", "account", "scopes", "expires", "revoked", "last used"],
            [
                [
                    t["id"],
                    plain(t["account"]),
                    ", ".join(t["scopes"]),
                    when(t["expires_at"]),
                    when(t["revoked_at"]),
                    when(t["last_used_at"]),
                ]
                for t in data["tokens"]
            ],
        )
    )
    return 0


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    as_name: AsOpt = None,
    as_password_file: AsPasswordFileOpt = None,
    as_code: AsCodeOpt = None,
) -> int:
    """Revoke an API token (remote-capable: --server)."""
    data = client.remote_post(ctx, client.route("tokens", token_id), {}, method="DELETE")
    if data is None:
        data = as_caller(ctx, lambda app, who: {
            "token": identity.revoke_token(app, who, token_id).to_json()
        })  # fmt: skip
    token = data["token"]
    show(f"Token {token['id']} of {plain(token['account'])} revoked.")
    return 0
