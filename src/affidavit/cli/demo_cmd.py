"""``affidavit demo`` and ``affidavit demo --serve``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from affidavit.cli.inventory_cmd import render_inventory
from affidavit.cli.output import JsonOpt, console, plain, print_json, show, table
from affidavit.cli.progress import reporting
from affidavit.cli.state import state
from affidavit.cli.views import inventory_json
from affidavit.config import load_settings
from affidavit.errors import OperationError
from affidavit.server import run as server
from affidavit.services.demo import DemoPerson, DemoResult, run_demo, seed_demo_people


def demo(
    ctx: typer.Context,
    scale: Annotated[int, typer.Option(min=1, max=100_000, help="Size of the sample.")] = 200,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then serve the demo's home (http://127.0.0.1:PORT) with four demo-only "
            "accounts (admin, operator, approver, auditor), until Ctrl-C or SIGTERM.",
        ),
    ] = False,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="TCP port of --serve (loopback only).")
    ] = server.DEFAULT_PORT,
    json_out: JsonOpt = False,
) -> int:
    """Run the story end to end on throwaway servers: start SecantusDB and redis-server on
    127.0.0.1, seed samples, register them and a folder vault, take the inventory. Uses a
    fresh temporary home unless --home is given. With --serve, end with `affidavit serve` on
    that home and print the demo-only accounts to log in with."""
    st = state(ctx)
    settings = st.settings
    options = server.ServeOptions(port=port)
    if serve:
        options.check()
        _port_free(port)  # refused before the demo spends its minute
    if st.home is None:
        home = Path(tempfile.mkdtemp(prefix="affidavit-demo-"))
        settings = load_settings(home=home, overrides=st.overrides)
    with reporting(json_out) as reporter:
        result = run_demo(settings, scale=scale, reporter=reporter)
        if reporter is not None and serve:
            reporter.stage("creating the demo-only accounts")
        people = seed_demo_people(settings) if serve else []
    url = f"http://{options.host}:{options.port}/"
    if json_out:
        out = _result_json(result)
        if serve:
            out["serve"] = _serve_json(people, url)
        print_json(out)
    else:
        _show_result(result)
        if serve:
            _show_serve(people, url)
    code = 0 if _all_good(result) else 1
    if not serve:
        return code
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    try:
        with _stopped_by_signals():
            served = server.serve(settings, options)  # until SIGINT / SIGTERM
    except _Stopped:
        served = 0  # stopped before it listened, or the server's stop passed the signal on
    return served or code


class _Stopped(Exception):
    """SIGINT or SIGTERM reached the demo outside uvicorn's own handlers."""


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Stopped` while the block runs. uvicorn installs its
    own handlers while it serves (a graceful stop) and then raises the signal again for the
    handlers it found, these: so a stopped demo exits with its status, not killed by it."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _port_free(port: int) -> None:
    """Refuse a port another process listens on (exit 3)."""
    with socket.socket() as sock:
        try:
            sock.bind((server.DEFAULT_HOST, port))
        except OSError as exc:
            raise OperationError(
                f"port {port} on {server.DEFAULT_HOST} is in use ({exc.strerror})",
                hint="choose another with --port",
            ) from exc


def _serve_json(people: list[DemoPerson], url: str) -> dict[str, Any]:
    return {
        "url": url,
        "pid": os.getpid(),
        "stop": f"Ctrl-C, or kill -TERM {os.getpid()}",
        "people": [
            {
                "name": p.name,
                "role": p.role.value,
                "password": p.password,
                "totp_secret": p.totp_secret,
                "totp_code_now": p.code(),
                "otpauth_uri": p.otpauth_uri,
            }
            for p in people
        ],
    }


def _show_serve(people: list[DemoPerson], url: str) -> None:
    show(
        table(
            "Demo-only accounts (random for this demo home: never use them anywhere else)",
            ["name", "role", "password", "TOTP secret", "code now"],
            [[p.name, p.role.value, p.password, p.totp_secret, p.code()] for p in people],
        )
    )
    show("Add a TOTP secret to an authenticator app with its otpauth URI (a code lasts 30 s):")
    for p in people:
        console.print(f"  {p.name}: {plain(p.otpauth_uri)}", soft_wrap=True)
    show(f"\nOpen [bold]{url}[/bold] and log in (name, password, TOTP code).")
    show(f"Stop the server with Ctrl-C (or: kill -TERM {os.getpid()}).")


def _result_json(result: DemoResult) -> dict[str, Any]:
    return {
        "home": str(result.home),
        "seeded": result.seeded,
        "inventory": inventory_json(result.inventory),
        "fingerprints": {
            source: [
                {
                    "name": r.name,
                    "records": r.fingerprint.count,
                    "fingerprint": r.fingerprint.text,
                }
                for r in results
            ]
            for source, results in result.fingerprints.items()
        },
        "backups": [
            {
                "backup_id": b.id,
                "source": b.source,
                "status": b.status.value,
                "artifacts": len(b.artifacts),
                "datasets": {d.name: d.fingerprint for d in b.datasets},
            }
            for b in result.backups
        ],
        "verifications": [
            {"backup_id": v.backup_id, "ok": v.ok, "findings": [f.code for f in v.findings]}
            for v in result.verifications
        ],
        "drills": [
            {
                "backup_id": d.backup_id,
                "ok": d.ok,
                "restore_seconds": d.restore_seconds,
                "fingerprint_match": d.fingerprint_match,
            }
            for d in result.drills
        ],
        "tampered": {
            "backup_id": result.tampered.backup_id,
            "caught": not result.tampered.ok,
            "findings": [f.code for f in result.tampered.findings],
        },
        "ledger": result.ledger.to_json(),
        "policy_check": {
            "ok": result.check.ok,
            "run_id": result.check.run_id,
            "summary": result.check.to_json()["summary"],
            "findings": [
                {"id": f.id, "control": f.control, "subject": f.subject}
                for f in result.check.opened
            ],
            "excepted": [
                {"control": r.control, "subject": r.subject}
                for r in result.check.results
                if r.status.value == "excepted"
            ],
        },
        "evidence": result.evidence.to_json(),
        "evidence_verify": result.evidence_report.to_json(),
        "report_html": str(result.report_html),
        "vkey": result.vkey,
    }


def _show_result(result: DemoResult) -> None:
    render_inventory(inventory_json(result.inventory))
    show(
        table(
            "Content fingerprints (exact profile, live)",
            ["source", "dataset", "records", "fingerprint"],
            [
                [source, r.name, f"{r.fingerprint.count:,}", r.fingerprint.root.hex()]
                for source, results in result.fingerprints.items()
                for r in results
            ],
        )
    )
    live = {
        (source, r.name): r.fingerprint.text
        for source, results in result.fingerprints.items()
        for r in results
    }
    show(
        table(
            "Backups (age-encrypted, read-only in the vault, signed manifest)",
            ["backup", "source", "status", "artifacts", "datasets", "fingerprints = live"],
            [
                [
                    b.id,
                    b.source,
                    b.status,
                    len(b.artifacts),
                    len(b.datasets),
                    "yes"
                    if all(live.get((b.source or "", d.name)) == d.fingerprint for d in b.datasets)
                    else "[red]NO[/red]",
                ]
                for b in result.backups
            ],
        )
    )
    show(
        table(
            "Verification and restore drills",
            ["backup", "verify", "drill", "restore s", "fingerprint after restore"],
            [
                [
                    v.backup_id,
                    "[green]ok[/green]" if v.ok else f"[red]failed[/red] {len(v.findings)}",
                    "[green]ok[/green]" if d.ok else "[red]failed[/red]",
                    f"{d.restore_seconds:.2f}",
                    "matches manifest" if d.fingerprint_match else "[red]differs[/red]",
                ]
                for v, d in zip(result.verifications, result.drills, strict=True)
            ],
        )
    )
    codes = ", ".join(sorted({f.code for f in result.tampered.findings}))
    caught = "[green]caught[/green]" if not result.tampered.ok else "[red]NOT caught[/red]"
    show(f"Tampered copy {result.tampered.backup_id}: one flipped byte {caught} ({codes}).")
    verdict = "[green]verifies[/green]" if result.ledger.ok else "[red]does NOT verify[/red]"
    show(
        f"Ledger: {result.ledger.size} events, root {result.ledger.root.hex()[:16]}…, {verdict} "
        "against its signed checkpoint."
    )
    check = result.check
    show(
        table(
            f"Policy check {check.run_id}: findings (proposed by alice, approved by bob)",
            ["finding", "control", "subject", "severity", "owner", "detail"],
            [
                [
                    f.id,
                    f.control,
                    plain(f.subject),
                    f.severity.value,
                    plain(f.owner),
                    plain(f.message),
                ]
                for f in sorted(check.opened, key=lambda f: (f.severity.rank, f.control))
            ],
        )
    )
    counts = check.to_json()["summary"]
    show("Controls: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    ev, verified = result.evidence, result.evidence_report
    verdict = "[green]verified[/green]" if verified.ok else "[red]NOT verified[/red]"
    show(
        f"Evidence package: {ev.path} ({ev.files} files, {ev.events} events with inclusion "
        f"proofs) {verdict} offline with the public key alone."
    )
    show(f"HTML report: [bold]{result.report_html}[/bold]")
    show(f"Verify it yourself: affidavit evidence verify {ev.path} --public-key '{result.vkey}'")
    show(f"\nDemo home: [bold]{result.home}[/bold] (servers stopped).")
    show(f"Look around: affidavit --home {result.home} ledger show")
    show(f"Index files (for `affidavit diff`): {result.home / 'fingerprints'}")


def _all_good(result: DemoResult) -> bool:
    """Everything that should pass passed, and the tampered copy was caught."""
    return (
        result.ledger.ok
        and all(v.ok for v in result.verifications)
        and all(d.ok for d in result.drills)
        and not result.tampered.ok
        and result.evidence_report.ok
    )
