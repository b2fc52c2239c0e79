"""The ``affidavit`` command: global flags, command groups, and the one place errors are
turned into messages and exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer import Abort, Exit

from affidavit import __version__
from affidavit.cli import (
    backup_cmd,
    baseline_cmd,
    dataset_cmd,
    drill_cmd,
    evidence_cmd,
    exception_cmd,
    finding_cmd,
    hold_cmd,
    keys_cmd,
    ledger_cmd,
    policy_cmd,
    source_cmd,
    vault_cmd,
    verify_cmd,
)
from affidavit.cli.demo_cmd import demo
from affidavit.cli.fingerprint_cmd import diff, fingerprint
from affidavit.cli.init_cmd import init
from affidavit.cli.inventory_cmd import inventory
from affidavit.cli.output import error, show
from affidavit.cli.schedule_cmd import due, run_due
from affidavit.cli.state import CliState
from affidavit.constants import ExitCode
from affidavit.errors import Error

try:  # typer >= 0.29 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException  # type: ignore[assignment]

app = typer.Typer(
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


@app.callback()
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


app.command("init")(init)
app.command("inventory")(inventory)
app.command("demo")(demo)
app.command("fingerprint")(fingerprint)
app.command("diff")(diff)
app.command("due")(due)
app.command("run-due")(run_due)
app.add_typer(source_cmd.app, name="source")
app.add_typer(vault_cmd.app, name="vault")
app.add_typer(dataset_cmd.app, name="dataset")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(hold_cmd.app, name="hold")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(verify_cmd.app, name="verify")
app.add_typer(drill_cmd.app, name="drill")
app.add_typer(ledger_cmd.app, name="ledger")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(finding_cmd.app, name="finding")
app.add_typer(exception_cmd.app, name="exception")
app.add_typer(baseline_cmd.app, name="baseline")
app.add_typer(evidence_cmd.app, name="evidence")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code; never raises."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="affidavit", standalone_mode=False)
    except Error as exc:
        error(exc.message, exc.hint or None)
        return int(exc.exit_code)
    except Exit as exc:
        return int(exc.exit_code)
    except ClickException as exc:  # usage errors: unknown option, bad value, missing argument
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except Abort:
        error("interrupted")
        return 130
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:  # a bug: say so plainly, keep the traceback for debugging
        if os.environ.get("AFFIDAVIT_DEBUG"):
            raise
        error(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in affidavit; rerun with AFFIDAVIT_DEBUG=1 for the traceback "
            "and report it",
        )
        return int(ExitCode.INTERNAL)
    return int(result) if isinstance(result, int) else 0


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
