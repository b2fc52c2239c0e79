"""Packages of the first format (``affidavit-evidence/1``) keep verifying.

``assets/evidence-format-1.tar.gz`` was built by affidavit as of commit d33dda2 (the last
version writing format 1) from a history on a real Redis server: a backup whose hold CASE-1
was placed and released before it was deleted, a backup under hold CASE-2 with a
verification, a policy proposed by alice and approved by bob, one policy check. Its backup
records carry the catalog rows' deletion and holds and cite neither, and its ledger events
include the ``backup.deleted`` / ``hold.added`` / ``hold.released`` of the period, which
format 1 does not tie to records: a verifier of format 2 must hold it to format 1's rules.
"""

from __future__ import annotations

import json
from pathlib import Path

from affidavit.evidence.content import FORMAT_1
from affidavit.evidence.package import MANIFEST, read_package
from affidavit.services.evidence import verify_evidence

ASSET = Path(__file__).parent / "assets" / "evidence-format-1.tar.gz"
VKEY = "affidavit.local/vm/469f738e+2778bc00+AXOPdKfIgUSFyVnYyDN13FvCjKN1MlzAnTGr/i6aUMGV"


def test_a_package_built_by_the_previous_version_verifies() -> None:
    package = read_package(ASSET)
    assert package.problems == []
    assert json.loads(package.files[MANIFEST])["format"] == FORMAT_1
    actions = {
        json.loads(json.loads(line)["entry"])["action"]
        for line in package.files["ledger/events.jsonl"].splitlines()
    }
    assert {"backup.deleted", "hold.added", "hold.released"} <= actions
    report = verify_evidence(ASSET, VKEY)
    assert report.ok, [f.to_json() for f in report.findings]
    assert report.summary["format"] == FORMAT_1
    assert report.summary["backups"] == 2


def test_the_first_format_is_still_bound_to_its_signature(tmp_path: Path) -> None:
    raw = bytearray(ASSET.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(raw))
    assert not verify_evidence(damaged, VKEY).ok


ASSET_2 = Path(__file__).parent / "assets" / "evidence-format-2.tar.gz"
VKEY_2 = "affidavit.local/vm/4a9d31ec+deee635f+AR1Z6723Y9P1RVWevNih2WlheYcHggU58OycZC/8VwPQ"


def test_a_format_2_package_built_before_the_renovation_verifies() -> None:
    """``assets/evidence-format-2.tar.gz`` was built by commit eb24042 (before issue 14's
    renovation) from ``affidavit demo --scale 20`` plus three ingests (an RDB, a mongodump
    archive, a mongodump folder), two verifications and two drills."""
    report = verify_evidence(ASSET_2, VKEY_2)
    assert report.ok, [f.to_json() for f in report.findings]
    assert report.summary["format"] == "affidavit-evidence/2"
    assert report.summary["backups"] == 6
