"""The pages' own defences, in-process (FastAPI's test client over a fresh home): their
Content-Security-Policy and the API's, the login redirect and its ``next``, the login form's
own token, form bodies on pages only, error pages, and the fixed list of static files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from affidavit.config import load_settings
from affidavit.server.app import create_app
from affidavit.server.hardening import CSP, PAGE_CSP
from affidavit.server.web.security import LOGIN_COOKIE, local_path
from affidavit.services.setup import initialise

OIDC = {
    "oidc_issuer": "https://login.example.com/realms/main",
    "oidc_client_id": "affidavit",
    "oidc_redirect_uri": "https://affidavit.example.com/api/v1/auth/oidc/callback",
}


def _client(home: Path, **overrides: str) -> TestClient:
    settings = load_settings(home=home, environ={}, overrides=overrides)
    return TestClient(create_app(settings), follow_redirects=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    home = tmp_path / "home"
    initialise(load_settings(home=home, environ={}))
    with _client(home) as http:
        yield http


def _login_form(http: TestClient) -> tuple[str, str]:
    page = http.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return page.cookies[LOGIN_COOKIE], token.group(1)


def test_pages_get_the_page_policy_and_the_api_keeps_its_own(client: TestClient) -> None:
    page = client.get("/login")
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "script-src" not in PAGE_CSP and "unsafe-inline" not in PAGE_CSP
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-type"].startswith("text/html")
    assert client.get("/api/v1/health").headers["content-security-policy"] == CSP
    assert "style=" not in page.text and "<script" not in page.text


def test_a_page_without_a_session_sends_the_browser_to_the_login(client: TestClient) -> None:
    answer = client.get("/backups?source=x&days=7")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fbackups%3Fsource%3Dx%26days%3D7"
    assert client.post("/logout").status_code == 303  # a form without a session: to the login
    api = client.get("/api/v1/backups")
    assert api.status_code == 401 and api.json()["exit_code"] == 3  # the API answers JSON


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/backups?source=a", "/backups?source=a"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("/" + "a" * 2000, "/"),
    ],
)
def test_a_login_sends_the_browser_to_a_path_of_this_site_only(
    target: str | None, expected: str
) -> None:
    assert local_path(target) == expected


def test_the_login_form_needs_its_own_token(client: TestClient) -> None:
    fields = {"name": "nobody", "password": "x" * 12, "totp": "123456", "next": "/"}
    bare = client.post("/login", data=fields)
    assert bare.status_code == 400
    assert "expired or was not sent by this page" in bare.text
    value, token = _login_form(client)
    other_value, _ = _login_form(client)
    assert other_value != value  # a new pre-session value each time
    forged = client.post(
        "/login",
        data={**fields, "csrf_token": token},
        headers={"cookie": f"{LOGIN_COOKIE}={other_value}"},
    )
    assert forged.status_code == 400  # the token of another browser's form
    refused = client.post(
        "/login",
        data={**fields, "csrf_token": token},
        headers={"cookie": f"{LOGIN_COOKIE}={value}"},
    )
    assert refused.status_code == 401  # the form was genuine; the credentials are not
    assert "login refused" in refused.text
    assert refused.cookies.get(LOGIN_COOKIE) not in (None, value)  # replaced


def test_form_bodies_are_for_pages_only(client: TestClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        client.post("/api/v1/auth/login", content=b"name=a&password=b", headers=form).status_code
        == 415
    )
    assert client.post("/login", content=b"name=a&password=b", headers=form).status_code == 400
    assert client.post("/login", content=b"\x00" * 70_000, headers=form).status_code == 413


def test_errors_on_pages_are_pages(client: TestClient) -> None:
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "there is no such page" in page.text
    api = client.get("/api/v1/no/such/route")
    assert api.status_code == 404 and api.json()["error"] == "no such route"
    assert client.put("/login").status_code == 405


def test_static_files_are_a_fixed_list(client: TestClient) -> None:
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/favicon.svg").headers["content-type"] == "image/svg+xml"
    for name in ("routes.py", "..%2Fpages.py", "%2E%2E%2F__init__.py", "app.css.bak"):
        assert client.get(f"/static/{name}").status_code == 404, name


def test_the_single_sign_on_button_shows_only_when_configured(tmp_path: Path) -> None:
    home = tmp_path / "home"
    initialise(load_settings(home=home, environ={}))
    with _client(home) as plain:
        assert "/api/v1/auth/oidc/start" not in plain.get("/login").text
    with _client(home, **OIDC) as sso:
        assert 'href="/api/v1/auth/oidc/start"' in sso.get("/login").text
