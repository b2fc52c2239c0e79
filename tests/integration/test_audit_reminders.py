"""Reminders of evidence requests against real servers on 127.0.0.1: an SMTP server
(``aiosmtpd``) that captures the messages, and an HTTP server (stdlib) that checks the
webhook's HMAC-SHA-256 signature. Before the due date, overdue, never twice; a failing
channel records nothing and is tried again by the next run."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from affidavit.cli.main import main
from affidavit.config import load_settings
from affidavit.crypto import totp
from affidavit.crypto.mac import signature_matches
from affidavit.models.calendar import ItemKind, ItemState
from affidavit.models.identity import Principal
from affidavit.models.permissions import Role
from affidavit.services import audit, audit_notify, calendar, principals, roles
from affidavit.services import identity as idn
from affidavit.services.context import App, open_app

SECRET = "reminder-signing-secret-0123456789"
PASSWORD = "correct horse battery 9"


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as probe:  # a free port (the controller checks it by connecting)
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@dataclass
class Hook:
    received: list[dict[str, Any]] = field(default_factory=list)
    forged: int = 0
    status: int = 200


@pytest.fixture
def webhook() -> Iterator[tuple[Hook, int]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            header = self.headers.get("X-Affidavit-Signature", "")
            if signature_matches(SECRET.encode(), body, header):
                hook.received.append(json.loads(body))
            else:
                hook.forged += 1
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _config(home: Path, smtp_port: int, hook_port: int) -> None:
    (home / "affidavit.toml").write_text(
        "[affidavit]\n"
        'audit_smtp_host = "127.0.0.1"\n'
        f"audit_smtp_port = {smtp_port}\n"
        "audit_smtp_starttls = false\n"
        'audit_smtp_from = "affidavit@corp.example"\n'
        'audit_remind_to = ["evidence-owners@corp.example"]\n'
        f'audit_webhook_url = "http://127.0.0.1:{hook_port}/hooks/affidavit"\n'
        "audit_remind_days_before = 2\n"
    )


def _people(app: App) -> tuple[Principal, Principal]:
    """An administrator and an auditor (with an e-mail address), logged in by password."""
    at = datetime.now(UTC) - timedelta(minutes=2)
    idn.bootstrap_admin(app, principals.local_principal(app), "admin", PASSWORD, now=at)
    first = idn.login(app, "admin", PASSWORD, client=app.client, now=at).principal
    enrolment = idn.begin_totp(app, first, "admin", now=at)
    idn.confirm_totp(app, first, "admin", totp.code_at(enrolment.secret, at), now=at)
    code = totp.code_at(enrolment.secret, datetime.now(UTC))
    admin = idn.login(app, "admin", PASSWORD, code, client=app.client).principal
    idn.create_account(app, admin, "auditor", password=PASSWORD, email="auditor@firm.example")
    roles.grant_role(app, admin, "auditor", Role.AUDITOR)
    return admin, idn.login(app, "auditor", PASSWORD, client=app.client).principal


def test_reminders_before_and_after_the_due_date_are_sent_once(
    home: Path,
    smtp: tuple[Mailbox, int],
    webhook: tuple[Hook, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box, smtp_port = smtp
    hook, hook_port = webhook
    _config(home, smtp_port, hook_port)
    monkeypatch.setenv("AFFIDAVIT_AUDIT_WEBHOOK_SECRET", SECRET)
    now = datetime.now(UTC)
    today = now.date()
    with open_app(load_settings(home=home)) as app:
        admin, auditor = _people(app)
        engagement = audit.open_engagement(
            app, admin, start=str(today - timedelta(days=90)), end=str(today),
            framework="soc2", auditor="auditor", expires=str(today + timedelta(days=30)),
        )  # fmt: skip
        request = audit.open_request(app, auditor, engagement.id, title="Drill reports",
                                     due=today + timedelta(days=5),
                                     items=["Q3 drills"])  # fmt: skip
        done = audit.open_request(app, auditor, engagement.id, title="Answered in time",
                                  due=today + timedelta(days=5))  # fmt: skip
        owner = admin  # nobody holds audit.respond here: answer as an operator below
        idn.create_account(app, owner, "owner", password=PASSWORD)
        roles.grant_role(app, owner, "owner", Role.OPERATOR)
        operator = idn.login(app, "owner", PASSWORD, client=app.client).principal
        audit.answer(app, operator, done.id, text="the reports", submit=True)
        local = principals.local_principal(app)

        # a week before the due date: nothing is due
        assert audit_notify.remind(app, local, now=now).sent == []
        # two days before: the "before" reminder, by e-mail and webhook
        before = datetime.combine(today + timedelta(days=4), time(12), UTC)  # due day - 1
        sent = audit_notify.remind(app, local, now=before)
        assert [(s["request"], s["kind"]) for s in sent.sent] == [(request.id, "before")]
        assert sent.failed == []
        # a second run sends nothing again
        assert audit_notify.remind(app, local, now=before + timedelta(hours=1)).sent == []
        (rcpts, mail), = box.messages  # fmt: skip
        assert rcpts == ["evidence-owners@corp.example"]
        assert mail["From"] == "affidavit@corp.example"
        assert request.id in mail["Subject"]
        assert "Drill reports" in mail.get_payload()
        assert [h["kind"] for h in hook.received] == ["before"]
        assert hook.received[0]["request"]["id"] == request.id
        assert hook.forged == 0

        # the webhook fails: nothing is recorded, the next run tries again
        hook.status = 500
        overdue_at = datetime.combine(today + timedelta(days=6), time(1), UTC)
        failing = audit_notify.remind(app, local, now=overdue_at)
        assert failing.sent == []
        assert failing.failed[0]["kind"] == "overdue"
        assert "500" in failing.failed[0]["error"]
        assert not audit.get_request(app, admin, request.id).reminded("overdue")
        hook.status = 200
        again = audit_notify.remind(app, local, now=overdue_at)
        assert [(s["request"], s["kind"]) for s in again.sent] == [(request.id, "overdue")]
        rcpts, mail = box.messages[-1]
        assert rcpts == ["evidence-owners@corp.example", "auditor@firm.example"]
        assert "OVERDUE" in mail["Subject"]
        assert hook.received[-1]["kind"] == "overdue"
        assert hook.received[-1]["request"]["overdue"] is True
        reminded = audit.get_request(app, admin, request.id)
        assert [r.kind for r in reminded.reminders] == ["before", "overdue"]
        assert not audit.get_request(app, admin, done.id).reminders  # answered: no reminder
        # the governance calendar shows the engagement's end and the due dates
        shown = calendar.build_calendar(app, admin, now=overdue_at)
        items = {i.subject: i for i in shown.items if i.kind is ItemKind.AUDIT}
        assert items[f"audit-request:{request.id}"].state is ItemState.OVERDUE
        assert items[f"audit-request:{done.id}"].state is ItemState.DONE
        assert items[f"audit:{engagement.id}"].state is ItemState.UPCOMING
    # the CLI for cron: nothing more is due, exit 0
    capsys.readouterr()
    assert main(["--home", str(home), "audit", "remind", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"sent": [], "failed": []}


def test_a_webhook_without_its_secret_sends_nothing(
    home: Path, smtp: tuple[Mailbox, int], webhook: tuple[Hook, int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    box, smtp_port = smtp
    hook, hook_port = webhook
    _config(home, smtp_port, hook_port)  # AFFIDAVIT_AUDIT_WEBHOOK_SECRET is not set
    capsys.readouterr()
    assert main(["--home", str(home), "audit", "remind"]) == 2
    err = capsys.readouterr().err
    assert "signing secret" in err
    assert "AFFIDAVIT_AUDIT_WEBHOOK_SECRET" in err
    assert box.messages == []
    assert hook.received == []
    (home / "affidavit.toml").write_text('[affidavit]\naudit_webhook_secret = "x"\n')
    assert main(["--home", str(home), "audit", "remind"]) == 2
    assert "must not hold" in capsys.readouterr().err
