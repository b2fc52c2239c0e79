"""The remaining commands through a real ``affidavit serve`` in client mode (issue 15):
sources and vaults registered and a source tested through the server print what they print
locally; an account's credentials (passwords, TOTP, lockouts, single sign-on links) change
through the server with the permissions and step-up the services demand. Every permission is
tried by someone who lacks it (refused, exit 2, nothing recorded, the denial in the access
log); bad input is one line with a hint and changes nothing; no password or TOTP secret
reaches the ledger or the access log."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import PASSWORD, Served, World, make_world, password_file, serving

from affidavit.cli.client import Client, refuse_local
from affidavit.config import load_settings
from affidavit.errors import InputError
from affidavit.models.access import Outcome
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import access_log
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e


@dataclass
class Setup:
    cli: Any
    served: Served
    world: World
    password: Path
    tmp: Path

    @property
    def home(self) -> Path:
        return self.world.home

    @property
    def remote(self) -> tuple[str, str]:
        return ("--server", self.served.url)

    def login(self, name: str, password: Path | None = None, code: str | None = None) -> None:
        done = self.cli("login", self.served.url, "--name", name, "--password-file",
                        str(password or self.password), "--code",
                        self.world.code(name) if code is None else code)  # fmt: skip
        assert done.code == 0, done.err

    def as_(self, name: str) -> tuple[str, ...]:
        return ("--as", name, "--as-password-file", str(self.password),
                "--as-code", self.world.code(name))  # fmt: skip

    def through(self, *args: str) -> Any:
        return self.cli(*self.remote, *args)

    def refused(self, *args: str, text: str, code: int = 2) -> Any:
        result = self.through(*args)
        assert result.code == code, (args, result.out, result.err)
        assert text in result.err, result.err
        assert "Traceback" not in result.err
        assert len([line for line in result.err.splitlines() if line.strip()]) <= 2, result.err
        return result


@pytest.fixture
def setup(cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    password = password_file(tmp_path)
    with serving(home) as served:
        yield Setup(cli=cli, served=served, world=world, password=password, tmp=tmp_path)


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select entry from ledger_entries where action = ? order by seq",
                          (action,))  # fmt: skip
        return [json.loads(e) for (e,) in rows]


def _access(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app)]


def _denied(home: Path, identity: str, method: str, route: str) -> list[dict[str, Any]]:
    return [
        e
        for e in _access(home)
        if (e.get("identity"), e.get("method"), e.get("route"), e.get("outcome"))
        == (identity, method, route, "denied")
    ]


def _nowhere_in_the_logs(home: Path, *secrets: str) -> None:
    """None of ``secrets`` is in the catalog's ledger or access log (nor the server's log)."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            if "ledger" in table or "access" in table:
                for row in db.execute(f"select * from {table}"):  # (names from sqlite)
                    text = " ".join(str(v) for v in row)
                    for secret in secrets:
                        assert secret not in text, (table, secret)


def _private(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_sources_and_vaults_through_the_server(
    setup: Setup, fresh_redis: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cli = setup.home, setup.cli
    add = ("--engine", "redis", "--uri", fresh_redis.uri, "--classification", "internal",
           "--region", "eu-west-1", "--owner", "team@example.com")  # fmt: skip
    # a viewer may not register a source or a vault: refused, logged, nothing recorded
    setup.login("viewer")
    setup.refused("source", "add", "cache", *add, text="may not source.manage")
    setup.refused("vault", "add", "v1", "--url", f"file://{setup.tmp / 'v'}",
                  text="may not vault.manage")  # fmt: skip
    setup.refused("source", "test", "nothing", text="may not source.test")
    assert _denied(home, "viewer", "POST", "/api/v1/sources")
    assert _denied(home, "viewer", "POST", "/api/v1/vaults")
    assert _events(home, "source.added") == _events(home, "vault.added") == []
    # an operator tests sources but registers none
    setup.login("operator")
    setup.refused("source", "add", "cache", *add, text="may not source.manage")
    assert _denied(home, "operator", "POST", "/api/v1/sources")

    setup.login("admin")
    # bad input: one line and a hint, nothing recorded, the password never echoed or logged
    secret_pw = "pw-never-shown-7"
    bad = setup.refused("source", "add", "x", "--engine", "redis", "--uri",
                        f"redis://user:{secret_pw}@127.0.0.1:9", "--classification",
                        "internal", text="carries a password")  # fmt: skip
    assert secret_pw not in bad.err + bad.out
    setup.refused("source", "add", "x", *add[:4], "--classification", "top",
                  text="classification")  # fmt: skip
    setup.refused("source", "add", "x", *add, "--secret-env", "AFFIDAVIT_OIDC_CLIENT_SECRET",
                  text="affidavit's own settings")  # fmt: skip
    setup.refused("source", "add", "x", *add, "--secret-file", "pw.txt",
                  text="absolute path")  # fmt: skip
    setup.refused("source", "add", "x", *add, "--secret-file", str(home / "keys" / "x"),
                  text="inside affidavit's home")  # fmt: skip
    setup.refused("source", "add", "x", *add, "--secret-env", "A", "--secret-file", "/f",
                  text="not both")  # fmt: skip
    setup.refused("vault", "add", "x", "--url", "ftp://nowhere/x", text="ftp")
    setup.refused("vault", "add", "x", "--url", f"file://{setup.tmp / 'v'}", "--immutable-days",
                  "0", text="--immutable-days")  # fmt: skip
    assert _events(home, "source.added") == _events(home, "vault.added") == []
    _nowhere_in_the_logs(home, secret_pw)
    assert secret_pw not in setup.served.output()

    # registered through the server: the same output as locally (but for the name)
    local = cli("source", "add", "local-cache", *add, "--secret-env", "REDIS_PW")
    through = setup.through("source", "add", "cache", *add, "--secret-env", "REDIS_PW")
    assert (local.code, through.code) == (0, 0), through.err
    assert through.out == local.out.replace("local-cache", "cache")
    local = json.loads(cli("source", "add", "local-2", *add, "--json").out)
    through_json = json.loads(setup.through("source", "add", "cache-2", *add, "--json").out)
    for data in (local, through_json):
        data.pop("name"), data.pop("created_at")
    assert through_json == local
    added = _events(home, "source.added")
    assert [(e["subject"], e["actor"]) for e in added if e["actor"] == "admin"] == [
        ("source:cache", "admin"),
        ("source:cache-2", "admin"),
    ]
    assert added[-1]["details"]["auth"] == "session"
    setup.refused("source", "add", "cache", *add, text="cache")  # already there
    assert len(_events(home, "source.added")) == 4

    vault_dir = setup.tmp / "vault"
    local = cli("vault", "add", "local-v", "--url", f"file://{vault_dir}", "--region", "eu")
    through = setup.through("vault", "add", "v1", "--url", f"file://{vault_dir}", "--region", "eu")
    assert (local.code, through.code) == (0, 0), through.err
    assert through.out == local.out.replace("local-v", "v1")
    as_json = json.loads(setup.through("vault", "add", "v2", "--url", f"file://{vault_dir}",
                                       "--immutable-days", "7", "--json").out)  # fmt: skip
    assert (as_json["name"], as_json["immutable_days"]) == ("v2", 7)
    assert [e["actor"] for e in _events(home, "vault.added")] == ["tester@example.com", "admin",
                                                                  "admin"]  # fmt: skip

    # an operator tests a source from the server's host: the same output, exit codes too
    monkeypatch.delenv("REDIS_PW", raising=False)
    assert cli("source", "add", "dead", "--engine", "redis", "--uri", "redis://127.0.0.1:9",
               "--classification", "internal").code == 0  # fmt: skip
    setup.login("operator")
    before = len(_access(home))
    for args, code in (
        (("source", "test", "cache-2"), 0),
        (("source", "test", "cache-2", "--json"), 0),
        (("source", "test", "dead"), 3),
        (("source", "test", "dead", "--json"), 3),
        (("source", "test", "nowhere"), 2),
    ):
        mine, theirs = cli(*args), setup.through(*args)
        assert (mine.code, theirs.code) == (code, code), (args, theirs.err)
        assert (theirs.out, theirs.err) == (mine.out, mine.err), args
    assert json.loads(setup.through("source", "test", "cache-2", "--json").out)["reachable"]
    tested = [e for e in _access(home)[before:] if e.get("route") == "/api/v1/sources/{name}/test"]
    assert {(e["identity"], e["outcome"]) for e in tested} >= {("operator", "allowed")}
    assert not _events(home, "source.tested")


def test_credentials_through_the_server(setup: Setup) -> None:
    home, cli = setup.home, setup.cli
    new_pw = _private(setup.tmp / "new-pw", "a brand new passphrase 42")
    actions = ("account.password_set", "identity.totp_reset", "account.unlocked",
               "account.oidc_linked", "identity.totp_enrolment_started")  # fmt: skip
    before = {action: len(_events(home, action)) for action in actions}

    # an operator may not set someone else's password, reset their TOTP, unlock or link them
    setup.login("operator")
    setup.refused("user", "passwd", "viewer", "--new-password-file", str(new_pw),
                  text="may not account.manage")  # fmt: skip
    setup.refused("user", "totp-reset", "viewer", text="may not account.manage")
    setup.refused("user", "unlock", "viewer", text="may not account.manage")
    setup.refused("user", "link-oidc", "viewer", "--issuer", "https://idp.example",
                  "--subject", "s-1", text="may not account.manage")  # fmt: skip
    # nor enrol another person's TOTP (the session's own account only)
    setup.refused("user", "totp-enroll", "viewer", "--begin", text="logged in as 'operator'")
    for method, route in (
        ("POST", "/api/v1/accounts/{name}/password"),
        ("DELETE", "/api/v1/accounts/{name}/totp"),
        ("POST", "/api/v1/accounts/{name}/unlock"),
        ("POST", "/api/v1/accounts/{name}/oidc"),
    ):
        assert _denied(home, "operator", method, route), route
    assert {action: len(_events(home, action)) for action in actions} == before

    # one's own password: with the current one (a wrong one is a refused login, exit 3)
    wrong = _private(setup.tmp / "wrong", "not the password at all")
    setup.refused("user", "passwd", "operator", "--new-password-file", str(new_pw),
                  "--as-password-file", str(wrong), text="login refused", code=3)  # fmt: skip
    weak = _private(setup.tmp / "weak", "short")
    setup.refused("user", "passwd", "operator", "--new-password-file", str(weak),
                  "--as-password-file", str(setup.password), text="password")  # fmt: skip
    assert _events(home, "account.password_set") == []
    done = setup.through("user", "passwd", "operator", "--new-password-file", str(new_pw),
                         "--as-password-file", str(setup.password))  # fmt: skip
    assert done.code == 0, done.err
    assert done.out == "Password of operator changed; its other sessions ended.\n"
    (event,) = _events(home, "account.password_set")
    assert (event["actor"], event["subject"]) == ("operator", "account:operator")
    with setup.served.client() as http:
        old = http.post("/auth/login", json={"name": "operator", "password": PASSWORD,
                                             "totp": setup.world.code("operator")})  # fmt: skip
        assert old.status_code == 401
    setup.login("operator", password=new_pw)

    # an administrator sets another's password (a fresh MFA check: --code steps up)
    setup.login("admin")
    done = setup.through("user", "passwd", "viewer", "--new-password-file", str(new_pw),
                         "--code", setup.world.code("admin"))  # fmt: skip
    assert done.code == 0, done.err
    assert [e["actor"] for e in _events(home, "account.password_set")] == ["operator", "admin"]
    setup.login("viewer", password=new_pw)

    # TOTP: a new person enrols their own through the server (the URI to them only)
    setup.login("admin")
    added = setup.through("user", "add", "newbie", "--password-file", str(setup.password))
    assert added.code == 0, added.err
    setup.login("newbie", code="")
    begun = setup.through("user", "totp-enroll", "newbie", "--begin", "--json")
    assert begun.code == 0, begun.err
    uri = json.loads(begun.out)["uri"]
    secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    setup.refused("user", "totp-enroll", "newbie", "--code", "000000",
                  text="does not match")  # fmt: skip
    setup.refused("user", "totp-enroll", "newbie", "--begin", "--code", "1", text="not both")
    setup.world.secrets["newbie"] = secret
    enrolled = setup.through("user", "totp-enroll", "newbie", "--code",
                             setup.world.code("newbie"), "--json")  # fmt: skip
    assert enrolled.code == 0, enrolled.err
    body = json.loads(enrolled.out)
    assert (body["account"], body["totp_enrolled"], len(body["recovery_codes"])) == (
        "newbie", True, 10)  # fmt: skip
    _nowhere_in_the_logs(home, secret, *body["recovery_codes"])
    setup.login("newbie")  # the new TOTP works

    # the administrator resets it (newbie's device is lost); an operator could not
    setup.login("admin")
    reset = setup.through("user", "totp-reset", "newbie", "--code", setup.world.code("admin"))
    assert reset.code == 0, reset.err
    assert reset.out == ("TOTP of newbie removed; enrol a new one with `user totp-enroll`.\n")
    setup.refused("user", "totp-reset", "newbie", text="no TOTP to reset")
    assert [(e["actor"], e["subject"]) for e in _events(home, "identity.totp_reset")] == [
        ("admin", "account:newbie")
    ]

    # a lockout lifted by an administrator, as locally
    def lock(name: str) -> None:
        with setup.served.client() as http:
            for _ in range(5):
                http.post("/auth/login", json={"name": name, "password": "wrong wrong wrong"})

    lock("auditor")
    setup.refused("user", "unlock", "nobody", text="nobody")
    unlocked = setup.through("user", "unlock", "auditor")
    assert unlocked.code == 0, unlocked.err
    setup.refused("user", "unlock", "auditor", text="not locked")
    lock("auditor")
    local = cli("user", "unlock", "auditor", *setup.as_("admin"))
    assert (local.code, local.out) == (unlocked.code, unlocked.out), local.err
    lock("auditor")
    as_json = json.loads(setup.through("user", "unlock", "auditor", "--json").out)
    assert as_json["account"]["name"] == "auditor"
    assert [e["actor"] for e in _events(home, "account.unlocked")] == ["admin"] * 3

    # single sign-on links, as locally
    linked = setup.through("user", "link-oidc", "viewer", "--issuer", "https://idp.example",
                           "--subject", "s-1", "--code", setup.world.code("admin"))  # fmt: skip
    assert linked.code == 0, linked.err
    local = cli("user", "link-oidc", "approver", "--issuer", "https://idp.example",
                "--subject", "s-2", *setup.as_("admin"))  # fmt: skip
    assert local.code == 0, local.err
    assert linked.out == local.out.replace("approver", "viewer").replace("s-2", "s-1")
    setup.refused("user", "link-oidc", "approver", "--issuer", "https://idp.example",
                  "--subject", "s-1", text="s-1")  # one subject, one account  # fmt: skip
    setup.refused("user", "link-oidc", "ci-bot", "--issuer", "https://idp.example",
                  "--subject", "s-3", text="service account")  # fmt: skip
    assert [e["actor"] for e in _events(home, "account.oidc_linked")] == ["admin", "admin"]
    _nowhere_in_the_logs(home, "a brand new passphrase 42", PASSWORD, secret)
    for never in ("a brand new passphrase 42", PASSWORD, secret, *body["recovery_codes"]):
        assert never not in setup.served.output()  # the server's own log


def test_credentials_need_a_session_not_a_token(setup: Setup) -> None:
    """An API token never changes a password or a TOTP (its account has none anyway)."""
    before = len(_events(setup.home, "identity.totp_enrolment_started"))
    with httpx.Client(base_url=setup.served.url + "/api/v1") as http:
        bearer = {"Authorization": f"Bearer {setup.world.token}"}
        for method, path, body in (
            (
                "POST",
                "/me/password",
                {"account": "ci-bot", "current_password": "x", "password": "y" * 20},
            ),
            ("POST", "/me/totp", {"account": "ci-bot"}),
            ("DELETE", "/me/totp", {"account": "ci-bot"}),
        ):
            answer = http.request(method, path, json=body, headers=bearer)
            assert answer.status_code == 403, (path, answer.text)
    assert len(_events(setup.home, "identity.totp_enrolment_started")) == before
    assert _denied(setup.home, "ci-bot", "POST", "/api/v1/me/password")


def test_log_exports_and_expiry_through_the_server(
    cli: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    old = datetime.now(UTC) - timedelta(days=500)
    with open_app(load_settings(home=home)) as app:  # two entries past any retention
        access_log.record(app, [access_log.request_entry(
            started=old + timedelta(seconds=n), identity="alice", auth_method="session",
            method="GET", route="/api/v1/backups", outcome=Outcome.ALLOWED, status=200,
        ) for n in range(2)])  # fmt: skip
    world = make_world(home)
    password = password_file(tmp_path)
    vkey = cli("ledger", "key").out.strip()
    with serving(home) as served:
        setup = Setup(cli=cli, served=served, world=world, password=password, tmp=tmp_path)
        out = tmp_path / "exports"
        out.mkdir()
        # a viewer may export nothing and expire nothing; nor may an auditor, who reads
        # through its audit engagements only
        for name in ("viewer", "auditor"):
            refusals = (("ledger", "export", "--out", str(out / f"{name}1")), "ledger.export",
                        ("access-log", "export", "--out", str(out / f"{name}2")),
                        "access_log.export", ("access-log", "expire"), "access_log.expire")  # fmt: skip
            setup.login(name)
            pairs = zip(refusals[::2], refusals[1::2], strict=True)
            for args, permission in pairs:
                setup.refused(*args, text=f"may not {permission}")  # type: ignore[misc]
        assert _denied(home, "viewer", "POST", "/api/v1/ledger/exports")
        assert _denied(home, "viewer", "POST", "/api/v1/access-log/exports")
        assert _denied(home, "auditor", "POST", "/api/v1/access-log/expire")
        assert _denied(home, "auditor", "POST", "/api/v1/ledger/exports")
        assert _denied(home, "auditor", "POST", "/api/v1/access-log/exports")
        assert list(out.iterdir()) == []
        for action in ("ledger.exported", "access_log.exported", "access_log.expired"):
            assert _events(home, action) == [], action

        # a security officer's exports: downloaded new (0600), checked, verifiable offline
        setup.login("security_officer")
        target = out / "ledger.jsonl"
        done = setup.through("ledger", "export", "--out", str(target))
        assert done.code == 0, done.err
        data = target.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (event,) = _events(home, "ledger.exported")
        assert (event["actor"], event["details"]["sha256"]) == ("security_officer", digest)
        entries = len(data.splitlines()) - 1 - event["details"]["checkpoints"]
        assert " ".join(done.out.split()) == (  # (rich wraps long lines)
            f"Exported {event['details']['entries']} entries and "
            f"{event['details']['checkpoints']} checkpoints to {target} (sha256 {digest})."
        )
        assert entries == event["details"]["entries"]
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        checked = cli("ledger", "verify", "--file", str(target), "--public-key", vkey,
                      home_dir=None)  # fmt: skip
        assert checked.code == 0, checked.err
        local = json.loads(cli("ledger", "export", "--out", str(out / "local.jsonl"),
                               "--json").out)  # fmt: skip
        through = json.loads(setup.through("ledger", "export", "--out", str(out / "l2.jsonl"),
                                           "--json").out)  # fmt: skip
        assert set(through) == set(local) and through["path"] == str(out / "l2.jsonl")
        assert through["sha256"] == hashlib.sha256((out / "l2.jsonl").read_bytes()).hexdigest()
        # an existing --out: refused before the server is asked (nothing recorded)
        setup.refused("ledger", "export", "--out", str(target), text="already exists")
        assert len(_events(home, "ledger.exported")) == 3
        downloads = [e for e in _access(home)
                     if e.get("route") == "/api/v1/ledger/exports/{ledger_export_id}"]  # fmt: skip
        assert downloads and downloads[0]["subject"].startswith("ledger-export:lx-")

        # a file changed on the way is refused and removed (exit 1)
        real = Client.download

        def tampered(self: Client, path: str, into: Path) -> None:
            real(self, path, into)
            into.write_bytes(into.read_bytes().replace(b"auditor", b"auditer"))

        monkeypatch.setattr(Client, "download", tampered)
        bad = setup.through("access-log", "export", "--out", str(out / "bad.jsonl"))
        assert bad.code == 1 and "changed on the way" in bad.err, bad.err
        assert not (out / "bad.jsonl").exists()
        monkeypatch.setattr(Client, "download", real)

        access = out / "access.jsonl"
        done = setup.through("access-log", "export", "--out", str(access), "--json")
        assert done.code == 0, done.err
        summary = json.loads(done.out)
        assert summary["sha256"] == hashlib.sha256(access.read_bytes()).hexdigest()
        assert summary["path"] == str(access) and summary["expired"] == 0
        offline = cli("access-log", "verify", "--file", str(access), "--public-key", vkey,
                      home_dir=None)  # fmt: skip
        assert offline.code == 0, offline.err

        # the security officer applies the retention policy through the server
        setup.refused("access-log", "expire", "--older-than-days", "0", text="between 1 and")
        expired = setup.through("access-log", "expire", "--older-than-days", "400")
        assert expired.code == 0, expired.err
        (event,) = _events(home, "access_log.expired")
        assert event["actor"] == "security_officer"
        assert " ".join(expired.out.split()) == (
            f"expired 2 entries (seq 0..1, older than {event['details']['older_than']}); "
            f"recorded at ledger seq {event['seq']}"
        )
        again = json.loads(setup.through("access-log", "expire", "--json").out)
        local = json.loads(cli("access-log", "expire", "--json").out)
        assert (again["count"], local["count"]) == (0, 0)
        assert set(again) == set(local)
        assert len(_events(home, "access_log.expired")) == 1


def test_calendar_and_progress_through_the_server(s3_env: str, setup: Setup) -> None:
    import boto3

    home, cli = setup.home, setup.cli
    # a viewer reads the calendar exactly as locally; `calendar` alone is `calendar show`
    setup.login("viewer")
    for args in (
        ("calendar",),
        ("calendar", "--json"),
        ("calendar", "--from", "2026-01-01", "--to", "2027-12-31"),
        ("calendar", "show", "--from", "2026-01-01", "--to", "2027-12-31", "--json"),
    ):
        mine, theirs = cli(*args), setup.through(*args)
        assert (mine.code, theirs.code) == (0, 0), theirs.err
        if "--json" in args:  # (but for the moment it was made, and the ledger's size then)
            ours, served = json.loads(mine.out), json.loads(theirs.out)
            for data in (ours, served):
                data.pop("generated_at"), data.pop("ledger_size")
            assert served == ours and served["items"], args
        else:
            assert (theirs.out, theirs.err) == (mine.out, mine.err), args
    setup.refused("calendar", "--from", "2026-13-01", text="--from")

    def events_of(feed: bytes) -> list[bytes]:  # (DTSTAMP: the moment the feed is made)
        return [line for line in feed.splitlines() if not line.startswith(b"DTSTAMP")]

    mine = cli("calendar", "ics", "--out", str(setup.tmp / "mine.ics"))
    theirs = setup.through("calendar", "ics", "--out", str(setup.tmp / "theirs.ics"))
    assert (mine.code, theirs.code) == (0, 0), theirs.err
    assert theirs.out == mine.out.replace("mine.ics", "theirs.ics")
    assert events_of((setup.tmp / "theirs.ics").read_bytes()) == events_of(
        (setup.tmp / "mine.ics").read_bytes()
    )
    assert b"BEGIN:VCALENDAR" in (setup.tmp / "theirs.ics").read_bytes()

    # a viewer may not enter or remove deadlines, nor publish progress
    setup.refused("calendar", "add", "SOC 2 report", "--due", "2027-03-31",
                  text="may not calendar.manage")  # fmt: skip
    setup.refused("calendar", "remove", "dl-0000", text="may not calendar.manage")
    setup.refused("progress", "publish", "--out", "s3://site/acme",
                  text="may not progress.publish")  # fmt: skip
    assert _denied(home, "viewer", "POST", "/api/v1/calendar/deadlines")
    assert _denied(home, "viewer", "POST", "/api/v1/progress")
    assert _events(home, "calendar.deadline_added") == []

    # an administrator enters and removes deadlines through the server, as locally
    setup.login("admin")
    setup.refused("calendar", "add", "x", "--due", "2027-02-30", text="2027-02-30")
    setup.refused("calendar", "add", "x", "--due", "2027-02-01", "--every", "forever",
                  text="forever")  # fmt: skip
    setup.refused("calendar", "remove", "dl-missing", text="dl-missing")
    assert _events(home, "calendar.deadline_added") == []
    mine = cli("calendar", "add", "SOC 2 report", "--due", "2027-03-31", "--every", "P1Y",
               *setup.as_("admin"))  # fmt: skip
    theirs = setup.through("calendar", "add", "SOC 2 report", "--due", "2027-03-31",
                           "--every", "P1Y")  # fmt: skip
    assert (mine.code, theirs.code) == (0, 0), theirs.err
    ids = [e["subject"].removeprefix("deadline:") for e in
           _events(home, "calendar.deadline_added")]  # fmt: skip
    assert len(ids) == 2 and all(e["actor"] == "admin" for e in
                                 _events(home, "calendar.deadline_added"))  # fmt: skip
    assert theirs.out == mine.out.replace(ids[0], ids[1]), (ids, mine.out, theirs.out)
    added = json.loads(setup.through("calendar", "add", "DORA register", "--due", "2027-01-15",
                                     "--owner", "cio@example.com", "--json").out)  # fmt: skip
    assert (added["title"], added["due"], added["owner"]) == (
        "DORA register", "2027-01-15", "cio@example.com")  # fmt: skip
    removed = setup.through("calendar", "remove", added["id"], "--reason", "withdrawn")
    assert (removed.code, removed.out) == (0, f"Deadline {added['id']} removed.\n"), removed.err
    (event,) = _events(home, "calendar.deadline_removed")
    assert event["actor"] == "admin" and "withdrawn" in json.dumps(event["details"])
    setup.refused("calendar", "remove", added["id"], text=added["id"])  # removed already

    # an operator publishes progress to S3 through the server; a folder stays on the host
    setup.login("operator")
    refused = setup.refused("progress", "publish", "--out", str(setup.tmp),
                            text="s3://BUCKET/PREFIX only")  # fmt: skip
    assert "Traceback" not in refused.err
    assert _events(home, "progress.published") == []
    boto3.client("s3").create_bucket(Bucket="progress-site")
    published = setup.through("progress", "publish", "--out", "s3://progress-site/acme", "--json")
    assert published.code == 0, published.err
    data = json.loads(published.out)
    (event,) = _events(home, "progress.published")
    assert (event["actor"], event["details"]["envelope_sha256"]) == (
        "operator", data["envelope_sha256"])  # fmt: skip
    key = data["files"][0].removeprefix("s3://progress-site/")
    envelope = boto3.client("s3").get_object(Bucket="progress-site", Key=key)["Body"].read()
    (setup.tmp / "p.dsse.json").write_bytes(envelope)
    vkey = cli("ledger", "key").out.strip()
    # `progress verify` reads no home: it runs on the client in client mode too
    checked = setup.through("progress", "verify", str(setup.tmp / "p.dsse.json"),
                            "--public-key", vkey)  # fmt: skip
    assert checked.code == 0 and checked.out.startswith("Verified: signed by"), checked.err
    assert setup.through("progress", "publish", "--out", "s3://no-such-bucket-zz/p").code == 3


EXPORT_SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "pseudonymise"
email = {{ transform = "mask", keep = 4 }}
country = "keep"

[contract]
min_records = 1
unique = ["_id"]
max_violations = 0
"""


def test_exports_through_the_server(
    cli: Any, home: Path, tmp_path: Path, fresh_mongo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyrage
    from pymongo import MongoClient
    from pyrage import x25519

    mongo: MongoClient[dict[str, Any]] = MongoClient(fresh_mongo.uri)
    mongo["shop"]["customers"].insert_many(
        [{"_id": n, "email": f"p{n}@example.com", "country": "FR"} for n in range(1, 11)]
    )
    mongo.close()
    assert cli("source", "add", "shop", "--engine", "mongodb", "--uri", fresh_mongo.uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    assert cli("backup", "run", "shop").code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    with serving(home) as served:
        s = Setup(cli=cli, served=served, world=world, password=password_file(tmp_path),
                  tmp=tmp_path)  # fmt: skip
        key = x25519.Identity.generate()
        challenge = tmp_path / "acme.challenge.age"
        add = ("recipient", "add", "acme", "--org", "Acme", "--contact", "dpo@acme.test",
               "--public-key", str(key.to_public()), "--challenge-out", str(challenge))  # fmt: skip
        dest = tmp_path / "outbox"
        dest.mkdir()
        spec = tmp_path / "spec.toml"
        spec.write_text(EXPORT_SPEC.format(dest=dest))

        # a viewer reads recipients but adds none, and proposes or runs nothing
        s.login("viewer")
        s.refused(*add, text="may not recipient.manage")
        assert not challenge.exists()
        wrong = _private(tmp_path / "wrong.txt", "not the answer")
        s.refused("recipient", "verify", "acme", "--response", str(wrong),
                  text="may not recipient.manage")  # fmt: skip
        s.refused("export", "spec", "add", str(spec), text="may not export.propose")
        s.refused("export", "run", "customers-to-acme", text="may not export.run")
        assert _denied(home, "viewer", "POST", "/api/v1/recipients")
        assert _denied(home, "viewer", "POST", "/api/v1/export-specs")
        assert _events(home, "recipient.added") == _events(home, "export.spec_added") == []

        # an administrator adds the recipient; the challenge is written here
        s.login("admin")
        s.refused("recipient", "add", "acme", "--org", "Acme", "--contact", "x",
                  "--public-key", "age1nope", "--challenge-out", str(challenge),
                  text="not an age X25519 recipient")  # fmt: skip
        assert not challenge.exists() and _events(home, "recipient.added") == []
        added = s.through(*add, "--json")
        assert added.code == 0, added.err
        assert json.loads(added.out)["challenge"] == str(challenge)
        s.refused("recipient", "add", "acme2", *add[3:], text="already exists")  # the file
        assert len(_events(home, "recipient.added")) == 1
        s.refused("recipient", "verify", "acme", "--response", str(wrong),
                  text="does not answer")  # fmt: skip
        assert _events(home, "recipient.verified") == []
        response = tmp_path / "acme.response.txt"
        response.write_bytes(pyrage.decrypt(challenge.read_bytes(), [key]))
        verified = s.through("recipient", "verify", "acme", "--response", str(response))
        assert verified.code == 0, verified.err
        assert verified.out.startswith("Recipient acme proved possession of age1")
        assert [e["actor"] for e in _events(home, "recipient.verified")] == ["admin"]
        for args in (("recipient", "list"), ("recipient", "list", "--json")):
            mine, theirs = cli(*args), s.through(*args)
            assert (theirs.code, theirs.out) == (mine.code, mine.out) == (0, mine.out), args

        # an operator proposes the spec (read here, its text sent); an approver approves
        s.login("operator")
        bad = tmp_path / "bad.toml"
        bad.write_text("name = [")
        s.refused("export", "spec", "add", str(bad), text="bad.toml")
        proposed = s.through("export", "spec", "add", str(spec), "--json")
        assert proposed.code == 0, proposed.err
        assert json.loads(proposed.out)["proposed_by"] == "operator"
        s.refused("export", "spec", "approve", "customers-to-acme", "1",
                  text="may not export.approve")  # fmt: skip
        s.login("approver")
        approved = s.through("export", "spec", "approve", "customers-to-acme", "1",
                             "--code", world.code("approver"))  # fmt: skip
        assert approved.code == 0, approved.err
        assert approved.out == "Approved version 1 of export spec customers-to-acme.\n"
        assert [e["actor"] for e in _events(home, "export.spec_approved")] == ["approver"]
        for args in (
            ("export", "spec", "list"),
            ("export", "spec", "list", "--json"),
            ("export", "spec", "show", "customers-to-acme"),
            ("export", "spec", "show", "customers-to-acme", "--version", "1", "--json"),
        ):
            mine, theirs = cli(*args), s.through(*args)
            assert mine.code == 0, mine.err
            assert (theirs.code, theirs.out) == (mine.code, mine.out), args
        s.refused("export", "spec", "show", "nothing", text="nothing")

        # the run is gated: the operator's request waits (exit 0), an approver approves,
        # the operator executes it; delivered where the spec says
        s.login("operator")
        waiting = s.through("export", "run", "customers-to-acme", "--reason", "Q3 churn",
                            "--json")  # fmt: skip
        assert waiting.code == 0, waiting.err
        request_id = json.loads(waiting.out)["request"]["id"]
        assert list(dest.iterdir()) == []
        s.login("approver")
        done = s.through("request", "approve", request_id, "--code", world.code("approver"))
        assert done.code == 0, done.err
        s.login("operator")
        ran = s.through("request", "execute", request_id, "--json")
        assert ran.code == 0, ran.err
        delivered = sorted(p.name for p in dest.iterdir())
        assert len(delivered) == 2, delivered
        (requested,) = _events(home, "export.requested")
        assert requested["actor"] == "operator"
        for args in (("export", "list"), ("export", "list", "--spec", "customers-to-acme",
                                          "--json")):  # fmt: skip
            mine, theirs = cli(*args), s.through(*args)
            assert (theirs.code, theirs.out) == (mine.code, mine.out) == (0, mine.out), args
        # `export verify` reads no home: at the destination, in client mode too
        (run,) = json.loads(s.through("export", "list", "--json").out)["exports"]
        output = Path(run["output"])
        manifest = next(p for p in dest.iterdir() if p.name.endswith(".manifest.dsse.json"))
        identity_file = _private(tmp_path / "acme.key", str(key))
        vkey = cli("ledger", "key").out.strip().splitlines()[-1]
        checked = s.through("export", "verify", str(output), "--manifest", str(manifest),
                            "--public-key", vkey, "--identity", str(identity_file))  # fmt: skip
        assert checked.code == 0 and checked.out.startswith("Verified: 10 record(s)"), checked


def test_host_only_commands_stay_refused_in_client_mode(cli: Any, home: Path) -> None:
    """Nothing is sent (no server listens there) and nothing runs locally."""
    size = len(_events(home, "ledger.recovered"))
    for args, command in (
        (("ledger", "recover"), "ledger recover"),
        (("user", "break-glass", "admin"), "user break-glass"),
        (("init",), "init"),
        (("serve",), "serve"),
    ):
        result = cli("--server", "http://127.0.0.1:9", *args)
        assert result.code == 2, (args, result.err)
        assert f"`{command}` runs on the server's host only" in result.err, result.err
        assert "Traceback" not in result.err
    assert len(_events(home, "ledger.recovered")) == size
    # a command that no set names (none today: test_every_command_is_known_to_client_mode)
    # is refused, never run locally
    with pytest.raises(InputError, match="does not run through a server yet"):
        refuse_local("made up", "http://127.0.0.1:9")
