"""The attack tests reuse the end-to-end harnesses (a real ``affidavit serve``, a world of
accounts, the real OpenID provider: ``tests/e2e``, a folder without a package) and the
worlds of the identity unit tests (``tests.unit.identity``)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (str(_TESTS / "e2e"), str(_TESTS.parent)):  # server_harness; tests.unit...
    if _path not in sys.path:
        sys.path.insert(0, _path)
