"""OIDC single sign-on end to end: a real OpenID provider (``oidc-provider`` under node) and a
real ``affidavit serve --workers 2``, both on loopback ports, started once for the module:
each request opens its own connection, so a login's start, answer and redemption land on
either worker, and pass only because the logins under way are kept in the catalog.

A browser's login and a CLI's (the one-time code), MFA from the provider's ``amr`` (and none
without it), and every refusal, each by a test that tampers with one thing and sees it
refused, recorded in the ledger (``identity.login_failed`` with its reason) and in the access
log: a replayed answer, a used code under a fresh state, an answer delivered to another
browser, a nonce changed in the authorization request, a genuine token of another client
substituted at the token endpoint, a token the provider issued with its clock ten minutes
behind, an unlinked subject, a disabled account, a link written into the catalog behind
affidavit's back, a provider's error, and wrong CLI secrets and codes."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from oidc_harness import PROVIDER_PASSWORD, SUBJECTS, Provider, oidc_provider
from server_harness import PASSWORD, Served, World, free_port, make_world, serving
from web_harness import Watched, chromium, missing_tools

from affidavit.config import load_settings
from affidavit.models.identity import LoginThrottle
from affidavit.server.gates import CSRF_HEADER, SESSION_COOKIE
from affidavit.server.routes.oidc import BINDING_COOKIE
from affidavit.services import access_log
from affidavit.services import identity as idn
from affidavit.services.context import open_app
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

CLIENT_SECRET = "affidavit-test-secret"
CALLBACK_ROUTE = "/api/v1/auth/oidc/callback"
# the provider's people and the affidavit accounts they are linked to (made by make_world)
LINKED = {"alice": "security_officer", "bob": "admin", "carol": "viewer"}


@dataclass
class Sso:
    served: Served
    world: World
    idp: Provider
    callback: str

    @property
    def home(self) -> Path:
        return self.world.home


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sso]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        root = tmp_path_factory.mktemp("oidc")
        port = free_port()
        callback = f"http://127.0.0.1:{port}{CALLBACK_ROUTE}"
        with oidc_provider(free_port(), [callback], root) as idp:
            home = root / "home"
            initialise(load_settings(home=home))
            world = make_world(home)
            with open_app(load_settings(home=home)) as app:
                admin = world.admin(app)
                for login, account in LINKED.items():
                    idn.link_oidc(app, admin, account, issuer=idp.issuer, subject=SUBJECTS[login])
            env = {
                "AFFIDAVIT_OIDC_ISSUER": idp.issuer,
                "AFFIDAVIT_OIDC_CLIENT_ID": "affidavit",
                "AFFIDAVIT_OIDC_CLIENT_SECRET": CLIENT_SECRET,
                "AFFIDAVIT_OIDC_REDIRECT_URI": callback,
                # the tests begin many logins from 127.0.0.1 (the limit: test_attack_oidc.py)
                "AFFIDAVIT_OIDC_STARTS_PER_MINUTE": "100000",
            }
            # two workers: a login begun in one is answered in either (state in the catalog)
            with serving(home, "--workers", "2", env=env, port=port) as served:
                yield Sso(served=served, world=world, idp=idp, callback=callback)


@pytest.fixture(autouse=True)
def _forgive_unverified_failures(sso: Sso) -> None:
    """Each test starts with the shared counter of unverified OIDC refusals at zero (five
    would stop the ledger recording them for a while: tested by itself below)."""
    with open_app(load_settings(home=sso.home)) as app, app.change() as change:
        change.uow.identities.put_throttle(LoginThrottle(key=idn.OIDC_UNVERIFIED))


# -- helpers -----------------------------------------------------------------------------------


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def failures(home: Path) -> list[dict[str, Any]]:
    return [e["details"] for e in events(home, "identity.login_failed")]


def access_entries(home: Path, route: str) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        entries = [e.to_json() for e in access_log.show(app)]
    return [e for e in entries if e.get("route") == route]


def cookie_of(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


def begin(sso: Sso) -> tuple[str, str]:
    """A browser's login begun at the server: the provider's URL and the binding cookie."""
    with sso.served.client() as api:
        start = api.get("/auth/oidc/start")
    assert start.status_code == 302, start.text
    binding = cookie_of(start, BINDING_COOKIE)
    assert binding, start.headers
    location = start.headers["location"]
    assert location.startswith(sso.idp.issuer + "/auth?")
    return location, binding


def at_provider(sso: Sso, url: str, login: str) -> str:
    """Log in at the provider in a fresh browser; the URL of its redirect to the callback."""
    with httpx.Client(timeout=30) as browser:
        return sso.idp.authorize(browser, url, login, sso.callback)


def deliver(sso: Sso, callback_url: str, binding: str | None) -> httpx.Response:
    headers = {"Cookie": f"{BINDING_COOKIE}={binding}"} if binding else {}
    with sso.served.client() as api:
        return api.get(callback_url, headers=headers)


def sign_on(sso: Sso, login: str) -> httpx.Response:
    url, binding = begin(sso)
    return deliver(sso, at_provider(sso, url, login), binding)


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def refused(sso: Sso, answer: httpx.Response, reason: str, before: int) -> dict[str, Any]:
    """The answer is a 401 without a session, and the ledger's newest failed login since
    ``before`` has ``reason`` (returned); the access log has the failed callback."""
    assert answer.status_code == 401, answer.text
    assert cookie_of(answer, SESSION_COOKIE) is None
    assert "Traceback" not in answer.text
    found = failures(sso.home)[before:]
    assert found, "no identity.login_failed recorded"
    assert found[-1]["reason"] == reason, found
    assert found[-1]["auth"] == "oidc"
    return found[-1]


def last_callback_logged(sso: Sso, status: int, outcome: str) -> dict[str, Any]:
    entry = access_entries(sso.home, CALLBACK_ROUTE)[-1]
    assert (entry["status"], entry["outcome"], entry["auth_method"]) == (status, outcome, "oidc")
    return entry


# -- logins ------------------------------------------------------------------------------------


def test_a_browser_login_opens_a_session_and_the_providers_mfa_counts(sso: Sso) -> None:
    logins = len(events(sso.home, "identity.login"))
    answer = sign_on(sso, "alice")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "secret" not in body  # a browser keeps the secret in the cookie only
    assert body["principal"]["name"] == "security_officer"
    assert body["principal"]["method"] == "oidc"
    assert body["principal"]["mfa_age_seconds"] is not None
    assert body["session"]["method"] == "oidc"
    assert cookie_of(answer, BINDING_COOKIE) in ("", '""', None)  # the binding is cleared
    secret = cookie_of(answer, SESSION_COOKIE)
    assert secret and secret.startswith("afs_")
    event = events(sso.home, "identity.login")[logins:][-1]
    assert event["actor"] == "security_officer"
    assert event["details"]["auth"] == "oidc"
    assert event["details"]["issuer"] == sso.idp.issuer
    assert event["details"]["subject"] == SUBJECTS["alice"]
    assert event["details"]["mfa"] is True
    assert event["details"]["amr"] == ["pwd", "otp"]
    assert last_callback_logged(sso, 200, "allowed")["identity"] == "security_officer"
    # the session works like a password login's, and its MFA passes a step-up gate
    cookie = {"Cookie": f"{SESSION_COOKIE}={secret}"}
    with sso.served.client() as api:
        who = api.get("/whoami", headers=cookie).json()
        assert who["name"] == "security_officer"
        assert who["mfa_age_seconds"] is not None
        release = api.post(
            "/backups/bk-none/holds/c-1/release",
            json={"reason": "test"},
            headers=cookie | {CSRF_HEADER: body["csrf_token"]},
        )
        assert release.status_code != 403, release.text  # hold.release + fresh MFA: passed


def test_a_login_without_mfa_at_the_provider_has_no_mfa(sso: Sso) -> None:
    answer = sign_on(sso, "bob")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["principal"]["name"], body["principal"]["mfa_age_seconds"]) == ("admin", None)
    assert events(sso.home, "identity.login")[-1]["details"]["mfa"] is False
    secret = cookie_of(answer, SESSION_COOKIE)
    cookie = {"Cookie": f"{SESSION_COOKIE}={secret}", CSRF_HEADER: body["csrf_token"]}
    with sso.served.client() as api:
        token = api.post(
            "/tokens",
            json={"account": "ci-bot", "scopes": ["backup.read"], "expires_in_days": 1},
            headers=cookie,
        )
    assert token.status_code == 403, token.text  # token.manage needs a fresh MFA check
    assert token.json()["step_up_required"] is True


BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "cross-site",
}


def test_a_browser_navigating_to_the_callback_goes_on_to_the_dashboard(sso: Sso) -> None:
    """A browser (fetch metadata ``navigate``) gets a page that refreshes to the dashboard
    with the session cookie set, not the JSON an API client gets: the same session, the
    secret in the cookie only; the cookie opens the dashboard; a replay is still refused."""
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    headers = {"Cookie": f"{BINDING_COOKIE}={binding}", **BROWSER}
    with sso.served.client() as api:
        answer = api.get(back, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert '<meta http-equiv="refresh" content="0; url=/">' in answer.text
        assert 'href="/"' in answer.text and "security_officer" in answer.text
        secret = cookie_of(answer, SESSION_COOKIE)
        assert secret and secret.startswith("afs_") and secret not in answer.text
        assert cookie_of(answer, BINDING_COOKIE) in ("", '""', None)  # the binding is cleared
        assert last_callback_logged(sso, 200, "allowed")["identity"] == "security_officer"
        cookie = {"Cookie": f"{SESSION_COOKIE}={secret}"}
        assert api.get("/whoami", headers=cookie).json()["name"] == "security_officer"
        replayed = api.get(back, headers=headers)
        assert replayed.status_code == 401 and cookie_of(replayed, SESSION_COOKIE) is None
    with httpx.Client(base_url=sso.served.url, timeout=60) as site:
        page = site.get("/", headers={**cookie, "Accept": "text/html"})
        assert page.status_code == 200, page.text
        assert "<h1>Dashboard</h1>" in page.text


@pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))
def test_single_sign_on_in_chromium_lands_on_the_dashboard(sso: Sso) -> None:
    """Debian's Chromium: the login page's button, the provider's form, and the dashboard,
    logged in (the session cookie came with the callback's page; its refresh, a navigation
    this site starts, carries it to ``/``)."""
    with chromium() as browser:
        tab = Watched(browser, sso.served.url)
        try:
            tab.goto("/login")
            with tab.page.expect_navigation():
                tab.page.click("text=Sign in with your identity provider")
            assert tab.page.url.startswith(sso.idp.issuer + "/interaction/"), tab.page.url
            tab.page.fill("input[name=login]", "alice")
            tab.page.fill("input[name=password]", PROVIDER_PASSWORD)
            tab.page.click("form button")
            tab.page.wait_for_url(sso.served.url + "/", timeout=30_000)
            tab.page.wait_for_load_state("load")
            assert tab.page.title() == "Dashboard · affidavit", tab.page.content()[:2000]
            assert "security_officer" in tab.page.inner_text("header .who")
            assert tab.cookie(SESSION_COOKIE)
        finally:
            tab.close()


def test_an_api_client_still_gets_json_and_the_cli_its_code(sso: Sso) -> None:
    """Without navigation metadata the browser flow answers JSON as before (the tests above);
    a CLI flow's callback shows its one-time code even to a navigating browser."""
    answer = sign_on(sso, "alice")
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["principal"]["name"] == "security_officer"
    with sso.served.client() as api:
        flow = api.post("/auth/oidc/cli").json()
    with httpx.Client(timeout=30) as browser:
        back = sso.idp.authorize(browser, flow["url"], "alice", sso.callback)
    with sso.served.client() as api:
        page = api.get(back, headers=BROWSER)
    assert page.status_code == 200, page.text
    assert re.search(r'<code id="code">[^<]+</code>', page.text)
    assert cookie_of(page, SESSION_COOKIE) is None


# -- refusals ----------------------------------------------------------------------------------


def test_a_replayed_answer_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    assert deliver(sso, back, binding).status_code == 200
    before = len(failures(sso.home))
    refused(sso, deliver(sso, back, binding), "oidc-state", before)
    last_callback_logged(sso, 401, "failed")


def test_a_used_code_under_a_fresh_state_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    assert deliver(sso, back, binding).status_code == 200
    fresh_url, fresh_binding = begin(sso)
    state = parse_qs(urlsplit(fresh_url).query)["state"][0]
    before = len(failures(sso.home))
    answer = deliver(sso, with_param(back, "state", state), fresh_binding)
    refused(sso, answer, "oidc-exchange", before)  # the provider refuses the code again
    last_callback_logged(sso, 401, "failed")


def test_an_answer_delivered_to_another_browser_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    before = len(failures(sso.home))
    refused(sso, deliver(sso, back, None), "oidc-binding", before)  # the victim's browser
    # the state is spent: not even the right browser can use it now
    refused(sso, deliver(sso, back, binding), "oidc-state", before + 1)
    _, other = begin(sso)
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    refused(sso, deliver(sso, back, other), "oidc-binding", before + 2)


def test_a_nonce_changed_on_the_way_to_the_provider_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    back = at_provider(sso, with_param(url, "nonce", "attacker-chosen-nonce"), "alice")
    before = len(failures(sso.home))
    details = refused(sso, deliver(sso, back, binding), "oidc-token", before)
    assert details["problem"] == "nonce"
    last_callback_logged(sso, 401, "failed")


def test_a_genuine_token_of_another_client_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    foreign = sso.idp.token_for_other_client("alice", nonce)  # right issuer, sub and nonce
    back = at_provider(sso, url, "alice")
    sso.idp.control("next-id-token", {"id_token": foreign})  # substituted in transit
    before = len(failures(sso.home))
    details = refused(sso, deliver(sso, back, binding), "oidc-token", before)
    assert details["problem"] == "audience"


def test_an_expired_token_is_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    with sso.idp.clock_off_by(-600):  # its tokens (5 minutes) expired 5 minutes ago
        back = at_provider(sso, url, "alice")
        before = len(failures(sso.home))
        details = refused(sso, deliver(sso, back, binding), "oidc-token", before)
    assert details["problem"] == "expired"


def test_an_unlinked_subject_is_refused_and_no_account_is_made(sso: Sso) -> None:
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        (accounts,) = db.execute("select count(*) from accounts").fetchone()
    before = len(failures(sso.home))
    answer = sign_on(sso, "dave")
    details = refused(sso, answer, "oidc-unlinked", before)
    assert (details["issuer"], details["subject"]) == (sso.idp.issuer, SUBJECTS["dave"])
    assert SUBJECTS["dave"] in answer.json()["error"]  # so that an administrator can link it
    assert "link-oidc" in answer.json()["hint"]
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        assert db.execute("select count(*) from accounts").fetchone() == (accounts,)
    last_callback_logged(sso, 401, "failed")


def test_a_disabled_account_is_refused(sso: Sso) -> None:
    assert sign_on(sso, "carol").status_code == 200
    with open_app(load_settings(home=sso.home)) as app:
        idn.disable_account(app, sso.world.admin(app), "viewer", reason="left the company")
    before = len(failures(sso.home))
    details = refused(sso, sign_on(sso, "carol"), "disabled", before)
    assert details["subject"] == SUBJECTS["carol"]
    assert details["account_id"]


def test_a_link_written_behind_affidavits_back_is_refused(sso: Sso) -> None:
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        db.execute(
            "update accounts set oidc_issuer = ?, oidc_subject = ? where name = 'auditor'",
            (sso.idp.issuer, SUBJECTS["erin"]),
        )
    before = len(failures(sso.home))
    details = refused(sso, sign_on(sso, "erin"), "oidc-link-unvouched", before)
    assert details["subject"] == SUBJECTS["erin"]


def test_a_providers_error_and_a_foreign_issuer_are_refused(sso: Sso) -> None:
    url, binding = begin(sso)
    state = parse_qs(urlsplit(url).query)["state"][0]
    before = len(failures(sso.home))
    answer = deliver(sso, f"{sso.callback}?error=access_denied&state={state}", binding)
    assert refused(sso, answer, "oidc-provider-error", before)["error"] == "access_denied"
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    answer = deliver(sso, with_param(back, "iss", "https://evil.example"), binding)
    refused(sso, answer, "oidc-issuer", before + 1)


def test_unverified_refusals_stop_reaching_the_ledger_after_five(sso: Sso) -> None:
    """Anyone can send answers with made-up states: the ledger takes five, then the counter
    locks (the access log still has every one)."""
    before = len(failures(sso.home))
    logged = len(access_entries(sso.home, CALLBACK_ROUTE))
    with sso.served.client() as api:
        for n in range(8):
            assert api.get(f"/auth/oidc/callback?state=made-up-{n}&code=x").status_code == 401
    found = failures(sso.home)[before:]
    assert [f["reason"] for f in found] == ["oidc-state"] * 5
    assert "locked_until" in found[-1]
    assert len(access_entries(sso.home, CALLBACK_ROUTE)) == logged + 8


# -- the CLI -----------------------------------------------------------------------------------

CODE = re.compile(r'<code id="code">([A-Z0-9-]+)</code>')


def cli_flow(sso: Sso, login: str) -> tuple[dict[str, Any], str, str]:
    """A CLI's flow through the API: the server's answer, the provider's redirect and the
    one-time code the callback page shows."""
    with sso.served.client() as api:
        begun = api.post("/auth/oidc/cli")
    assert begun.status_code == 200, begun.text
    flow = begun.json()
    back = at_provider(sso, flow["url"], login)
    page = deliver(sso, back, None)  # another browser: a CLI flow has no binding cookie
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    found = CODE.search(page.text)
    assert found, page.text
    return flow, back, found[1]


def test_the_cli_logs_in_with_the_code_the_browser_shows(sso: Sso, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    process = subprocess.Popen(
        [sys.executable, "-m", "affidavit", "login", sso.served.url, "--oidc", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None and process.stdin is not None
    url = None
    while url is None:
        line = process.stderr.readline()
        assert line, "the CLI showed no URL"
        if line.startswith(sso.idp.issuer):
            url = line.strip()
    back = at_provider(sso, url, "alice")
    page = deliver(sso, back, None)
    code = CODE.search(page.text)
    assert code, page.text
    out, err = process.communicate(code[1].lower() + "\n", timeout=60)  # case is forgiven
    assert process.returncode == 0, err
    answer = json.loads(out)
    assert answer["principal"]["name"] == "security_officer"
    assert answer["principal"]["method"] == "oidc"
    saved = tmp_path / "config" / "affidavit" / "session.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    who = subprocess.run(
        [sys.executable, "-m", "affidavit", "whoami", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["name"] == "security_officer"


def test_a_cli_flow_needs_its_secret_and_its_code_once(sso: Sso) -> None:
    flow, back, code = cli_flow(sso, "alice")
    before = len(failures(sso.home))
    redeem = "/auth/oidc/cli/redeem"
    with sso.served.client() as api:
        stolen = {"flow": flow["flow"], "flow_secret": "x" * 43, "code": code}
        answer = api.post(redeem, json=stolen)  # the code without the CLI's secret
        refused(sso, answer, "oidc-cli-code", before)
        right = {"flow": flow["flow"], "flow_secret": flow["flow_secret"], "code": code}
        answer = api.post(redeem, json=right)
        assert answer.status_code == 200, answer.text
        assert answer.json()["secret"].startswith("afs_")
        assert answer.json()["principal"]["name"] == "security_officer"
        refused(sso, api.post(redeem, json=right), "oidc-cli-code", before + 1)  # used
    refused(sso, deliver(sso, back, None), "oidc-state", before + 2)  # the answer, replayed
    entries = access_entries(sso.home, "/api/v1/auth/oidc/cli/redeem")
    assert [e["outcome"] for e in entries[-3:]] == ["failed", "allowed", "failed"]
    assert entries[-2]["identity"] == "security_officer"


def test_five_wrong_codes_end_a_cli_flow(sso: Sso) -> None:
    flow, _, code = cli_flow(sso, "alice")
    wrong = "AAAA-AAAA" if code != "AAAA-AAAA" else "BBBB-BBBB"
    with sso.served.client() as api:
        body = {"flow": flow["flow"], "flow_secret": flow["flow_secret"]}
        for _ in range(5):
            assert api.post("/auth/oidc/cli/redeem", json=body | {"code": wrong}).status_code == 401
        answer = api.post("/auth/oidc/cli/redeem", json=body | {"code": code})
    assert answer.status_code == 401, answer.text


def test_a_cli_flow_of_an_unlinked_subject_shows_no_code(sso: Sso) -> None:
    with sso.served.client() as api:
        flow = api.post("/auth/oidc/cli").json()
    back = at_provider(sso, flow["url"], "dave")
    before = len(failures(sso.home))
    refused(sso, deliver(sso, back, None), "oidc-unlinked", before)


# -- linking -----------------------------------------------------------------------------------


def test_linking_is_an_administrators_ledgered_act_one_account_per_subject(
    sso: Sso, tmp_path: Path
) -> None:
    password_file = tmp_path / "admin.pw"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)

    def link(name: str, subject: str, as_name: str = "admin") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "affidavit", "--home", str(sso.home), "user", "link-oidc",
             name, "--issuer", sso.idp.issuer, "--subject", subject, "--as", as_name,
             "--as-password-file", str(password_file), "--as-code", sso.world.code(as_name),
             "--json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    linked = link("approver", "approver-sub-7")
    assert linked.returncode == 0, linked.stderr
    assert json.loads(linked.stdout)["account"]["oidc_subject"] == "approver-sub-7"
    event = events(sso.home, "account.oidc_linked")[-1]
    assert (event["actor"], event["subject"]) == ("admin", "account:approver")
    assert event["details"]["subject"] == "approver-sub-7"
    assert event["details"]["auth"] == "password+totp"
    again = link("operator", "approver-sub-7")  # the same subject for a second account
    assert again.returncode == 2, again.stderr
    assert "linked to 'approver' already" in again.stderr
    size = len(events(sso.home, "account.oidc_linked"))
    by_operator = link("operator", "operator-sub-8", as_name="operator")
    assert by_operator.returncode == 2, by_operator.stderr
    assert "account.manage" in by_operator.stderr
    service = link("ci-bot", "bot-sub-9")
    assert service.returncode == 2, service.stderr
    assert len(events(sso.home, "account.oidc_linked")) == size


# -- the logins under way, as the catalog keeps them -------------------------------------------


def login_rows(home: Path) -> dict[str, tuple[bytes, str]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select key, sealed, created_at from oidc_logins")
        return {key: (bytes(sealed), created) for key, sealed, created in rows}


def state_key(state: str) -> str:
    from affidavit.crypto import oidc as jose

    return "state:" + jose.digest(state)


def test_a_catalog_reader_learns_no_verifier_or_nonce(sso: Sso) -> None:
    url, _ = begin(sso)
    query = parse_qs(urlsplit(url).query)
    state, nonce = query["state"][0], query["nonce"][0]
    rows = login_rows(sso.home)
    assert state_key(state) in rows  # keyed by the state's digest, never the state
    for key, (sealed, _) in rows.items():
        assert state.encode() not in sealed and state not in key
        assert nonce.encode() not in sealed


def test_a_login_planted_or_moved_in_the_catalog_is_refused(sso: Sso) -> None:
    """A writer of the catalog copies a genuine login's sealed row under the state of a
    login it made up: the seal is bound to its key, so the answer is refused as unknown."""
    url, binding = begin(sso)
    genuine = parse_qs(urlsplit(url).query)["state"][0]
    back = at_provider(sso, url, "alice")
    forged_state = "forged-state-" + "x" * 30
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        db.execute(
            "insert into oidc_logins (key, kek_id, kek_version, sealed, created_at) "
            "select ?, kek_id, kek_version, sealed, created_at from oidc_logins where key = ?",
            (state_key(forged_state), state_key(genuine)),
        )
    before = len(failures(sso.home))
    refused(
        sso, deliver(sso, with_param(back, "state", forged_state), binding), "oidc-state", before
    )
    assert state_key(forged_state) not in login_rows(sso.home)  # taken out, used for nothing


def test_an_expired_login_stays_expired_whatever_its_row_says(sso: Sso) -> None:
    """A login begun eleven minutes ago, its row's time moved to now: the time that counts
    is the one sealed inside."""
    from datetime import UTC, datetime, timedelta

    from affidavit.services.oidc import OidcConfig, OidcLogins

    settings = load_settings(home=sso.home)
    config = OidcConfig(
        issuer=sso.idp.issuer,
        client_id="affidavit",
        redirect_uri=sso.callback,
        client_secret=CLIENT_SECRET,
    )
    with open_app(settings) as app:
        begun = OidcLogins(config).start_browser(app, now=datetime.now(UTC) - timedelta(minutes=11))
    state = parse_qs(urlsplit(begun.url).query)["state"][0]
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        db.execute(
            "update oidc_logins set created_at = ? where key = ?",
            (datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), state_key(state)),
        )
    back = at_provider(sso, begun.url, "alice")
    before = len(failures(sso.home))
    refused(sso, deliver(sso, back, begun.binding), "oidc-state", before)


def test_a_cli_flow_swapped_for_another_persons_in_the_catalog_is_refused(sso: Sso) -> None:
    """Bob's CLI flow is answered for bob; the catalog's row of alice's answered flow is
    copied over bob's: redeeming bob's flow (bob holds its secret) with alice's code would
    log bob in as alice. The seal names the flow it belongs to: refused."""
    from affidavit.crypto import oidc as jose

    mine, _, _ = cli_flow(sso, "bob")
    theirs, _, their_code = cli_flow(sso, "alice")
    with sqlite3.connect(sso.home / "catalog.sqlite") as db:
        db.execute(
            "update oidc_logins set (kek_id, kek_version, sealed) = "
            "(select kek_id, kek_version, sealed from oidc_logins where key = ?) where key = ?",
            ("flow:" + jose.digest(theirs["flow"]), "flow:" + jose.digest(mine["flow"])),
        )
    before = len(failures(sso.home))
    with sso.served.client() as api:
        body = {"flow": mine["flow"], "flow_secret": mine["flow_secret"], "code": their_code}
        refused(sso, api.post("/auth/oidc/cli/redeem", json=body), "oidc-cli-code", before)
