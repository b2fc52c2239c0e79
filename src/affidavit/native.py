"""The one switch for affidavit's compiled modules.

Each C module (``formats/rdb/_native.c``, ``formats/bson_codec/_native.c``,
``fingerprint/_native.c``) has a pure-Python twin that gives the same bytes; the compiled one is
used when it is built (``pip install -e .`` builds it when a C compiler is there) unless the
environment sets ``AFFIDAVIT_PURE_PYTHON=1``, which exists to compare the two and to rule the
extensions out.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON_ENV = "AFFIDAVIT_PURE_PYTHON"


def load_native(name: str) -> ModuleType | None:
    """The compiled module ``name`` (a full dotted name), or None when it is not built or the
    pure-Python switch is on."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
