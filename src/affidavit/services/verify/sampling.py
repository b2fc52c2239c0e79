"""Which artifacts a verification reads, and whether what it found fails it.

A sample (``--sample PERCENT``) is chosen by a recorded seed (:func:`sample_paths`) among the
data artifacts; every other artifact is always read (:func:`select`). The decision
(:func:`decide`) fails closed: nothing checked fails, and so does every finding but the
non-failing ones (``drift``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from affidavit.crypto.digest import sha256
from affidavit.models.backup import ArtifactRole
from affidavit.models.checks import NON_FAILING, Finding
from affidavit.services.verify.state import Expected


def new_seed() -> str:
    """A fresh sample seed: 16 hex digits."""
    return os.urandom(8).hex()


def sample_paths(paths: Sequence[str], percent: float, seed: str) -> list[str]:
    """The artifacts a sample of ``percent`` with ``seed`` checks, sorted.

    Each path is ranked by ``SHA-256(seed || 0x00 || path)`` and the ``ceil(n * percent /
    100)`` lowest ranks are taken (at least one when there is any): the same seed and paths
    always give the same sample, on any machine, without affidavit's code (``sha256sum``
    reproduces it)."""
    if not paths:
        return []
    k = max(1, math.ceil(len(paths) * percent / 100))
    ranked = sorted(set(paths), key=lambda p: sha256(seed.encode() + b"\x00" + p.encode()))
    return sorted(ranked[:k])


def decide(findings: Sequence[Finding], *, checked: int) -> bool:
    """Pass/fail: ok only when something was checked and every finding is non-failing."""
    return checked > 0 and all(f.code in NON_FAILING for f in findings)


def select(
    expected: Sequence[Expected], percent: float | None, seed: str | None
) -> tuple[list[Expected], dict[str, Any]]:
    """The artifacts to read (every one, or a sample of the data artifacts with all the
    others) in the order to read them, and the coverage that gives."""
    data = [e for e in expected if e.role == ArtifactRole.DATA.value]
    others = [e for e in expected if e.role != ArtifactRole.DATA.value]
    if percent is None:
        chosen = data
    else:
        assert seed is not None
        picked = set(sample_paths([e.path for e in data], percent, seed))
        chosen = [e for e in data if e.path in picked]
    total_bytes = sum(e.size for e in data)
    checked_bytes = sum(e.size for e in chosen)
    coverage: dict[str, Any] = {
        "artifacts_total": len(expected),
        "artifacts_checked": len(chosen) + len(others),
        "data_artifacts_total": len(data),
        "data_artifacts_checked": len(chosen),
        "data_bytes_total": total_bytes,
        "data_bytes_checked": checked_bytes,
        "data_paths_checked": sorted(e.path for e in chosen),
        "always_checked": "signature, manifest, manifest copy, metadata and index artifacts",
    }
    if percent is not None:
        coverage["selection"] = "sha256(seed || 0x00 || path), lowest ceil(n * p / 100)"
    # indexes first (they name keys), then metadata, then data
    order = {ArtifactRole.INDEX.value: 0, ArtifactRole.METADATA.value: 1}
    return sorted([*others, *chosen], key=lambda e: (order.get(e.role, 2), e.path)), coverage
