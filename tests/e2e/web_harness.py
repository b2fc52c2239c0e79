"""Shared by the web pages' browser tests: Debian's Chromium driven by Playwright (never a
downloaded browser), axe-core from the repository's ``node_modules`` for the accessibility
scan, logging in through the login form with a TOTP code computed here, and screenshots for
a reviewer (under the test's temporary folder and copied to :data:`SCREENS`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from server_harness import PASSWORD, World

from affidavit.server.gates import SESSION_COOKIE

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE: Final = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SCREENS: Final = Path("/tmp/affidavit-screens")
SERIOUS: Final = frozenset({"serious", "critical"})


def missing_tools() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent: `make setup` installs Debian's chromium (as root)"
    if not AXE.exists():
        return f"{AXE} is absent: `make setup` runs npm ci"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed in the venv: `make setup`"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's) for the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


_SESSIONS: dict[tuple[str, str], list[Any]] = {}  # (server, account) -> its session cookies


class Watched:
    """A browser context's page, with what the page said on its console (CSP violations
    show there) and any dialog it tried to open (an injected ``alert``)."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        # axe-core comes in through the DevTools protocol: the pages' CSP allows no script,
        # and the test must not weaken it (no bypass_csp) to scan them
        self.context.add_init_script(path=str(AXE))
        self.page = self.context.new_page()
        self.base = base
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))

        def dismiss(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", dismiss)

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")
        return response

    def login(self, world: World, name: str, *, next_path: str = "/") -> None:
        """Log in as ``name``: with the session cookies of this account's earlier form login
        in this module when they still open ``next_path`` (a TOTP code is good for one login
        per 30 s step: logging the same person in again and again would wait for steps),
        else through the form with a TOTP code computed now."""
        key = (self.base, name)
        kept = _SESSIONS.get(key)
        if kept is not None:
            self.context.add_cookies(kept)
            self.goto(next_path)
            if "/login" not in self.page.url:
                return
            self.context.clear_cookies()
        self.form_login(world, name, next_path=next_path)
        _SESSIONS[key] = [c for c in self.context.cookies() if c["name"] == SESSION_COOKIE]

    def form_login(self, world: World, name: str, *, next_path: str = "/") -> None:
        """Log in through the form with a TOTP code computed now."""
        self.goto(f"/login?next={next_path}")
        self.page.fill("#name", name)
        self.page.fill("#password", PASSWORD)
        self.page.fill("#totp", world.code(name))
        with self.page.expect_navigation():
            self.page.click("form[action='/login'] button[type=submit]")
        assert not self.page.url.rstrip("/").endswith("/login"), self.page.content()

    def cookie(self, name: str) -> str | None:
        for cookie in self.context.cookies():
            if cookie["name"] == name:
                return str(cookie["value"])
        return None

    def axe(self) -> list[dict[str, Any]]:
        """The serious and critical violations axe-core finds on the current page."""
        result = self.page.evaluate("async () => await axe.run(document)")
        return [v for v in result["violations"] if v.get("impact") in SERIOUS]

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]

    def close(self) -> None:
        self.context.close()


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page screenshot in ``folder`` and a copy in :data:`SCREENS`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, SCREENS / path.name)
    return path
