"""Shared by the OIDC tests: a real OpenID provider (the ``oidc-provider`` npm package run by
``node tests/oidc/provider.mjs`` on a random loopback port, stopped by PID), and a test's
"browser": an httpx client that follows the provider's redirects and logs in through its
interaction endpoint, stopping at the redirect to affidavit's callback."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "oidc" / "provider.mjs"
PACKAGE = REPO / "node_modules" / "oidc-provider" / "package.json"
PROVIDER_PASSWORD = "provider password 1"
OTHER_CLIENT = ("other-app", "other-app-secret", "http://127.0.0.1:9/other-callback")
# the provider's accounts (tests/oidc/provider.mjs): login -> subject
SUBJECTS = {
    "alice": "alice-0001",  # amr pwd+otp: MFA
    "bob": "bob-0002",  # amr pwd: no MFA
    "carol": "carol-0003",
    "dave": "dave-0004",
    "erin": "erin-0005",  # amr pwd+hwk: MFA
}


def provider_available() -> str | None:
    """Why the provider cannot run here (None: it can)."""
    if shutil.which("node") is None:
        return "node is not installed (Debian package nodejs; make setup adds it)"
    if not PACKAGE.is_file():
        return "node_modules/oidc-provider is absent: run `make setup` (npm ci)"
    return None


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Provider:
    """A running provider."""

    issuer: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def control(self, what: str, body: dict[str, Any]) -> None:
        answer = httpx.post(f"{self.issuer}/__test/{what}", json=body, timeout=10)
        assert answer.status_code == 200, answer.text

    @contextmanager
    def clock_off_by(self, seconds: int) -> Iterator[None]:
        """The provider's clock runs ``seconds`` off for the block."""
        self.control("clock", {"offset_seconds": seconds})
        try:
            yield
        finally:
            self.control("clock", {"offset_seconds": 0})

    def authorize(self, browser: httpx.Client, url: str, login: str, stop_at: str) -> str:
        """Follow ``url`` (an authorization request) in ``browser``, log in as ``login`` when
        the provider asks, and return the URL of the redirect that leaves the provider for
        ``stop_at`` (not followed)."""
        for _ in range(10):
            answer = browser.get(url)
            assert answer.status_code in (302, 303), (answer.status_code, answer.text)
            url = urljoin(url, answer.headers["location"])
            if url.startswith(stop_at):
                return url
            path = urlsplit(url).path
            if path.startswith("/interaction/"):
                posted = browser.post(
                    f"{self.issuer}{path}/login",
                    data={"login": login, "password": PROVIDER_PASSWORD},
                )
                assert posted.status_code == 303, posted.text
                url = urljoin(url, posted.headers["location"])
        raise AssertionError(f"the provider never redirected to {stop_at}")

    def token_for_other_client(self, login: str, nonce: str) -> str:
        """A genuine ID token of this provider for ``login``, issued to another client
        (``other-app``) with ``nonce``."""
        client_id, secret, redirect = OTHER_CLIENT
        verifier, challenge = pkce()
        query = urlencode(
            {
                "client_id": client_id,
                "redirect_uri": redirect,
                "response_type": "code",
                "scope": "openid",
                "state": "other-state",
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        with httpx.Client(timeout=30) as browser:
            back = self.authorize(browser, f"{self.issuer}/auth?{query}", login, redirect)
        code = parse_qs(urlsplit(back).query)["code"][0]
        answer = httpx.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
            },
            auth=(client_id, secret),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id_token"])


@contextmanager
def oidc_provider(port: int, redirect_uris: list[str], log_dir: Path) -> Iterator[Provider]:
    """``node tests/oidc/provider.mjs PORT`` until the block ends (SIGTERM by PID, then
    SIGKILL); skips the test when node or the npm package is missing."""
    why = provider_available()
    if why is not None:
        pytest.skip(why)
    log = log_dir / f"oidc-provider-{port}.log"
    env = {**os.environ, "OIDC_REDIRECT_URIS": " ".join(redirect_uris)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["node", str(SCRIPT), str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )  # fmt: skip
    provider = Provider(issuer=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the OpenID provider exited: {provider.output()}")
            try:
                found = httpx.get(f"{provider.issuer}/.well-known/openid-configuration")
                if found.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the OpenID provider did not start: {provider.output()}")
            time.sleep(0.1)
        yield provider
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
