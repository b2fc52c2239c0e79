"""The rules: each control of :mod:`affidavit.policy.controls` evaluated over :class:`Facts`.

:func:`evaluate` yields one :class:`ControlResult` per control and subject — every failure,
never stopping at the first — and a control with no subject at all yields one
``not-applicable`` result so that the controls table is complete. Exceptions turn a failure
into ``excepted`` (still reported). The decision is separate: :func:`passed`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from affidavit.constants import Classification
from affidavit.models.governance import PolicyException, Severity, same_person
from affidavit.policy import access_rules, audit_rules, export_rules
from affidavit.policy.controls import BY_ID, CONTROLS, UNEXCEPTABLE
from affidavit.policy.document import LevelRequirements, Policy
from affidavit.policy.facts import BackupFacts, CheckFacts, DatasetFacts, Facts

FREQUENCY_WINDOW = timedelta(days=30)


class Status(StrEnum):
    """The outcome of a control for one subject."""

    PASS = "pass"  # noqa: S105 (not a password)
    FAIL = "fail"
    EXCEPTED = "excepted"  # failed, but an approved exception covers it
    NOT_APPLICABLE = "not-applicable"  # nothing to evaluate (no subjects)
    NOT_EVALUATED = "not-evaluated"  # no approved policy: the parameters are missing


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlResult:
    """One control evaluated for one subject."""

    control: str
    subject: str
    status: Status
    message: str
    severity: Severity
    owner: str
    evidence: tuple[str, ...] = ()
    exception: str | None = None

    @property
    def failed(self) -> bool:
        """A failure that needs a finding (not excepted)."""
        return self.status is Status.FAIL

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "control": self.control,
            "subject": self.subject,
            "status": self.status.value,
            "message": self.message,
            "severity": self.severity.value,
            "owner": self.owner,
            "evidence": list(self.evidence),
            "exception": self.exception,
        }


def passed(results: Sequence[ControlResult]) -> bool:
    """The decision: no failure, nothing left unevaluated, and not empty (fail closed)."""
    return bool(results) and all(
        r.status in (Status.PASS, Status.EXCEPTED, Status.NOT_APPLICABLE) for r in results
    )


def evaluate(
    facts: Facts, policy: Policy | None, exceptions: Iterable[PolicyException] = ()
) -> list[ControlResult]:
    """Evaluate every control; apply exceptions active at ``facts.now``."""
    ctx = _Context(facts, policy)
    results: list[ControlResult] = []
    for control in CONTROLS:
        rule = _RULES[control.id]
        found = list(rule(ctx)) if (policy is not None or control.id in _POLICY_FREE) else None
        if found is None:
            found = [ctx.result(control.id, "policy", Status.NOT_EVALUATED, "no approved policy")]
        elif not found:
            found = [ctx.result(control.id, "*", Status.NOT_APPLICABLE, "nothing to evaluate")]
        results.extend(found)
    active = [e for e in exceptions if e.active(facts.now)]
    return [_excepted(r, active) for r in results]


def _excepted(result: ControlResult, active: Sequence[PolicyException]) -> ControlResult:
    if result.status is not Status.FAIL or result.control in UNEXCEPTABLE:
        return result
    for exc in active:  # already filtered to those active now
        if exc.control == result.control and exc.subject in ("*", result.subject):
            return replace(
                result,
                status=Status.EXCEPTED,
                exception=exc.id,
                message=f"{result.message} (exception {exc.id} by {exc.approved_by}, "
                f"until {exc.expires_at:%Y-%m-%d})",
            )
    return result


class _Context:
    """Facts plus the lookups several rules share."""

    def __init__(self, facts: Facts, policy: Policy | None) -> None:
        self.facts = facts
        self.policy = policy
        self.now = facts.now
        self.owners = {s.name: s.owner for s in facts.sources}
        self.complete = sorted(
            (b for b in facts.backups if b.complete and b.finished_at is not None),
            key=lambda b: (b.finished_at, b.id),
        )
        # a backup whose newest verification failed protects nothing: it does not count for
        # protection, the RPO or the cadence (verify.recent reports the failure itself)
        latest: dict[str, CheckFacts] = {}
        for v in sorted(facts.verifications, key=lambda c: c.at):
            latest[v.backup_id] = v
        self.failed_verification = {bid: v for bid, v in latest.items() if not v.ok}
        self.latest_verification = latest
        self.usable = [b for b in self.complete if b.id not in self.failed_verification]
        self.by_dataset: dict[tuple[str, str], list[BackupFacts]] = {}
        self.all_by_dataset: dict[tuple[str, str], list[BackupFacts]] = {}
        for b in self.complete:
            if b.source is not None:
                for name in b.datasets:
                    self.all_by_dataset.setdefault((b.source, name), []).append(b)
        for b in self.usable:
            if b.source is not None:
                for name in b.datasets:
                    self.by_dataset.setdefault((b.source, name), []).append(b)
        self.vaults = {v.name: v for v in facts.vaults}
        self.regions = {s.name: s.region for s in facts.sources}
        self.source_level: dict[str, Classification] = {
            s.name: s.classification for s in facts.sources
        }
        for d in facts.datasets:
            if _rank(d.classification) > _rank(self.source_level.get(d.source, d.classification)):
                self.source_level[d.source] = d.classification

    def level(self, classification: Classification) -> LevelRequirements:
        assert self.policy is not None
        return self.policy.level(classification)

    def result(
        self,
        control: str,
        subject: str,
        status: Status,
        message: str,
        *,
        evidence: Sequence[str] = (),
        source: str | None = None,
    ) -> ControlResult:
        spec = BY_ID[control]
        owner = None
        if self.policy is not None and control in self.policy.owners:
            owner = self.policy.owners[control]
        owner = owner or (self.owners.get(source) if source else None)
        owner = owner or (self.policy.owner if self.policy is not None else "unassigned")
        return ControlResult(
            control=control,
            subject=subject,
            status=status,
            message=message,
            severity=spec.severity,
            owner=owner,
            evidence=tuple(evidence),
        )

    def ok(self, control: str, subject: str, message: str, **kw: Any) -> ControlResult:
        return self.result(control, subject, Status.PASS, message, **kw)

    def fail(self, control: str, subject: str, message: str, **kw: Any) -> ControlResult:
        return self.result(control, subject, Status.FAIL, message, **kw)


def _rank(c: Classification) -> int:
    return list(Classification).index(c)


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _days(value: float) -> str:
    return f"{value:g} day" + ("" if value == 1 else "s")


# -- the rules, one per control ---------------------------------------------------------------


def _policy_approved(ctx: _Context) -> Iterator[ControlResult]:
    p = ctx.facts.policy
    cid = "policy.approved"
    if p is None:
        yield ctx.fail(cid, "policy", "no policy version has been approved")
    elif p.approved_by is None or same_person(p.approved_by, p.proposed_by):
        yield ctx.fail(
            cid,
            f"policy:v{p.version}",
            f"version {p.version} has no ledger-backed approval by a second person",
        )
    elif p.problem is not None:
        yield ctx.fail(
            cid,
            f"policy:v{p.version}",
            f"version {p.version} is in effect (proposed by {p.proposed_by}, approved by "
            f"{p.approved_by}) but cannot be applied: {p.problem}; "
            "no control that needs the policy was evaluated",
            evidence=[f"ledger:{p.seq}"] if p.seq is not None else [],
        )
    else:
        yield ctx.ok(
            cid,
            f"policy:v{p.version}",
            f"version {p.version} proposed by {p.proposed_by}, approved by {p.approved_by}",
            evidence=[f"ledger:{p.seq}"] if p.seq is not None else [],
        )


def _dataset_protected(ctx: _Context) -> Iterator[ControlResult]:
    cid = "dataset.protected"
    for d in ctx.facts.datasets:
        backups = ctx.by_dataset.get((d.source, d.name), [])
        if backups:
            newest = backups[-1]
            yield ctx.ok(
                cid,
                d.subject,
                f"in {len(backups)} complete backup(s), newest {newest.id}",
                evidence=[newest.subject],
                source=d.source,
            )
        elif ctx.all_by_dataset.get((d.source, d.name)):
            yield ctx.fail(cid, d.subject, "every backup holding this dataset failed its newest "
                           "verification", source=d.source)  # fmt: skip
        else:
            yield ctx.fail(cid, d.subject, "no complete backup holds this dataset", source=d.source)


def _backup_rpo(ctx: _Context) -> Iterator[ControlResult]:
    cid = "backup.rpo"
    for d in ctx.facts.datasets:
        backups = ctx.by_dataset.get((d.source, d.name))
        if not backups:
            continue  # dataset.protected reports it
        newest = backups[-1]
        assert newest.finished_at is not None
        rpo = timedelta(hours=ctx.level(d.classification).rpo_hours)
        age = ctx.now - newest.finished_at
        text = f"newest backup {newest.id} is {_age(ctx.now, newest.finished_at)} old"
        limit = f"RPO {rpo.total_seconds() / 3600:g} h for {d.classification.value}"
        if age <= rpo:
            yield ctx.ok(
                cid,
                d.subject,
                f"{text} (within {limit})",
                evidence=[newest.subject],
                source=d.source,
            )
        else:
            yield ctx.fail(
                cid,
                d.subject,
                f"{text}, beyond the {limit}",
                evidence=[newest.subject],
                source=d.source,
            )


def _backup_frequency(ctx: _Context) -> Iterator[ControlResult]:
    """Per dataset: the gaps between consecutive usable backups over the last 30 days,
    including the gap from the last backup before the window to the first one in it."""
    cid = "backup.frequency"
    for d in ctx.facts.datasets:
        backups = ctx.by_dataset.get((d.source, d.name))
        if not backups:
            continue  # dataset.protected reports it
        rpo = timedelta(hours=ctx.level(d.classification).rpo_hours)
        starts = sorted(b.started_at for b in backups)
        window = [t for t in starts if ctx.now - t <= FREQUENCY_WINDOW]
        before = [t for t in starts if ctx.now - t > FREQUENCY_WINDOW]
        series = ([before[-1]] if before else []) + window
        if len(series) < 2:
            yield ctx.ok(cid, d.subject, f"{len(window)} backup(s) in the last 30 days and none "
                         "before: no interval to measure (freshness is backup.rpo's)",
                         source=d.source)  # fmt: skip
            continue
        worst = max(later - earlier for earlier, later in itertools.pairwise(series))
        text = (
            f"{len(window)} backups in 30 days; longest gap {worst.total_seconds() / 3600:.1f} h "
            f"(RPO {rpo.total_seconds() / 3600:g} h for {d.classification.value})"
        )
        if worst <= rpo:
            yield ctx.ok(cid, d.subject, text, source=d.source)
        else:
            yield ctx.fail(cid, d.subject, text, source=d.source)


def _backup_abandoned(ctx: _Context) -> Iterator[ControlResult]:
    """Every abandoned run: a complete backup of the same source (or of no source, for an
    ingest that named none) finished after it was recorded, and no partial file is left."""
    cid = "backup.abandoned"
    for run in ctx.facts.abandoned_runs:
        text = f"abandoned {_age(ctx.now, run.at)} ago: {run.why}"
        evidence = [f"ledger:{run.seq}", run.subject]
        later = [
            b
            for b in ctx.complete
            if b.source == run.source and b.finished_at is not None and b.finished_at >= run.at
        ]
        problems = []
        if run.leftovers:
            shown = ", ".join(run.leftovers[:3]) + (" ..." if len(run.leftovers) > 3 else "")
            problems.append(
                f"{len(run.leftovers)} partial file(s) of it could not be removed from the "
                f"vault ({shown})"
            )
        if not later:
            problems.append(f"no backup of {run.source or 'its input'} has completed since")
        if problems:
            yield ctx.fail(cid, run.subject, f"{text}; {'; '.join(problems)}",
                           evidence=evidence, source=run.source)  # fmt: skip
        else:
            yield ctx.ok(cid, run.subject, f"{text}; backup {later[0].id} completed since and "
                         "no partial file is left", evidence=[*evidence, later[0].subject],
                         source=run.source)  # fmt: skip


def _backup_retention(ctx: _Context) -> Iterator[ControlResult]:
    cid = "backup.retention"
    levels = {b.classification for b in ctx.complete} | {
        d.classification for d in ctx.facts.datasets
    }
    default = ctx.facts.default_retention_days
    bad = [
        f"{lvl.value} needs {ctx.level(lvl).retention_min_days}-"
        f"{ctx.level(lvl).retention_max_days} days"
        for lvl in sorted(levels, key=_rank)
        if not ctx.level(lvl).retention_min_days <= default <= ctx.level(lvl).retention_max_days
    ]
    if levels:
        if bad:
            yield ctx.fail(
                cid,
                "config:retention_days",
                f"default retention {default} days, but {'; '.join(bad)}",
            )
        else:
            yield ctx.ok(cid, "config:retention_days", f"default retention {default} days")
    for b in ctx.complete:
        req = ctx.level(b.classification)
        days = (b.retain_until - b.started_at).total_seconds() / 86400
        bounds = f"{req.retention_min_days}-{req.retention_max_days}"
        text = f"retained {days:.1f} days ({b.classification.value}: {bounds})"
        src = b.source
        if req.retention_min_days - 1e-6 <= days <= req.retention_max_days + 1e-6:
            yield ctx.ok(cid, b.subject, text, evidence=[b.subject], source=src)
        else:
            yield ctx.fail(cid, b.subject, text, evidence=[b.subject], source=src)


def _backup_encrypted(ctx: _Context) -> Iterator[ControlResult]:
    cid = "backup.encrypted"
    for b in ctx.complete:
        required = ctx.level(b.classification).encryption_required
        if b.encrypted:
            yield ctx.ok(
                cid,
                b.subject,
                "age-encrypted; identity wrapped by a KEK",
                evidence=[b.subject],
                source=b.source,
            )
        elif required:
            yield ctx.fail(
                cid,
                b.subject,
                f"not encrypted; {b.classification.value} requires it",
                evidence=[b.subject],
                source=b.source,
            )
        else:
            yield ctx.ok(cid, b.subject, "not encrypted (not required)", source=b.source)


def _backup_immutable(ctx: _Context) -> Iterator[ControlResult]:
    cid = "backup.immutable"
    for b in ctx.complete:
        vault = ctx.vaults.get(b.vault)
        required = ctx.level(b.classification).immutability_required
        if vault is not None and vault.object_lock is None and required:
            unread = f"vault {b.vault}'s storage was not read (offline check or unreachable)"
            yield ctx.result(cid, b.subject, Status.NOT_EVALUATED, unread, source=b.source)
        elif vault is not None and vault.object_lock:
            yield ctx.ok(
                cid,
                b.subject,
                f"vault {b.vault}: object lock until {b.retain_until:%Y-%m-%d}",
                evidence=[b.subject],
                source=b.source,
            )
        elif required:
            why = "is not registered" if vault is None else f"({vault.kind}) has no retention lock"
            yield ctx.fail(
                cid,
                b.subject,
                f"vault {b.vault} {why}; {b.classification.value} requires immutable storage",
                evidence=[b.subject],
                source=b.source,
            )
        else:
            yield ctx.ok(
                cid, b.subject, f"vault {b.vault} is not immutable (not required)", source=b.source
            )


def _backup_cross_region(ctx: _Context) -> Iterator[ControlResult]:
    cid = "backup.cross_region"
    for d in ctx.facts.datasets:
        req = ctx.level(d.classification)
        if not req.cross_region_copy_required:
            continue
        rpo = timedelta(hours=req.rpo_hours)
        fresh = [
            b
            for b in ctx.by_dataset.get((d.source, d.name), [])
            if b.finished_at is not None and ctx.now - b.finished_at <= rpo
        ]
        home = ctx.regions.get(d.source)
        regions = {ctx.vaults[b.vault].region for b in fresh if b.vault in ctx.vaults} - {None}
        elsewhere = regions - {home} if home else (regions if len(regions) >= 2 else set())
        if elsewhere:
            yield ctx.ok(
                cid,
                d.subject,
                "current backups in " + ", ".join(sorted(r for r in regions if r)),
                source=d.source,
            )
        else:
            where = f"outside {home}" if home else "in two regions"
            yield ctx.fail(cid, d.subject, f"no backup within the RPO {where}", source=d.source)


def _periodic(  # noqa: PLR0917
    ctx: _Context,
    cid: str,
    d: DatasetFacts | None,
    source: str,
    checks: Sequence[CheckFacts],
    backups: Sequence[BackupFacts],
    period_days: float,
    what: str,
) -> ControlResult:
    subject = d.subject if d is not None else f"source:{source}"
    period = timedelta(days=period_days)
    ids = {b.id for b in backups}
    relevant = sorted((c for c in checks if c.backup_id in ids), key=lambda c: c.at)
    in_period = [c for c in relevant if ctx.now - c.at <= period]
    if in_period:  # the newest check in the period decides: a later failure is not hidden
        last = in_period[-1]
        evidence = [_link(last)]
        if last.ok and last.fingerprint_match is not False:
            return ctx.ok(
                cid,
                subject,
                f"{what} {last.id} passed {_age(ctx.now, last.at)} ago "
                f"(period {_days(period_days)})",
                evidence=evidence,
                source=source,
            )
        return ctx.fail(
            cid,
            subject,
            f"the newest {what}, {last.id} ({_age(ctx.now, last.at)} ago), failed",
            evidence=evidence,
            source=source,
        )
    first = min(b.finished_at or b.started_at for b in backups)
    if ctx.now - first <= period:
        return ctx.ok(
            cid,
            subject,
            f"not yet due: first backup {_age(ctx.now, first)} ago (period {_days(period_days)})",
            source=source,
        )
    last_text = f"; last {_age(ctx.now, relevant[-1].at)} ago" if relevant else "; never"
    return ctx.fail(
        cid,
        subject,
        f"no passing {what} in the last {_days(period_days)}{last_text}",
        source=source,
    )


def _link(check: CheckFacts) -> str:
    """``drill:ID`` or ``verification:ID``."""
    return f"{'drill' if check.kind == 'drill' else 'verification'}:{check.id}"


def _verify_recent(ctx: _Context) -> Iterator[ControlResult]:
    """The newest complete backup of every dataset: its newest verification must have passed
    within the period; while that backup is younger than the period, the newest verification
    of the dataset's backups stands in (and a dataset first backed up less than a period ago
    is not yet due). A failed newest verification is never hidden by an older pass."""
    cid = "verify.recent"
    for d in ctx.facts.datasets:
        backups = ctx.all_by_dataset.get((d.source, d.name))
        if not backups:
            continue
        days = ctx.level(d.classification).verify_every_days
        period = timedelta(days=days)
        newest = backups[-1]
        own = ctx.latest_verification.get(newest.id)
        if own is not None and not own.ok:
            yield ctx.fail(cid, d.subject, f"the newest backup {newest.id} failed its newest "
                           f"verification {own.id} ({_age(ctx.now, own.at)} ago)",
                           evidence=[_link(own), newest.subject], source=d.source)  # fmt: skip
        elif own is not None and ctx.now - own.at <= period:
            yield ctx.ok(cid, d.subject, f"the newest backup {newest.id} passed verification "
                         f"{own.id} {_age(ctx.now, own.at)} ago (period {_days(days)})",
                         evidence=[_link(own), newest.subject], source=d.source)  # fmt: skip
        else:
            assert newest.finished_at is not None
            if ctx.now - newest.finished_at <= period:  # not yet due: the dataset's record
                yield _periodic(ctx, cid, d, d.source, ctx.facts.verifications, backups,
                                days, "verification")  # fmt: skip
            else:
                yield ctx.fail(cid, d.subject, f"the newest backup {newest.id} has no passing "
                               f"verification in the last {_days(days)}",
                               evidence=[newest.subject], source=d.source)  # fmt: skip


def _by_source(ctx: _Context) -> dict[str, list[BackupFacts]]:
    out: dict[str, list[BackupFacts]] = {}
    for b in ctx.complete:
        if b.source is not None and b.source in ctx.source_level:
            out.setdefault(b.source, []).append(b)
    return out


def _drill_recent(ctx: _Context) -> Iterator[ControlResult]:
    for source, backups in sorted(_by_source(ctx).items()):
        period = ctx.level(ctx.source_level[source]).drill_every_days
        yield _periodic(
            ctx, "drill.recent", None, source, ctx.facts.drills, backups, period, "drill"
        )


def _drill_rto(ctx: _Context) -> Iterator[ControlResult]:
    cid = "drill.rto"
    for source, backups in sorted(_by_source(ctx).items()):
        ids = {b.id for b in backups}
        drills = sorted((c for c in ctx.facts.drills if c.backup_id in ids), key=lambda c: c.at)
        if not drills:
            continue  # drill.recent reports it
        last = drills[-1]
        rto = ctx.level(ctx.source_level[source]).rto_seconds
        took = last.restore_seconds
        subject = f"source:{source}"
        evidence = [f"drill:{last.id}"]
        if took is None:
            yield ctx.fail(
                cid,
                subject,
                f"drill {last.id} recorded no restore time",
                evidence=evidence,
                source=source,
            )
        elif took <= rto:
            yield ctx.ok(
                cid,
                subject,
                f"drill {last.id} restored in {took:.1f} s (RTO {rto:g} s)",
                evidence=evidence,
                source=source,
            )
        else:
            yield ctx.fail(
                cid,
                subject,
                f"drill {last.id} took {took:.1f} s, beyond the RTO of {rto:g} s",
                evidence=evidence,
                source=source,
            )


def _ledger_integrity(ctx: _Context) -> Iterator[ControlResult]:
    """The ledger verifies; and every catalog row the other controls would have trusted
    agrees with the event that vouches for it (each one that does not is a failure of its own,
    named by the row: the other controls used the ledger's version, or left the row out)."""
    ledger = ctx.facts.ledger
    subject = "ledger"
    if ledger.ok:
        yield ctx.ok("ledger.integrity", subject, f"{ledger.size} entries verify")
    else:
        shown = "; ".join(ledger.problems[:5]) or "verification failed"
        more = f" (+{len(ledger.problems) - 5} more)" if len(ledger.problems) > 5 else ""
        yield ctx.fail("ledger.integrity", subject, f"{shown}{more}")
    for r in ledger.recoveries:  # fails until the recovered ledger was published to a witness
        lost = f"{r.lost} entries of signed history were lost" if r.lost else "nothing was lost"
        said = (f"the ledger was recovered at seq {r.seq} ({r.kind}): {lost}; "
                f"reason given: {r.reason}")  # fmt: skip
        if r.published_since:
            yield ctx.ok("ledger.integrity", f"ledger:{r.seq}",
                         f"{said}; a checkpoint covering it was published since",
                         evidence=[f"ledger:{r.seq}"])  # fmt: skip
        else:
            yield ctx.fail("ledger.integrity", f"ledger:{r.seq}",
                           f"{said}; publish a checkpoint to a witness "
                           "(`affidavit ledger checkpoint --publish`) to acknowledge it",
                           evidence=[f"ledger:{r.seq}"])  # fmt: skip
    for m in ledger.mismatches:
        evidence = [m.subject, *([f"ledger:{m.seq}"] if m.seq is not None else [])]
        yield ctx.fail("ledger.integrity", m.subject,
                       f"the catalog disagrees with the ledger: {m.message}",
                       evidence=evidence)  # fmt: skip


def _ledger_published(ctx: _Context) -> Iterator[ControlResult]:
    assert ctx.policy is not None
    cid = "ledger.checkpoint_published"
    period = ctx.policy.checkpoint_publish_every_days
    at = ctx.facts.ledger.last_published_at
    seq = ctx.facts.ledger.last_published_seq
    evidence = [f"ledger:{seq}"] if seq is not None else []
    if at is None:
        yield ctx.fail(cid, "ledger", "no checkpoint has been published to a witness")
    elif ctx.now - at <= timedelta(days=period):
        yield ctx.ok(
            cid,
            "ledger",
            f"published {_age(ctx.now, at)} ago (period {_days(period)})",
            evidence=evidence,
        )
    else:
        yield ctx.fail(
            cid,
            "ledger",
            f"last published {_age(ctx.now, at)} ago, beyond {_days(period)}",
            evidence=evidence,
        )


def _keys_rotated(ctx: _Context) -> Iterator[ControlResult]:
    cid = "keys.rotated"
    keys = ctx.facts.keys
    levels = {b.classification for b in ctx.complete}
    if not levels:
        return
    period = min(ctx.level(lvl).key_rotation_days for lvl in levels)
    subject = f"kek:{keys.kek_id}" if keys.kek_id else "kek"
    if keys.error is not None or keys.created_at is None:
        yield ctx.fail(cid, subject, f"cannot read the keystore: {keys.error or 'no key'}")
    elif ctx.now - keys.created_at <= timedelta(days=period):
        yield ctx.ok(
            cid,
            subject,
            f"version {keys.version} is {_age(ctx.now, keys.created_at)} "
            f"old (period {_days(period)})",
        )
    else:
        yield ctx.fail(
            cid,
            subject,
            f"version {keys.version} is {_age(ctx.now, keys.created_at)} "
            f"old, beyond {_days(period)}",
        )


def _deletion_lawful(ctx: _Context) -> Iterator[ControlResult]:
    cid = "deletion.lawful"
    for b in ctx.facts.backups:
        if b.deleted_at is None:
            continue
        problems = []
        if b.deleted_at < b.retain_until:
            problems.append(
                f"deleted {b.deleted_at:%Y-%m-%d %H:%M} before its retention ended "
                f"{b.retain_until:%Y-%m-%d %H:%M}"
            )
        held = [p for p, r in b.holds if p <= b.deleted_at and (r is None or r > b.deleted_at)]
        if held:
            problems.append(f"deleted under {len(held)} legal hold(s)")
        if problems:
            yield ctx.fail(
                cid, b.subject, "; ".join(problems), evidence=[b.subject], source=b.source
            )
        else:
            yield ctx.ok(
                cid,
                b.subject,
                "deleted after its retention, under no hold",
                evidence=[b.subject],
                source=b.source,
            )


def _dataset_classified(ctx: _Context) -> Iterator[ControlResult]:
    cid = "dataset.classified"
    for d in ctx.facts.datasets:
        if d.explicit:
            yield ctx.ok(cid, d.subject, f"classified {d.classification.value}", source=d.source)
        else:
            yield ctx.fail(
                cid,
                d.subject,
                f"inherits {d.classification.value} from its source; "
                "classify it (`affidavit dataset classify`)",
                source=d.source,
            )


def _known_targets(ctx: _Context) -> Iterator[ControlResult]:
    cid = "inventory.known_targets"
    baseline_vaults = set((ctx.facts.baseline or {}).get("vaults", {}))
    used = sorted({b.vault for b in ctx.facts.backups if b.status != "failed"})
    for name in used:
        subject = f"vault:{name}"
        if name not in ctx.vaults:
            yield ctx.fail(cid, subject, "backups were written to a vault that is not registered")
        elif ctx.facts.baseline is not None and name not in baseline_vaults:
            yield ctx.fail(cid, subject, "holds backups but is not in the approved baseline")
        else:
            yield ctx.ok(
                cid, subject, "registered" + (" and in the baseline" if ctx.facts.baseline else "")
            )
    for v in ctx.facts.vaults:
        if v.name not in used and ctx.facts.baseline is not None and v.name not in baseline_vaults:
            yield ctx.fail(cid, f"vault:{v.name}", "registered but not in the approved baseline")


def _config_baseline(ctx: _Context) -> Iterator[ControlResult]:
    cid = "config.baseline"
    baseline = ctx.facts.baseline
    if ctx.facts.baseline_problem is not None:  # approved, but the catalog's copy is not it
        evidence = [f"baseline:{ctx.facts.baseline_id}"] if ctx.facts.baseline_id else []
        if ctx.facts.baseline_seq is not None:
            evidence.append(f"ledger:{ctx.facts.baseline_seq}")
        yield ctx.fail(cid, "baseline", f"{ctx.facts.baseline_problem}; nothing can be compared "
                       "with it: approve a new baseline", evidence=evidence)  # fmt: skip
        return
    if baseline is None:
        yield ctx.fail(cid, "baseline", "no configuration baseline has been approved")
        return
    if not ctx.facts.live:
        yield ctx.result(cid, "baseline", Status.NOT_EVALUATED,
                         "offline check: the live configuration was not read")  # fmt: skip
        return
    current = ctx.facts.config
    ref = f"baseline:{ctx.facts.baseline_id}"
    for kind in ("sources", "vaults"):
        approved: dict[str, Any] = dict(baseline.get(kind, {}))
        now: dict[str, Any] = dict(current.get(kind, {}))
        for name in sorted(set(approved) | set(now)):
            subject = f"{kind[:-1]}:{name}"
            source = name if kind == "sources" else None
            if subject in ctx.facts.config_errors:
                yield ctx.fail(
                    cid,
                    subject,
                    f"cannot read its configuration: {ctx.facts.config_errors[subject]}",
                    evidence=[ref],
                    source=source,
                )
            elif name not in approved:
                yield ctx.fail(
                    cid, subject, "not in the approved baseline", evidence=[ref], source=source
                )
            elif name not in now:
                yield ctx.fail(
                    cid,
                    subject,
                    "in the baseline but no longer registered",
                    evidence=[ref],
                    source=source,
                )
            else:
                drift = list(diff_config(approved[name], now[name]))
                if drift:
                    yield ctx.fail(
                        cid, subject, "drift: " + "; ".join(drift), evidence=[ref], source=source
                    )
                else:
                    yield ctx.ok(
                        cid, subject, "matches the baseline", evidence=[ref], source=source
                    )
    if baseline.get("policy_version") != current.get("policy_version"):
        yield ctx.fail(
            cid,
            "policy",
            f"baseline approved under policy version "
            f"{baseline.get('policy_version')}, now {current.get('policy_version')}",
            evidence=[ref],
        )


def diff_config(approved: Any, now: Any, path: str = "") -> Iterator[str]:
    """Every difference between two configuration trees, as ``path: old -> new``."""
    if isinstance(approved, dict) and isinstance(now, dict):
        for key in sorted(set(approved) | set(now)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in now:
                yield f"{sub}: {approved[key]!r} -> (absent)"
            elif key not in approved:
                yield f"{sub}: (absent) -> {now[key]!r}"
            else:
                yield from diff_config(approved[key], now[key], sub)
    elif approved != now:
        yield f"{path or 'value'}: {approved!r} -> {now!r}"


_RULES: dict[str, Callable[[_Context], Iterable[ControlResult]]] = {
    "policy.approved": _policy_approved,
    "dataset.protected": _dataset_protected,
    "backup.rpo": _backup_rpo,
    "backup.frequency": _backup_frequency,
    "backup.abandoned": _backup_abandoned,
    "backup.retention": _backup_retention,
    "backup.encrypted": _backup_encrypted,
    "backup.immutable": _backup_immutable,
    "backup.cross_region": _backup_cross_region,
    "verify.recent": _verify_recent,
    "drill.recent": _drill_recent,
    "drill.rto": _drill_rto,
    "ledger.integrity": _ledger_integrity,
    "ledger.checkpoint_published": _ledger_published,
    "keys.rotated": _keys_rotated,
    "deletion.lawful": _deletion_lawful,
    "dataset.classified": _dataset_classified,
    "inventory.known_targets": _known_targets,
    "config.baseline": _config_baseline,
    "access.reviewed": access_rules.access_reviewed,
    "access.least_privilege": access_rules.least_privilege,
    "access.mfa_enforced": access_rules.mfa_enforced,
    "access.segregation_of_duties": access_rules.segregation_of_duties,
    "export.approved": export_rules.approved,
    "export.minimised": export_rules.minimised,
    "export.consent": export_rules.consent,
    "export.contract_valid": export_rules.contract_valid,
    "export.recipient_verified": export_rules.recipient_verified,
    "export.slo": export_rules.slo,
    "audit.requests_within_sla": audit_rules.requests_within_sla,
}
# rules that need no policy parameters
_POLICY_FREE = frozenset(
    {
        "policy.approved",
        "dataset.protected",
        "ledger.integrity",
        "deletion.lawful",
        "backup.abandoned",
        "dataset.classified",
        "inventory.known_targets",
        "config.baseline",
        "access.least_privilege",
        "export.approved",
        "export.minimised",
        "export.consent",
        "export.contract_valid",
        "export.recipient_verified",
        "export.slo",
        "audit.requests_within_sla",
    }
)
assert set(_RULES) == set(BY_ID), "every control needs exactly one rule"
