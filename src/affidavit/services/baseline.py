"""Configuration baselines: record the approved security configuration of every source and
vault (and the policy version), so that ``policy check`` reports each drift from it."""

from __future__ import annotations

from datetime import UTC, datetime

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError, IntegrityError, NotFound, OperationError
from affidavit.models.governance import Baseline
from affidavit.services.approvals import baseline_standing, policy_standing
from affidavit.services.context import App
from affidavit.services.policy_facts import current_config


def approve_baseline(app: App, *, note: str) -> Baseline:
    """Read every source's and vault's configuration now and record it as the approved
    baseline (``baseline.approved``). Refuses when anything cannot be read: a baseline with
    holes would hide drift."""
    note = note.strip()
    if not note:
        raise InputError("a note is required", hint='--note "why this configuration is right"')
    with app.read() as uow:
        sources, vaults = uow.sources.list(), uow.vaults.list()
        in_force = policy_standing(uow).in_force  # the ledger's, as `policy check` compares
    config, errors = current_config(app, sources, vaults, in_force.version if in_force else None)
    if errors:
        first = next(iter(sorted(errors.items())))
        raise OperationError(
            f"cannot read {len(errors)} configuration(s), e.g. {first[0]}: {first[1]}",
            hint="make every source and vault reachable, or remove it, then approve again",
        )
    content = rfc8785.dumps(config)
    digest = sha256_hex(content)
    at = datetime.now(UTC)
    with app.change() as change:
        event = change.record(
            "baseline.approved",
            "baseline",
            {
                "sha256": digest,
                "note": note,
                "sources": sorted(config["sources"]),
                "vaults": sorted(config["vaults"]),
                "policy_version": config["policy_version"],
            },
        )
        baseline_id = change.uow.governance.add_baseline(
            content=content, sha256=digest, by=change.actor, at=at, seq=event.seq
        )
    return Baseline(
        id=baseline_id, approved_by=app.actor, approved_at=at, sha256=digest, content=config,
        seq=event.seq,
    )  # fmt: skip


def latest_baseline(app: App) -> Baseline | None:
    """The baseline in force: the newest one a ``baseline.approved`` event records, whose
    canonical content has the SHA-256 that event recorded. Raises :class:`IntegrityError`
    when the catalog no longer holds that content (altered or deleted)."""
    with app.read() as uow:
        standing = baseline_standing(uow)
    if standing.problem is not None:
        raise IntegrityError(
            standing.problem,
            hint="`affidavit policy check` reports it (ledger.integrity, config.baseline); "
            "approve the configuration again with `affidavit baseline approve`",
        )
    return standing.baseline


def baseline_in_force(app: App) -> Baseline:
    """:func:`latest_baseline`, raising :class:`NotFound` when none has been approved."""
    found = latest_baseline(app)
    if found is None:
        raise NotFound("no baseline has been approved", hint="`affidavit baseline approve`")
    return found
