"""Attacks on single sign-on logins under way in the catalog (``services/oidc.py``,
``catalog/oidc_logins.py``), against a real ``affidavit serve --workers 2`` and the real
OpenID provider of ``tests/e2e/test_oidc_login.py`` (its fixtures, imported).

What must hold: one provider answer delivered to both workers at once opens one session;
a CLI login's state answered in a browser (with any binding cookie) opens no browser session;
a row sealed by the server with odd types inside is refused, never a 500; and, a limit
documented as such, an anonymous flood of starts evicts the logins under way (oldest first,
at most :data:`MAX_PENDING` wait)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from test_oidc_login import (  # the module's fixtures and helpers
    CLIENT_SECRET,
    CODE,
    Sso,
    _forgive_unverified_failures,
    at_provider,
    begin,
    cookie_of,
    failures,
    login_rows,
    refused,
    sso,
    state_key,
)

from affidavit.config import load_settings
from affidavit.crypto import oidc as jose
from affidavit.server.gates import SESSION_COOKIE
from affidavit.server.routes.oidc import BINDING_COOKIE
from affidavit.services.context import open_app
from affidavit.services.oidc import MAX_PENDING, OidcConfig, OidcLogins

pytestmark = pytest.mark.e2e
__all__ = ["_forgive_unverified_failures", "sso"]  # fixtures, used by name


def _logins(sso: Sso) -> OidcLogins:
    return OidcLogins(
        OidcConfig(
            issuer=sso.idp.issuer,
            client_id="affidavit",
            redirect_uri=sso.callback,
            client_secret=CLIENT_SECRET,
        )
    )


def test_one_answer_delivered_to_both_workers_at_once_opens_one_session(sso: Sso) -> None:
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    answers: list[httpx.Response] = []
    ready = threading.Barrier(6)

    def deliver_once() -> None:
        # a new connection each: the kernel hands them to either worker
        with httpx.Client(base_url=sso.served.url, timeout=60) as api:
            ready.wait()
            answers.append(api.get(back, headers={"Cookie": f"{BINDING_COOKIE}={binding}"}))

    threads = [threading.Thread(target=deliver_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 401, 401, 401, 401, 401], [a.text for a in answers]
    assert sum(cookie_of(a, SESSION_COOKIE) is not None for a in answers) == 1


def test_a_cli_logins_state_answered_in_a_browser_opens_no_browser_session(sso: Sso) -> None:
    """The kind is sealed with the login: a CLI flow's answer delivered with a browser's
    binding cookie shows the one-time code (for the CLI that holds the flow's secret), never
    a session cookie."""
    with sso.served.client() as api:
        flow = api.post("/auth/oidc/cli").json()
    back = at_provider(sso, flow["url"], "alice")
    _, binding = begin(sso)  # a genuine binding cookie, of another login
    with httpx.Client(base_url=sso.served.url, timeout=60) as browser:
        page = browser.get(back, headers={"Cookie": f"{BINDING_COOKIE}={binding}"})
    assert page.status_code == 200, page.text
    assert cookie_of(page, SESSION_COOKIE) is None
    assert CODE.search(page.text)
    assert "afs_" not in page.text


@pytest.mark.parametrize(
    "odd",
    [
        {"created_at": datetime.now(UTC).replace(tzinfo=None).isoformat()},  # no time zone
        {"created_at": 12},
        {"kind": ["browser"]},
        {"nonce": None, "verifier": {"a": 1}},
        {"binding": 5},
    ],
    ids=["naive-time", "number-time", "list-kind", "null-nonce", "number-binding"],
)
def test_a_sealed_row_with_odd_types_is_refused_not_a_server_error(
    sso: Sso, odd: dict[str, Any]
) -> None:
    """The server seals what it wrote; a bug (or a future version) could seal odd types:
        the answer is refused (401: as an unknown login, or at the provider for a verifier that is
    not the one it was given), never a 500."""
    logins = _logins(sso)
    now = datetime.now(UTC)
    with open_app(load_settings(home=sso.home)) as app:
        begun = logins.start_browser(app, now=now)
        state = parse_qs(urlsplit(begun.url).query)["state"][0]
        key = state_key(state)
        content = {
            "nonce": "n" * 20,
            "verifier": "v" * 43,
            "kind": "browser",
            "created_at": now.isoformat(),
            "binding": jose.digest(begun.binding),
            "flow": None,
        } | odd
        stored = OidcLogins._seal(app, key, content, now)
        with app.catalog.unit_of_work() as uow:
            uow.oidc_logins.put(key, stored)
    back = at_provider(sso, begun.url, "alice")
    before = len(failures(sso.home))
    with httpx.Client(base_url=sso.served.url, timeout=60) as api:
        answer = api.get(back, headers={"Cookie": f"{BINDING_COOKIE}={begun.binding}"})
    assert answer.status_code == 401, answer.text  # before the fix: 500 for a naive time
    assert cookie_of(answer, SESSION_COOKIE) is None
    assert failures(sso.home)[before:], "the refusal is recorded"
    assert key not in login_rows(sso.home)


def test_an_anonymous_flood_of_starts_evicts_a_login_under_way(sso: Sso) -> None:
    """A documented limit (docs/server.md: at most 4096 wait, the oldest are dropped): a
    person's login begun before :data:`MAX_PENDING` anonymous starts is gone when the
    provider answers. What it costs the attacker: one request (a catalog write, and a wrap by
    the identity key: with AWS KMS, a KMS call) per login pushed out."""
    url, binding = begin(sso)
    back = at_provider(sso, url, "alice")
    logins = _logins(sso)
    started = time.monotonic()
    with open_app(load_settings(home=sso.home)) as app:
        for _ in range(MAX_PENDING):  # as many anonymous GET /auth/oidc/start
            logins.start_browser(app)
    assert len(login_rows(sso.home)) <= MAX_PENDING
    before = len(failures(sso.home))
    with httpx.Client(base_url=sso.served.url, timeout=60) as api:
        answer = api.get(back, headers={"Cookie": f"{BINDING_COOKIE}={binding}"})
    refused(sso, answer, "oidc-state", before)
    assert time.monotonic() - started < 600
    # the flood's rows are swept by age like any other (ten minutes); clear them here
    with open_app(load_settings(home=sso.home)) as app, app.catalog.unit_of_work() as uow:
        uow.oidc_logins.prune(before=datetime.now(UTC) + timedelta(days=1), keep=0)


def test_starts_from_one_address_are_limited_per_minute(sso: Sso) -> None:
    """``oidc_starts_per_minute`` starts from one client address, then 429 (exit 3,
    nothing stored) until the minute has passed; another address is not held back."""
    import dataclasses

    from affidavit.errors import TooManyRequests

    logins = OidcLogins(dataclasses.replace(_logins(sso).config, starts_per_minute=3))
    at = datetime.now(UTC)
    with open_app(load_settings(home=sso.home)) as app:
        for n in range(3):
            logins.start_browser(app, client_address="198.51.100.7", now=at + timedelta(seconds=n))
        rows = len(login_rows(sso.home))
        with pytest.raises(TooManyRequests) as refused_start:
            logins.start_cli(app, client_address="198.51.100.7", now=at + timedelta(seconds=5))
        assert refused_start.value.exit_code == 3
        assert len(login_rows(sso.home)) == rows  # nothing stored for the refused one
        logins.start_browser(app, client_address="203.0.113.9", now=at + timedelta(seconds=6))
        logins.start_browser(app, client_address="198.51.100.7", now=at + timedelta(seconds=61))
        unlimited = OidcLogins(dataclasses.replace(logins.config, starts_per_minute=0))
        for _ in range(5):
            unlimited.start_browser(app, client_address="198.51.100.7", now=at)


def test_a_refused_start_is_a_429_with_exit_code_3(sso: Sso) -> None:
    """What the API answers for a refused start (the module's server runs with the limit
    raised, for the other tests): 429, exit code 3, a hint."""
    from affidavit.errors import TooManyRequests
    from affidavit.server.replies import error_reply

    reply = error_reply(TooManyRequests("too many single sign-on logins begun"))
    assert reply.status_code == 429
    body = json.loads(bytes(reply.body))
    assert body["exit_code"] == 3 and body["hint"]
