"""Repository of governance records: policy versions, baselines, findings, exceptions and
the results of policy checks."""

from __future__ import annotations

from sqlalchemy.orm import Session


class GovernanceRepository:
    """Policy versions and approvals, baselines, findings with their trail, exceptions."""

    def __init__(self, session: Session) -> None:
        self._session = session
