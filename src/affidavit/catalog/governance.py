"""Repository of governance records: policy versions, baselines, findings, exceptions and
the results of policy checks.

Like every repository it works inside one unit of work and never commits; the service that
changes a record appends its ledger event in the same transaction.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from affidavit.catalog.rows import aware, column, json_list, optional, text
from affidavit.catalog.schema import (
    BaselineRow,
    CheckRunRow,
    FindingRow,
    FindingStepRow,
    PolicyExceptionRow,
    PolicyVersionRow,
)
from affidavit.errors import NotFound
from affidavit.models.governance import (
    Baseline,
    CheckRun,
    ControlFinding,
    ExceptionStatus,
    FindingStatus,
    FindingStep,
    PolicyException,
    PolicyVersion,
    Severity,
)


class GovernanceRepository:
    """Policy versions and approvals, baselines, findings with their trail, exceptions."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # -- policy versions ------------------------------------------------------------------

    def next_policy_version(self) -> int:
        """The number the next proposed version gets (1, 2, ...)."""
        top = self._session.scalar(select(func.max(PolicyVersionRow.version)))
        return int(top or 0) + 1

    def add_policy_version(self, version: PolicyVersion) -> None:
        """Store a proposed version."""
        self._session.add(
            PolicyVersionRow(
                version=version.version,
                sha256=version.sha256,
                text=version.text,
                proposed_by=version.proposed_by,
                proposed_at=version.proposed_at,
                proposal_seq=version.proposal_seq,
            )
        )
        self._session.flush()

    def approve_policy_version(self, version: int, *, by: str, at: datetime, seq: int) -> None:
        """Record the approval of ``version``."""
        row = self._policy_row(version)
        row.approved_by, row.approved_at, row.approval_seq = by, at, seq
        self._session.flush()

    def policy_version(self, version: int) -> PolicyVersion:
        """One version; raises :class:`NotFound`."""
        return _policy(self._policy_row(version))

    def policy_versions(self) -> builtins.list[PolicyVersion]:
        """Every version, oldest first."""
        rows = self._session.scalars(select(PolicyVersionRow).order_by(PolicyVersionRow.version))
        return [_policy(row) for row in rows]

    def effective_policy(self) -> PolicyVersion | None:
        """The newest version whose row says it is approved, if any. This is the catalog's
        claim: the version in force is the one the ledger records approved
        (``services.approvals.policy_standing``)."""
        row = self._session.scalars(
            select(PolicyVersionRow)
            .where(PolicyVersionRow.approved_at.is_not(None))
            .order_by(PolicyVersionRow.version.desc())
            .limit(1)
        ).first()
        return _policy(row) if row is not None else None

    def _policy_row(self, version: int) -> PolicyVersionRow:
        row = self._session.get(PolicyVersionRow, version)
        if row is None:
            raise NotFound(
                f"no policy version {version}", hint="`affidavit policy list` shows the versions"
            )
        return row

    # -- findings -------------------------------------------------------------------------

    def add_finding(self, finding: ControlFinding) -> None:
        """Store a new finding and the steps of its trail."""
        self._session.add(
            FindingRow(
                id=finding.id,
                control=finding.control,
                subject=finding.subject,
                severity=finding.severity.value,
                owner=finding.owner,
                message=finding.message,
                status=finding.status.value,
                opened_at=finding.opened_at,
                last_seen_at=finding.last_seen_at,
                due_at=finding.due_at,
                evidence=json.dumps(list(finding.evidence)),
            )
        )
        self._session.flush()
        for step in finding.trail:
            self.add_finding_step(finding.id, step)

    def add_finding_step(self, finding_id: str, step: FindingStep) -> None:
        """Append a step to a finding's trail and move the finding to the step's status."""
        row = self._finding_row(finding_id)
        row.status = step.status.value
        self._session.add(
            FindingStepRow(
                finding_id=finding_id,
                at=step.at,
                actor=step.actor,
                status=step.status.value,
                note=step.note,
                seq=step.seq,
            )
        )
        self._session.flush()

    def touch_finding(
        self,
        finding_id: str,
        *,
        at: datetime,
        message: str,
        owner: str,
        evidence: Sequence[str],
    ) -> None:
        """A check saw an unresolved finding again: refresh what it says and who owns it
        (the due date stays)."""
        row = self._finding_row(finding_id)
        row.last_seen_at, row.message, row.owner = at, message, owner
        row.evidence = json.dumps(list(evidence))
        self._session.flush()

    def finding(self, finding_id: str) -> ControlFinding:
        """One finding with its trail; raises :class:`NotFound`."""
        return self._finding(self._finding_row(finding_id))

    def findings(
        self, *, status: Sequence[FindingStatus] | None = None
    ) -> builtins.list[ControlFinding]:
        """Findings (optionally of some statuses), oldest first, each with its trail."""
        query = select(FindingRow).order_by(FindingRow.opened_at, FindingRow.id)
        if status:
            query = query.where(FindingRow.status.in_([s.value for s in status]))
        rows = list(self._session.scalars(query))
        steps: dict[str, list[FindingStep]] = {}
        if rows:
            for step in self._session.scalars(select(FindingStepRow).order_by(FindingStepRow.id)):
                steps.setdefault(step.finding_id, []).append(_step(step))
        return [self._finding(row, steps.get(row.id, [])) for row in rows]

    def _finding_row(self, finding_id: str) -> FindingRow:
        row = self._session.get(FindingRow, finding_id)
        if row is None:
            raise NotFound(
                f"no finding {finding_id!r}", hint="`affidavit finding list` shows the findings"
            )
        return row

    def _finding(
        self, row: FindingRow, steps: Sequence[FindingStep] | None = None
    ) -> ControlFinding:
        if steps is None:
            steps = [
                _step(s)
                for s in self._session.scalars(
                    select(FindingStepRow)
                    .where(FindingStepRow.finding_id == row.id)
                    .order_by(FindingStepRow.id)
                )
            ]
        return ControlFinding(
            id=row.id,
            control=row.control,
            subject=row.subject,
            severity=column(row, "severity", Severity),
            owner=row.owner,
            message=row.message,
            status=column(row, "status", FindingStatus),
            opened_at=column(row, "opened_at", aware),
            last_seen_at=column(row, "last_seen_at", aware),
            due_at=column(row, "due_at", aware),
            evidence=tuple(column(row, "evidence", json_list)),
            trail=tuple(steps),
        )

    # -- exceptions -----------------------------------------------------------------------

    def add_exception(self, exc: PolicyException) -> None:
        """Store a requested exception."""
        self._session.add(
            PolicyExceptionRow(
                id=exc.id,
                control=exc.control,
                subject=exc.subject,
                reason=exc.reason,
                requested_by=exc.requested_by,
                requested_at=exc.requested_at,
                expires_at=exc.expires_at,
                status=exc.status.value,
            )
        )
        self._session.flush()

    def set_exception_status(
        self, exc_id: str, status: ExceptionStatus, *, by: str | None = None, at: datetime
    ) -> None:
        """Approve or revoke an exception."""
        row = self._exception_row(exc_id)
        row.status = status.value
        if status is ExceptionStatus.APPROVED:
            row.approved_by, row.approved_at = by, at
        self._session.flush()

    def exception(self, exc_id: str) -> PolicyException:
        """One exception; raises :class:`NotFound`."""
        return _exception(self._exception_row(exc_id))

    def exceptions(self) -> builtins.list[PolicyException]:
        """Every exception, oldest first."""
        rows = self._session.scalars(
            select(PolicyExceptionRow).order_by(PolicyExceptionRow.requested_at)
        )
        return [_exception(row) for row in rows]

    def _exception_row(self, exc_id: str) -> PolicyExceptionRow:
        row = self._session.get(PolicyExceptionRow, exc_id)
        if row is None:
            raise NotFound(f"no exception {exc_id!r}", hint="`affidavit exception list` shows them")
        return row

    # -- baselines ------------------------------------------------------------------------

    def add_baseline(self, *, content: bytes, sha256: str, by: str, at: datetime, seq: int) -> int:
        """Store an approved baseline (canonical JSON); return its id."""
        row = BaselineRow(approved_by=by, approved_at=at, sha256=sha256, content=content, seq=seq)
        self._session.add(row)
        self._session.flush()
        return row.id

    def latest_baseline(self) -> Baseline | None:
        """The newest baseline row. This is the catalog's claim: the baseline in force is the
        one the ledger records approved (``services.approvals.baseline_standing``)."""
        row = self._session.scalars(
            select(BaselineRow).order_by(BaselineRow.id.desc()).limit(1)
        ).first()
        return _baseline(row) if row is not None else None

    def baselines(self) -> builtins.list[Baseline]:
        """Every baseline, oldest first."""
        return [_baseline(r) for r in self._session.scalars(select(BaselineRow).order_by("id"))]

    # -- check runs -----------------------------------------------------------------------

    def add_check_run(self, run: CheckRun) -> None:
        """Store the results of a policy check."""
        self._session.add(
            CheckRunRow(
                id=run.id,
                at=run.at,
                actor=run.actor,
                policy_version=run.policy_version,
                ok=run.ok,
                results=json.dumps(list(run.results), sort_keys=True),
                seq=run.seq,
            )
        )
        self._session.flush()

    def check_runs(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[CheckRun]:
        """Policy checks in ``[since, until)``, oldest first."""
        query = select(CheckRunRow).order_by(CheckRunRow.at)
        if since is not None:
            query = query.where(CheckRunRow.at >= since)
        if until is not None:
            query = query.where(CheckRunRow.at < until)
        return [_check_run(row) for row in self._session.scalars(query)]

    def check_runs_by_id(self, ids: Sequence[str]) -> builtins.list[CheckRun]:
        """The policy checks of ``ids`` that exist (one query), oldest first."""
        if not ids:
            return []
        query = select(CheckRunRow).where(CheckRunRow.id.in_(list(ids))).order_by(CheckRunRow.at)
        return [_check_run(row) for row in self._session.scalars(query)]

    def check_run_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """The stored results (JSON text, as stored) of the policy checks of ``ids`` that
        exist, by id (one query; nothing parsed)."""
        if not ids:
            return {}
        query = select(CheckRunRow.id, CheckRunRow.results).where(CheckRunRow.id.in_(list(ids)))
        return {str(i): str(text) for i, text in self._session.execute(query)}


def _policy(row: PolicyVersionRow) -> PolicyVersion:
    return PolicyVersion(
        version=row.version,
        sha256=column(row, "sha256", text),
        text=column(row, "text", text),
        proposed_by=column(row, "proposed_by", text),
        proposed_at=column(row, "proposed_at", aware),
        proposal_seq=row.proposal_seq,
        approved_by=row.approved_by,
        approved_at=column(row, "approved_at", optional(aware)),
        approval_seq=row.approval_seq,
    )


def _step(row: FindingStepRow) -> FindingStep:
    return FindingStep(
        at=column(row, "at", aware),
        actor=row.actor,
        status=column(row, "status", FindingStatus),
        note=row.note,
        seq=row.seq,
    )


def _exception(row: PolicyExceptionRow) -> PolicyException:
    return PolicyException(
        id=row.id,
        control=row.control,
        subject=row.subject,
        reason=row.reason,
        requested_by=row.requested_by,
        requested_at=column(row, "requested_at", aware),
        expires_at=column(row, "expires_at", aware),
        status=column(row, "status", ExceptionStatus),
        approved_by=row.approved_by,
        approved_at=column(row, "approved_at", optional(aware)),
    )


def _baseline(row: BaselineRow) -> Baseline:
    # what `baseline approve` wrote is canonical JSON; content that is not (edited in the
    # catalog) reads as empty, whose SHA-256 is not the one its ledger event recorded
    try:
        loaded: Any = json.loads(row.content)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        loaded = {}
    content: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    return Baseline(
        id=row.id,
        approved_by=row.approved_by,
        approved_at=aware(row.approved_at),
        sha256=row.sha256,
        content=content,
        seq=row.seq,
    )


def _check_run(row: CheckRunRow) -> CheckRun:
    return CheckRun(
        id=row.id,
        at=column(row, "at", aware),
        actor=row.actor,
        policy_version=row.policy_version,
        ok=row.ok,
        results=tuple(column(row, "results", json_list)),
        seq=row.seq,
    )
