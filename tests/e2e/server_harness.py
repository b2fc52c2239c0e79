"""Shared by the server tests: ``affidavit serve`` as a real process on a random loopback port
(stopped by PID), and a world of accounts made through the identity service (one person per
role with TOTP enrolled, a service account with a token), with TOTP codes from the real clock
that never repeat a time step."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from affidavit.config import load_settings
from affidavit.crypto import totp
from affidavit.models.identity import AccountKind, Principal
from affidavit.models.ledger import ClientInfo
from affidavit.models.permissions import ROLES, Role
from affidavit.services import identity as idn
from affidavit.services import principals, roles
from affidavit.services.context import App, open_app

PASSWORD = "correct horse battery 9"
SERVICE = "ci-bot"
CLIENT = ClientInfo(address="127.0.0.1", agent="pytest setup")
API = "/api/v1"


def password_file(folder: Path) -> Path:
    """A file of mode 0600 holding :data:`PASSWORD` (for ``--password-file``)."""
    path = folder / "pw"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running ``affidavit serve``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    verify: Any = True

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url + API, verify=self.verify, timeout=120, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(
    home: Path,
    *args: str,
    scheme: str = "http",
    verify: Any = True,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Served]:
    """``affidavit --home HOME serve --port P ARGS`` until the block ends (SIGTERM by PID,
    then SIGKILL); ``port``: P (default: a free one)."""
    port = port or free_port()
    log = home.parent / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), "serve",
             "--port", str(port), *args],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    served = Served(url=f"{scheme}://127.0.0.1:{port}", process=process, log=log, verify=verify)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"affidavit serve exited: {served.output()}")
            try:
                with served.client() as http:
                    if http.get("/health").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"affidavit serve did not start: {served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Login:
    """A session opened through the API."""

    name: str
    secret: str
    csrf: str
    body: dict[str, Any]
    opened: float = field(default_factory=time.monotonic)

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass
class World:
    """The accounts: ``admin`` (bootstrapped), one person per other role (named after it),
    each with TOTP, and the service account ``ci-bot`` (operator) with an API token holding
    every operator permission."""

    home: Path
    secrets: dict[str, str]  # account -> TOTP secret
    token: str
    recovery: list[str]  # the administrator's unused recovery codes
    used: dict[str, int] = field(default_factory=dict)  # account -> newest TOTP step used
    sessions: dict[str, Login] = field(default_factory=dict)
    _admin: tuple[Principal, float] | None = None

    def code(self, name: str) -> str:
        """A code of the account for a time step accepted now and never used before: the
        previous step while a few seconds of this one remain, this step, or the next (all
        still accepted if a step boundary passes before the server checks them)."""
        while True:
            moment = datetime.now(UTC).timestamp()
            now = int(moment) // 30
            early = moment - now * 30 < 27
            used = self.used.get(name, now - 2)
            step = max(now - 1 if early else now, used + 1)
            if step <= now + 1:
                self.used[name] = step
                return totp.code_at(self.secrets[name], datetime.fromtimestamp(step * 30, UTC))
            time.sleep(0.5)

    def session(self, http: httpx.Client, name: str) -> Login:
        """A session of the account opened through the API less than four minutes ago (so
        its MFA check is still fresh), reused between tests; :meth:`forget` after a logout."""
        cached = self.sessions.get(name)
        if cached is None or time.monotonic() - cached.opened > 240:
            cached = self.sessions[name] = self.login(http, name)
        return cached

    def forget(self, *names: str) -> None:
        for name in names or tuple(self.sessions):
            self.sessions.pop(name, None)

    def admin(self, app: App) -> Principal:
        """The administrator logged in through the service, MFA fresh (reused likewise)."""
        if self._admin is None or time.monotonic() - self._admin[1] > 240:
            grant = idn.login(app, "admin", PASSWORD, self.code("admin"), client=CLIENT)
            self._admin = (grant.principal, time.monotonic())
        return self._admin[0]

    def login(self, http: httpx.Client, name: str) -> Login:
        answer = http.post(
            "/auth/login", json={"name": name, "password": PASSWORD, "totp": self.code(name)}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Login(name=name, secret=body["secret"], csrf=body["csrf_token"], body=body)


PEOPLE = {
    "admin": Role.ADMIN,
    "operator": Role.OPERATOR,
    "approver": Role.APPROVER,
    "security_officer": Role.SECURITY_OFFICER,
    "auditor": Role.AUDITOR,
    "viewer": Role.VIEWER,
}


def make_world(home: Path) -> World:
    """Create the accounts through the identity service, ten minutes in the past (so that
    the codes used here are older than any used through the server)."""
    at = datetime.now(UTC) - timedelta(minutes=10)
    secrets: dict[str, str] = {}
    recovery: dict[str, list[str]] = {}
    with open_app(load_settings(home=home)) as app:

        def enrol(name: str) -> None:
            first = idn.login(app, name, PASSWORD, client=CLIENT, now=at)
            enrolment = idn.begin_totp(app, first.principal, name, now=at)
            codes = idn.confirm_totp(
                app, first.principal, name, totp.code_at(enrolment.secret, at), now=at
            )
            idn.logout(app, first.principal, now=at)
            secrets[name] = enrolment.secret
            recovery[name] = list(codes)

        idn.bootstrap_admin(app, principals.local_principal(app), "admin", PASSWORD, now=at)
        enrol("admin")
        later = at + timedelta(seconds=30)
        admin = idn.login(
            app, "admin", PASSWORD, totp.code_at(secrets["admin"], later), client=CLIENT, now=later
        ).principal
        for name, role in PEOPLE.items():
            if role is Role.ADMIN:
                continue
            idn.create_account(app, admin, name, password=PASSWORD, now=later)
            roles.grant_role(app, admin, name, role, now=later)
            enrol(name)
        idn.create_account(app, admin, SERVICE, kind=AccountKind.SERVICE, now=later)
        roles.grant_role(app, admin, SERVICE, Role.OPERATOR, now=later)
        issued = idn.create_token(
            app, admin, SERVICE, ROLES[Role.OPERATOR], timedelta(days=1), now=later
        )
        idn.logout(app, admin, now=later)
    world = World(home=home, secrets=secrets, token=issued.secret, recovery=recovery["admin"])
    world.used["admin"] = totp.time_step(later)
    return world


def copy_world(world: World, home: Path) -> World:
    """The world of a copy of ``world.home`` at ``home``: the same accounts, TOTP secrets,
    token and recovery codes, made once by :func:`make_world` (its argon2 hashing and logins
    take seconds) and copied per test; the codes and sessions the copy uses are its own.
    ``world`` should be one no test uses, so that its codes are all as made."""
    shutil.copytree(world.home, home)
    return World(
        home=home,
        secrets=dict(world.secrets),
        token=world.token,
        recovery=list(world.recovery),
        used=dict(world.used),
    )
