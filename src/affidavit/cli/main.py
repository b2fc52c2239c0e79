"""The ``affidavit`` command: global flags, command groups, and the one place errors are
turned into messages and exit codes.

Commands are registered lazily: a run that names its command imports only that command's
module (and the services below it), not all of them. ``affidavit backup run`` then starts
about a third of a second sooner, which counts in every timed run. A run without a known
command name (``--help``, a typo) registers everything, so help and "no such command" stay
complete."""

from __future__ import annotations

import sys

try:  # a Ctrl-C while these load (~40 ms) ends the command as one during it does
    import gc
    import importlib
    import os
    from pathlib import Path
    from typing import Annotated, NoReturn

    import typer
    from typer import Abort, Exit

    from affidavit import __version__
    from affidavit.cli.client import SERVER_ENV, SERVER_META, refuse_local
    from affidavit.cli.output import error, plain, print_json, show
    from affidavit.cli.state import CliState
    from affidavit.constants import ExitCode
    from affidavit.errors import ApprovalPending, Error

    try:  # typer >= 0.29 vendors click
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older typer depends on click
        from click.exceptions import ClickException  # type: ignore[assignment]
except KeyboardInterrupt:
    sys.stderr.write("error: interrupted\n")
    raise SystemExit(130) from None

INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (typer turns the ``KeyboardInterrupt`` of a
command into it)."""

# command name -> (module under affidavit.cli, function), in the order help lists them
_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("init_cmd", "init"),
    "inventory": ("inventory_cmd", "inventory"),
    "demo": ("demo_cmd", "demo"),
    "fingerprint": ("fingerprint_cmd", "fingerprint"),
    "diff": ("fingerprint_cmd", "diff"),
    "due": ("schedule_cmd", "due"),
    "run-due": ("schedule_cmd", "run_due"),
    "serve": ("serve_cmd", "serve"),
    "login": ("session_cmd", "login"),
    "logout": ("session_cmd", "logout"),
    "whoami": ("session_cmd", "whoami"),
}
# group name -> module under affidavit.cli whose ``app`` holds the group's commands
# (``module:attribute`` when a module holds several groups)
_GROUPS: dict[str, str] = {
    "source": "source_cmd",
    "vault": "vault_cmd",
    "dataset": "dataset_cmd",
    "backup": "backup_cmd",
    "hold": "hold_cmd",
    "keys": "keys_cmd",
    "verify": "verify_cmd",
    "drill": "drill_cmd",
    "ledger": "ledger_cmd",
    "policy": "policy_cmd",
    "finding": "finding_cmd",
    "exception": "exception_cmd",
    "baseline": "baseline_cmd",
    "evidence": "evidence_cmd",
    "user": "identity_cmd:user_app",
    "role": "identity_cmd:role_app",
    "token": "identity_cmd:token_app",
    "access-log": "access_log_cmd",
    "request": "request_cmd",
    "access": "access_cmd",
    "recipient": "recipient_cmd",
    "export": "export_cmd",
    "lineage": "lineage_cmd",
    "audit": "audit_cmd",
    "calendar": "calendar_cmd",
    "progress": "progress_cmd",
}
# global options that take a value (the command name is the first word after them)
_VALUE_OPTIONS = {"--home", "--actor", "--timeout", "--catalog-url", "--server"}


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="affidavit",
        help=(
            "Audit and certify backups and exports of NoSQL databases.\n\n"
            "Exit codes: 0 ok; 1 the subject failed a check; 2 bad input; "
            "3 an operation could not run; 4 internal error."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="markdown",
    )


def _version(value: bool) -> None:
    if value:
        show(f"affidavit {__version__}")
        raise typer.Exit(0)


def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Home folder (catalog, keys, affidavit.toml). "
            "Default: $AFFIDAVIT_HOME or ~/.affidavit.",
            show_default=False,
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Who is acting (recorded in the ledger). Default: login name."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for a source (connect_timeout).")
    ] = None,
    catalog_url: Annotated[
        str | None, typer.Option(help="Catalog database URL. Default: SQLite in the home.")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar=SERVER_ENV,
            help="Client mode: run the command through this affidavit server (after "
            "`affidavit login URL`); docs/server.md lists the commands that can.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options apply to every command."""
    ctx.obj = CliState(
        home=home,
        overrides={"actor": actor, "connect_timeout": timeout, "catalog_url": catalog_url},
    )
    ctx.meta[SERVER_META] = server or None


_SUBGROUPS: frozenset[str] = frozenset({"access review", "export spec", "audit request"})
"""Groups inside a group: their commands are three words."""


def _command_at(args: list[str]) -> int | None:
    """Where the command or group ``args`` name is, skipping the global options before it;
    None when there is none (or an option this function does not know comes first)."""
    position = 0
    while position < len(args):
        word = args[position]
        if not word.startswith("-"):
            return position
        if word in _VALUE_OPTIONS:
            position += 2
        elif word.split("=", 1)[0] in _VALUE_OPTIONS:
            position += 1
        else:
            return None  # --help, --version, or an unknown option: typer decides
    return None


def _command_name(args: list[str]) -> str | None:
    """The command or group ``args`` name (see :func:`_command_at`)."""
    position = _command_at(args)
    return None if position is None else args[position]


def _command_path(args: list[str]) -> str | None:
    """``group command`` (or the command) that ``args`` name, as ``COMMAND_PERMISSIONS``
    spells it; None when :func:`_command_at` finds none."""
    position = _command_at(args)
    if position is None:
        return None
    name = args[position]
    if name not in _GROUPS:
        return name
    words = (w for w in args[position + 1 :] if not w.startswith("-"))
    path = name
    for word in words:  # a group's command, or a sub-group's (``access review start``)
        path = f"{path} {word}"
        if path not in _SUBGROUPS:
            break
    return path


def _server_of(args: list[str]) -> str | None:
    """The ``--server`` among the global options before the command, else
    ``AFFIDAVIT_SERVER`` (what the root callback will see)."""
    end = _command_at(args)
    before = args[: end if end is not None else len(args)]
    for position, word in enumerate(before):
        if word == "--server" and position + 1 < len(before):
            return before[position + 1] or None
        if word.startswith("--server="):
            return word.split("=", 1)[1] or None
    return os.environ.get(SERVER_ENV) or None


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The CLI with the commands ``args`` needs (all of them when ``args`` is None or names
    no known command)."""
    cli = _new_app()
    cli.callback()(root)
    name = _command_name(args) if args is not None else None
    commands = [name] if name in _COMMANDS else [] if name in _GROUPS else list(_COMMANDS)
    groups = [name] if name in _GROUPS else [] if name in _COMMANDS else list(_GROUPS)
    for command in commands:
        module, function = _COMMANDS[command]
        loaded = importlib.import_module(f"affidavit.cli.{module}")
        cli.command(command)(getattr(loaded, function))
    for group in groups:
        module, _, attribute = _GROUPS[group].partition(":")
        loaded = importlib.import_module(f"affidavit.cli.{module}")
        cli.add_typer(getattr(loaded, attribute or "app"), name=group)
    return cli


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the CLI with ``argv`` and return the exit code; never raises.

    ``exiting`` (the console script): the process ends after this command, so the command's
    modules load with the cyclic collector paused (they make long-lived objects only, which
    it would walk again and again for nothing: ~40 ms of `verify`'s start-up) and are frozen
    once loaded (``gc.freeze``, see :func:`run`); never in a process that goes on (tests
    call ``main`` many times)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--help" not in args:
            refuse_local(_command_path(args), _server_of(args))
        collecting = exiting and gc.isenabled()
        if collecting:
            gc.disable()
        try:
            cli = build_app(args)
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
        result = cli(args=args, prog_name="affidavit", standalone_mode=False)
    except ApprovalPending as pending:  # not a failure: the operation waits for approval
        if "--json" in args:
            print_json({"state": "pending", "request": pending.request})
        else:
            show(f"{plain(pending.message)}\n[dim]next: {plain(pending.hint)}[/dim]")
        return int(pending.exit_code)
    except Error as exc:
        error(exc.message, exc.hint or None)
        return int(exc.exit_code)
    except Exit as exc:
        return int(exc.exit_code)
    except ClickException as exc:  # usage errors: unknown option, bad value, missing argument
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except (Abort, KeyboardInterrupt):
        error("interrupted")
        return INTERRUPTED
    except Exception as exc:  # a bug: say so plainly, keep the traceback for debugging
        if os.environ.get("AFFIDAVIT_DEBUG"):
            raise
        error(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in affidavit; rerun with AFFIDAVIT_DEBUG=1 for the traceback "
            "and report it",
        )
        return int(ExitCode.INTERNAL)
    code = int(result) if isinstance(result, int) else 0
    if code == INTERRUPTED:  # typer's word for a Ctrl-C in the command: say it, as above
        error("interrupted")
    return code


def run() -> NoReturn:
    """Console-script entry point.

    numpy serves affidavit for sorting and searching only, never for linear algebra, so the
    OpenBLAS it loads is kept to one thread (unless the environment says otherwise): its
    thread pool alone cost ~0.05 s of CPU at every start.

    The objects of the modules the command loads live until the process ends, so they are
    frozen (``gc.freeze``) as soon as the command's modules are loaded, and what the command
    loaded later once it is done: the cyclic collector then never walks them again, neither
    during the command nor in the interpreter's finalisation, which otherwise tore them all
    down at exit (~0.1-0.2 s of CPU for `verify`, docs/performance.md). The command's own
    objects are collected as before (its garbage, finalisers included, at the latest when the
    interpreter ends); files and the catalog are closed by the command itself."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main(exiting=True)
    gc.collect()
    gc.freeze()
    sys.exit(code)
