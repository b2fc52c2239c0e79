"""Gather the :class:`~affidavit.policy.facts.Facts` a policy check evaluates: the catalog's
inventory and history, the ledger's verification, the keystore, and the live security
configuration of every source and vault (the same snapshot ``baseline approve`` records).

A source or vault that cannot be read does not stop the check: it becomes a fact
(``config_errors``) that the ``config.baseline`` control reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from affidavit.constants import Classification
from affidavit.errors import Error
from affidavit.models.backup import Backup, BackupStatus
from affidavit.models.inventory import Source, Vault
from affidavit.models.ledger import Event
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.policy.controls import CONTROL_IDS
from affidavit.policy.document import Policy, parse_policy
from affidavit.policy.facts import (
    BackupFacts,
    DatasetFacts,
    Facts,
    KeyFacts,
    LedgerFacts,
    LedgerRecovery,
    PolicyFacts,
    SourceFacts,
    VaultFacts,
)
from affidavit.services.access_facts import gather_access_facts
from affidavit.services.approvals import PolicyInForce, baseline_standing, policy_standing
from affidavit.services.audit import read_audit
from affidavit.services.backends import engine_for, vault_backend
from affidavit.services.context import App
from affidavit.services.exports.facts import gather_export_facts
from affidavit.services.keys import keystore_for
from affidavit.services.leases import abandoned_run_facts
from affidavit.services.ledger import verify_catalog
from affidavit.services.policy_vouch import LedgerRecords, read_events, vouch

# describe() settings that change on their own (a replica attaching for a backup, the last
# BGSAVE's outcome, a failover) and so are not configuration
VOLATILE_SETTINGS = frozenset(
    {"rdb_last_bgsave_status", "connected_replicas", "writable_primary", "hosts"}
)


def _rank(c: Classification) -> int:
    return list(Classification).index(c)


def source_config(app: App, source: Source) -> dict[str, Any]:
    """The security-relevant configuration of a live source (raises :class:`Error`)."""
    with engine_for(source, app.settings) as engine:
        description = engine.describe()
    settings = {k: v for k, v in sorted(description.settings.items()) if k not in VOLATILE_SETTINGS}
    return {
        "engine": description.engine.value,
        "uri": source.uri,
        "tls": description.tls,
        "auth_required": description.auth_required,
        "settings": settings,
        "region": source.region,
    }


def vault_config(vault: Vault) -> dict[str, Any]:
    """A vault's protection as configured and as its storage reports it (raises)."""
    probe = vault_backend(vault).probe()
    if not probe.reachable:
        raise _Unreadable(probe.detail)
    return {
        "kind": vault.kind.value,
        "url": vault.url,
        "region": vault.region,
        "immutable_days": vault.immutable_days,
        "immutability": probe.immutability,
        "encryption": "age X25519 per backup, identity wrapped by a KEK",
    }


class _Unreadable(Exception):
    """A vault probe that did not reach its storage."""


def current_config(
    app: App,
    sources: list[Source],
    vaults: list[Vault],
    policy_version: int | None,
    reporter: Reporter | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """``({"sources": {...}, "vaults": {...}, "policy_version": N}, errors)``: the live
    configuration, and why each unreadable source or vault could not be read."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {"sources": {}, "vaults": {}, "policy_version": policy_version}
    rep = reporter or SilentReporter()
    for source in sources:
        rep.stage(f"reading the configuration of source {source.name}")
        _read(out["sources"], errors, f"source:{source.name}", source.name,
              partial(source_config, app, source))  # fmt: skip
    for vault in vaults:
        rep.stage(f"probing vault {vault.name}")
        _read(out["vaults"], errors, f"vault:{vault.name}", vault.name,
              partial(vault_config, vault))  # fmt: skip
    return out, errors


def _read(
    into: dict[str, Any],
    errors: dict[str, str],
    subject: str,
    name: str,
    read: Callable[[], dict[str, Any]],
) -> None:
    try:
        into[name] = read()
    except Error as exc:
        errors[subject] = exc.message
    except _Unreadable as exc:
        errors[subject] = str(exc)


def gather_facts(
    app: App,
    *,
    now: datetime | None = None,
    live: bool = True,
    reporter: Reporter | None = None,
) -> Facts:
    """Everything the rules need. ``live=False`` skips connecting to sources and vaults
    (the configuration then counts as unreadable)."""
    now = now or datetime.now(UTC)
    with app.read() as uow:
        sources = uow.sources.list()
        datasets = uow.datasets.list()
        vaults = uow.vaults.list()
        backups = uow.backups.list()
        verifications = uow.checks.verifications()
        drills = uow.checks.drills()
        # the policy and the baseline in force are the ones the ledger records approved, with
        # the text and content whose SHA-256 their events recorded (services.approvals)
        standing = policy_standing(uow)
        baselines = baseline_standing(uow)
        published = read_events(uow.ledger, "ledger.checkpoint_published")
        recoveries = _recoveries(
            [
                *read_events(uow.ledger, "ledger.recovered"),
                *read_events(uow.ledger, "ledger.key_created"),
            ],
            published,
        )
        # the rows are copies anyone who can write the catalog can edit: each fact a control
        # uses is taken from the ledger event that vouches for it (services.policy_vouch)
        records = LedgerRecords.read(uow.ledger)
        access = gather_access_facts(uow)  # identities, roles, reviews: from the ledger too
        exports = gather_export_facts(uow)  # delivered exports: from the ledger
        audit_requests = tuple(read_audit(uow).requests.values())  # evidence requests
    completed = {f"backup:{bid}": e.seq for bid, e in records.completed.items()}
    vouched = vouch(
        records,
        backups=[(b, _backup_facts(b, completed)) for b in backups],
        verifications=verifications,
        drills=drills,
        levels={(d.source, d.name): d.classification for d in datasets},
    )
    if reporter is not None:
        reporter.stage("verifying the ledger")
    report = verify_catalog(app)
    last_pub = published[-1] if published else None
    ledger = LedgerFacts(
        ok=report.ok,
        size=report.size,
        problems=tuple(f"{f.code.value}: {f.message}" for f in report.findings),
        last_published_at=_parse_time(last_pub.time) if last_pub else None,
        last_published_seq=last_pub.seq if last_pub else None,
        mismatches=(*vouched.mismatches, *standing.mismatches, *baselines.mismatches),
        recoveries=recoveries,
    )
    in_force = standing.in_force
    policy = _policy_facts(in_force) if in_force is not None else None
    policy_version = in_force.version if in_force is not None else None
    config: dict[str, Any] = {"sources": {}, "vaults": {}, "policy_version": None}
    errors: dict[str, str] = {}
    if live:
        config, errors = current_config(app, sources, vaults, policy_version, reporter)
    else:
        config["policy_version"] = policy_version
        errors = {f"source:{s.name}": "not read (offline check)" for s in sources}
        errors |= {f"vault:{v.name}": "not read (offline check)" for v in vaults}
    locks: dict[str, bool | None] = {
        name: _object_lock(cfg) for name, cfg in config["vaults"].items()
    }
    return Facts(
        now=now,
        policy=policy,
        sources=tuple(
            SourceFacts(
                name=s.name,
                engine=s.engine.value,
                classification=s.classification,
                region=s.region,
                owner=s.owner,
            )
            for s in sources
        ),
        datasets=tuple(
            DatasetFacts(
                source=d.source,
                name=d.name,
                classification=d.classification,
                explicit=not d.inherited,
            )
            for d in datasets
        ),
        vaults=tuple(
            VaultFacts(
                name=v.name,
                kind=v.kind.value,
                region=v.region,
                object_lock=locks.get(v.name),  # None: not read
            )
            for v in vaults
        ),
        backups=vouched.backups,
        verifications=vouched.verifications,
        drills=vouched.drills,
        ledger=ledger,
        keys=_key_facts(app),
        default_retention_days=app.settings.retention_days,
        config=config,
        config_errors=errors,
        baseline=baselines.baseline.content if baselines.baseline else None,
        baseline_id=baselines.baseline_id,
        baseline_problem=baselines.problem,
        baseline_seq=baselines.seq,
        live=live,
        abandoned_runs=abandoned_run_facts(app),  # issue 13: services.leases gathers them
        access=access,
        exports=exports,
        audit_requests=audit_requests,
    )


def _object_lock(cfg: Mapping[str, Any]) -> bool:
    return cfg.get("kind") == "s3" and str(cfg.get("immutability") or "").startswith("object-lock")


def _backup_facts(b: Backup, completed: Mapping[str, int]) -> BackupFacts:
    levels = [Classification(d.classification) for d in b.datasets] or [Classification.INTERNAL]
    return BackupFacts(
        id=b.id,
        source=b.source,
        vault=b.vault,
        status=b.status.value,
        started_at=b.started_at,
        finished_at=b.finished_at,
        retain_until=b.retain_until,
        datasets=tuple(d.name for d in b.datasets),
        classification=max(levels, key=_rank),
        encrypted=b.recipient is not None and b.kek_id is not None,
        deleted_at=b.deleted_at if b.status is BackupStatus.DELETED else None,
        holds=tuple((h.created_at, h.released_at) for h in b.holds),
        seq=completed.get(f"backup:{b.id}"),
    )


def _key_facts(app: App) -> KeyFacts:
    try:
        versions = keystore_for(app.settings).versions()  # never creates a key
    except Error as exc:
        return KeyFacts(kek_id=None, version=None, created_at=None, error=exc.message)
    current = versions[-1] if versions else None
    if current is None:
        return KeyFacts(kek_id=None, version=None, created_at=None, error="no KEK yet")
    return KeyFacts(kek_id=current.kek_id, version=current.version, created_at=current.created_at)


def _recoveries(events: Sequence[Event], published: Sequence[Event]) -> tuple[LedgerRecovery, ...]:
    """Each ``ledger recover`` recorded: a ``ledger.recovered`` event, or a ledger begun again
    whose ``ledger.key_created`` carries ``recovered`` details; and whether a checkpoint that
    covers it was published to a witness since. (Entries that do not parse were left out by
    :func:`read_events`: ``ledger verify`` reports them.)"""
    largest = max((_count(p.details.get("size")) for p in published), default=0)
    found = []
    for event in events:
        details = event.details if event.action == "ledger.recovered" else None
        if details is None:
            recovered = event.details.get("recovered")
            details = recovered if isinstance(recovered, dict) else None
        if details is None:
            continue
        found.append(
            LedgerRecovery(
                seq=event.seq,
                kind=str(details.get("kind", "")),
                lost=_count(details.get("lost_entries")),
                reason=str(details.get("reason", "")),
                published_since=largest > event.seq,
            )
        )
    return tuple(sorted(found, key=lambda r: r.seq))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None  # a verified ledger has only valid times: `ledger verify` reports it
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _policy_facts(in_force: PolicyInForce) -> PolicyFacts:
    """The version in force, with its text when the text is the approved one and a policy."""
    problem, text = in_force.problem, in_force.text
    if text is not None:
        try:
            parse_policy(text, name=f"policy v{in_force.version}", controls=CONTROL_IDS)
        except Error as exc:  # stored by `policy propose`, so edited: fail, never stop the check
            problem, text = f"its text is not a valid policy: {exc.message}", None
    return PolicyFacts(
        version=in_force.version,
        proposed_by=in_force.proposed_by,
        approved_by=in_force.approved_by,
        seq=in_force.seq,
        text=text,
        problem=problem,
    )


def policy_in_force(facts: Facts) -> Policy | None:
    """The policy the controls are evaluated under: the version the ledger records approved
    by a second person, with its approved text (None when there is none or it cannot be
    applied: ``policy.approved`` fails then)."""
    p = facts.policy
    if p is None or p.text is None or p.problem is not None or p.approved_by is None:
        return None
    return parse_policy(p.text, name=f"policy v{p.version}", controls=CONTROL_IDS)
