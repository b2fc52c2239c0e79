"""Whether the ledger vouches a passed deep verification of a backup's signed manifest.

A deep verification of an artifact with a segment table proves, besides the bytes, that the
signed manifest is *self-consistent*: its table agrees with its whole-file digest, and its
plaintext digests describe its own ciphertext. That is a property of the pair (signed
manifest, bytes); once proven on bytes that matched every segment's signed ciphertext
digest, a later run whose bytes match the same digests reads the same bytes and would learn
nothing more from those two passes, so it may run **fast** (docs/verification.md, "Fast
verification after a deep one").

A manifest whose writer proved its tables when it made them (every table it signs agrees
with the whole-file digests, computed from the same bytes: ``segment_tables.TableBuilder``)
needs no deep run at all: its ``backup.completed`` entry says ``tables_proven``, and
:func:`find_vouch` takes that entry first (unless ``verify_first_run = "deep"``).

What vouches is the ledger, never a catalog row: :func:`deep_vouch` takes the newest
``verification.completed`` event of the backup whose *signed entry* says ``mode: deep``,
``ok``, ``tables_proven`` and the same ``manifest_sha256``, and accepts it only when that
entry is provably in the tree the ledger key last signed: an RFC 9162 inclusion proof of the
entry's own leaf hash against the root held in the signer's memory
(``HOME/keys/ledger.signed``, :mod:`affidavit.services.signer_memory`), which lives beside
the key, outside the catalog. A verification row inserted into the catalog, an entry
appended to the catalog's ledger table behind affidavit's back, or stored subtree hashes
that were altered all fail that proof; anything that fails, or cannot be read, means no
vouch: the verification runs deep. The backup's completion entry is proven the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from affidavit.errors import Error
from affidavit.ledger import merkle
from affidavit.ledger.entries import parse_entry
from affidavit.ledger.log import LedgerLog
from affidavit.services.context import App

ACTION = "verification.completed"
WRITTEN = "backup.completed"
DEEP = "deep"
FAST = "fast"


@dataclass(frozen=True, slots=True)
class Vouch:
    """The ledger entry that lets a verification run fast: its seq and its action
    (:data:`ACTION`, a passed deep verification; :data:`WRITTEN`, the backup's completion,
    whose writer proved every segment table when it made it)."""

    seq: int
    action: str


def find_vouch(
    app: App, backup_id: str, manifest_sha256: str | None, *, written: bool = True
) -> Vouch | None:
    """What vouches a fast verification of ``backup_id``'s signed manifest: the backup's
    own completion entry when ``written`` (the setting ``verify_first_run = "fast"``) and
    it says its tables were proven when written, else the newest passed deep verification
    (:func:`deep_vouch`); None: the run is deep."""
    if written:
        seq = _proven_entry(app, backup_id, manifest_sha256, WRITTEN, _written_vouches)
        if seq is not None:
            return Vouch(seq, WRITTEN)
    seq = deep_vouch(app, backup_id, manifest_sha256)
    return None if seq is None else Vouch(seq, ACTION)


def deep_vouch(app: App, backup_id: str, manifest_sha256: str | None) -> int | None:
    """The seq of the newest ``verification.completed`` entry, in the tree the ledger key
    last signed, that records a passed deep verification of ``backup_id`` which proved the
    segment tables of the signed statement whose SHA-256 is ``manifest_sha256``; None when
    there is none (or it cannot be proven: then the caller runs deep)."""
    return _proven_entry(app, backup_id, manifest_sha256, ACTION, _vouches)


def _proven_entry(
    app: App,
    backup_id: str,
    manifest_sha256: str | None,
    action: str,
    vouches: Callable[..., bool],
) -> int | None:
    """The seq of the newest ``action`` entry of ``backup_id`` that ``vouches`` accepts and
    that is provably in the tree the ledger key last signed; None otherwise."""
    if manifest_sha256 is None:
        return None
    memory = app.signer_memory()
    if memory is None:
        return None
    try:
        signed = memory.load()
        if signed is None or signed.size == 0:
            return None
        with app.read() as uow:
            # only this backup's rows (the column is the catalog's word: a row whose
            # subject was edited is at worst not found, and then the run is deep)
            stored = uow.ledger.find(action=action, subject=f"backup:{backup_id}")
            log = LedgerLog(uow.ledger)
            subject = json.dumps(f"backup:{backup_id}").encode()
            for entry in reversed(stored):
                if subject not in entry.entry:  # another backup's (a cheap skip, not a check)
                    continue
                event = parse_entry(entry.entry)
                if event is None or not vouches(event.action, event.subject, event.details,
                                                backup_id=backup_id,
                                                manifest_sha256=manifest_sha256):  # fmt: skip
                    continue
                if not 0 <= event.seq < signed.size:
                    continue  # not (yet) in the tree the key signed
                proof = log.inclusion_proof(event.seq, signed.size)
                merkle.verify_inclusion(
                    merkle.leaf_hash(entry.entry), event.seq, signed.size, proof, signed.root
                )
                return event.seq
    except (Error, ValueError, OSError):
        return None
    return None


def _vouches(
    action: str, subject: str, details: Mapping[str, Any], *, backup_id: str, manifest_sha256: str
) -> bool:
    return (
        action == ACTION
        and subject == f"backup:{backup_id}"
        and details.get("mode") == DEEP
        and details.get("ok") is True
        and details.get("tables_proven") is True
        and details.get("manifest_sha256") == manifest_sha256
    )


def _written_vouches(
    action: str, subject: str, details: Mapping[str, Any], *, backup_id: str, manifest_sha256: str
) -> bool:
    return (
        action == WRITTEN
        and subject == f"backup:{backup_id}"
        and details.get("tables_proven") is True
        and details.get("manifest_sha256") == manifest_sha256
    )
