"""Homes built once per test module and copied per test: building a world of accounts costs
argon2 hashing and logins (seconds); copying the home folder costs milliseconds, and each
test still gets a home of its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from affidavit.config import load_settings
from affidavit.services.context import App, open_app
from affidavit.services.setup import initialise

_T = TypeVar("_T")


def clean_environment(patch: pytest.MonkeyPatch) -> None:
    """No ``AFFIDAVIT_*`` variable of the caller; the asserted actor of the test homes."""
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            patch.delenv(var)
    patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")


def build_template(
    factory: pytest.TempPathFactory, name: str, build: Callable[[App, Path], _T]
) -> tuple[Path, _T]:
    """A new home under ``factory``, initialised, and ``build(app, home)``'s result."""
    with pytest.MonkeyPatch.context() as patch:
        clean_environment(patch)
        home = factory.mktemp(name) / "home"
        initialise(load_settings(home=home))
        with open_app(load_settings(home=home)) as app:
            made = build(app, home)
    return home, made


@contextmanager
def copied(template: Path, tmp_path: Path, patch: pytest.MonkeyPatch) -> Iterator[tuple[App, Path]]:
    """An opened App on a copy of ``template`` of this test's own."""
    clean_environment(patch)
    home = tmp_path / "home"
    shutil.copytree(template, home)
    with open_app(load_settings(home=home)) as app:
        yield app, home
