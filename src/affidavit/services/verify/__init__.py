"""Verification of a backup: is it intact, is it what its signed manifest says, and how does it
compare with its live source now.

A verifier collects every discrepancy as a :class:`~affidavit.models.checks.Finding` with a
stable code (:class:`~affidavit.models.checks.CheckCode`, shared with drills) and never stops
at the first; a separate decision step (:func:`decide`) turns the list into pass/fail,
failing closed: a backup with no artifacts or no signed manifest is not ok, and only
``drift`` (expected change at the source after the backup) does not fail a verification.

Trust is anchored in the ledger key: the DSSE envelope must verify with it, and the values the
artifacts are checked against (sizes, ciphertext and plaintext SHA-256, dataset fingerprints)
are read from the *signed* statement, not from catalog rows that anyone with write access to
the database could edit (:func:`.state.read_signed`); so is the source that
``--against-source`` may read (name, engine and URI without secrets:
:func:`.against_source.check_source_identity`, ``source-mismatch``). Every artifact is read
once, streaming (:mod:`.reading`): its ciphertext is hashed, decrypted with the backup's
unwrapped age identity (in a child process for large artifacts, so that the cipher runs on
another core: :func:`affidavit.services.artifacts.decryption`), the plaintext hashed and, for
data artifacts, re-fingerprinted in the same pass (mongodump ``.bson``: framing-only while the
plaintext hash proves the rest, see :meth:`.content.ContentCheck.content`) or from a private
spool (RDB and archive files, whose parsers need a file; :mod:`affidavit.private_temp`).
An artifact with a signed segment table (issue 18) is instead read segment by segment on
``workers`` threads (:mod:`.segments`), with the same result and, on any discrepancy, the
sequential pass as well, so its findings are a sequential run's.

Sampling (``sample_percent``) checks a random subset of the data artifacts chosen by a
recorded seed (:func:`sample_paths`); the manifest, its signature, its vault copy and every
metadata and fingerprint-index artifact are always checked.

Could-not-run. An unreadable vault or unreachable source raises
:class:`~affidavit.errors.OperationError` (exit 3) and **no verification is recorded**: a
verification row is a statement about the backup, and an outage says nothing about it. The
attempt is recorded honestly as a ``verification.could_not_run`` ledger event with the error,
so cadence and auditors see it. A key that cannot be unwrapped is different: it is a finding
(``key-unwrap-failed``), because a backup whose key cannot be unwrapped cannot be restored. So
is a vault that answers with something wrong: a link, folder or FIFO where an artifact should
be (``artifact-not-a-file``), anything in the backup's folder it never recorded, hidden or not
(``artifact-unexpected``, :meth:`~affidavit.vaults.base.VaultBackend.foreign`), and a lock
weaker than the one the backup wrote and signed (``artifact-lock-weakened``,
:meth:`~affidavit.vaults.base.VaultBackend.lock_shortfalls`).

The modules, in the order a verification runs them:

- :mod:`.run`: :func:`verify_backup`, the arguments checked and the checks run in order;
- :mod:`.state`: the signed values checked against and the findings every part adds to;
- :mod:`.manifest_copy`: the vault's copy of the signed manifest (drills check it too);
- :mod:`.sampling`: which artifacts a sample reads, and the pass/fail decision;
- :mod:`.reading`: each artifact read once out of the vault, and what else its folder holds;
- :mod:`.vouch`: whether the ledger vouches a deep verification of the same signed manifest
  (then artifacts with a segment table are checked *fast*: no whole-file and no plaintext
  digest; docs/verification.md);
- :mod:`.segments`: an artifact with a segment table, checked segment by segment in parallel;
- :mod:`.content`: the content re-fingerprinted and compared with the signed fingerprints;
- :mod:`.against_source`: the backup compared with its live source;
- :mod:`.recording`: the signed result recorded, and the recorded ones listed.
"""

from __future__ import annotations

from affidavit.models.checks import NON_FAILING, CheckCode
from affidavit.services.verify.manifest_copy import ManifestCopy, check_manifest_copy
from affidavit.services.verify.recording import list_verifications
from affidavit.services.verify.run import verify_backup
from affidavit.services.verify.sampling import decide, new_seed, sample_paths

__all__ = [
    "NON_FAILING",
    "CheckCode",
    "ManifestCopy",
    "check_manifest_copy",
    "decide",
    "list_verifications",
    "new_seed",
    "sample_paths",
    "verify_backup",
]
