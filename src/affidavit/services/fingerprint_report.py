"""The JSON view of ``affidavit fingerprint`` (``--json``), shared by the CLI and the API
(``POST /fingerprints``) so that both say the same thing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from affidavit.services.fingerprint import DatasetFingerprint


def fingerprints_json(target: str, results: Iterable[DatasetFingerprint]) -> dict[str, Any]:
    """``{"target", "datasets": [...]}``: each dataset's records, profile, fingerprint, Merkle
    root, bucket bits, duplicate keys and the index written (None when none was)."""
    return {
        "target": target,
        "datasets": [
            {
                "name": r.name,
                "records": r.fingerprint.count,
                "profile": r.fingerprint.profile,
                "fingerprint": r.fingerprint.text,
                "root": r.fingerprint.root.hex(),
                "bucket_bits": r.fingerprint.bucket_bits,
                "duplicate_keys": r.duplicates,
                "index": str(r.index) if r.index else None,
            }
            for r in results
        ],
    }
