"""The signed results of checks as typed values: a verification's and a drill's predicate.

``verify`` and ``drill run`` sign their result as an in-toto Statement
(``.../attestations/verification/v1`` and ``.../attestations/drill/v1``). As with the backup
manifest (:mod:`affidavit.models.manifest`), ``from_predicate`` reads one and refuses
anything else with :class:`~affidavit.models.json_fields.PredicateError`, ``to_predicate``
writes it, and the two are inverse down to the byte under RFC 8785 for every result affidavit
signed. The members that hold free-form JSON (a verification's coverage and comparison with
the source, a drill's scratch server and probes, a finding's details) are checked to be JSON
and kept deeply frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from affidavit.constants import EngineName
from affidavit.models.checks import CheckCode, Finding
from affidavit.models.json_fields import (
    Fields,
    PredicateError,
    check_choice,
    check_flag,
    check_number,
    check_sha256,
    check_text,
    check_time,
    describe,
    frozen_json,
    thawed_json,
)
from affidavit.models.manifest import ToolInfo

__all__ = [
    "VERIFICATION_KINDS",
    "DrillDataset",
    "DrillPredicate",
    "PredicateError",
    "VerificationKind",
    "VerificationPredicate",
    "VerificationSample",
    "finding_from_predicate",
    "finding_to_predicate",
]

VerificationKind = Literal["full", "sample", "against-source"]
VERIFICATION_KINDS: tuple[VerificationKind, ...] = ("full", "sample", "against-source")
_CODES = frozenset(code.value for code in CheckCode)


def _build(cls: type[Any], where: str, **values: Any) -> Any:
    try:
        return cls(**values)
    except PredicateError as exc:
        raise PredicateError(f"{where}.{exc.message}") from None
    except TypeError as exc:
        raise PredicateError(f"{where}: {exc}") from None


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _optional_sha256(value: object, where: str) -> None:
    if value is not None:
        check_sha256(value, where)


def _frozen_object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PredicateError(f"{where} must be an object, not {describe(value)}")
    frozen: Mapping[str, Any] = frozen_json(value, where)
    return frozen


def finding_from_predicate(obj: object, where: str) -> Finding:
    """Read one signed finding ``{"code", "message", "subject", "details"}``; its code must
    be a :class:`~affidavit.models.checks.CheckCode`. Raises :class:`PredicateError`."""
    f = Fields(obj, where)
    finding = Finding(
        code=f.choice("code", _CODES),
        message=f.text("message", empty=True),
        subject=f.text("subject", empty=True),
        details=thawed_json(f.json_object("details")),
    )
    f.done()
    return finding


def finding_to_predicate(finding: Finding) -> dict[str, Any]:
    """The JSON object of a signed finding (a deep copy)."""
    return {
        "code": finding.code,
        "message": finding.message,
        "subject": finding.subject,
        "details": thawed_json(frozen_json(finding.details, "details")),
    }


def _findings(value: object, where: str) -> tuple[Finding, ...]:
    if not isinstance(value, tuple | list):
        raise PredicateError(f"{where} must be a sequence, not {describe(value)}")
    out = []
    for n, item in enumerate(value):
        if not isinstance(item, Finding):
            raise PredicateError(f"{where}[{n}] must be a Finding, not {describe(item)}")
        # a finding made by code is checked as a signed one would be
        out.append(finding_from_predicate(finding_to_predicate(item), f"{where}[{n}]"))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationSample:
    """A sampled verification: the percentage of data artifacts (0 < p <= 100) and the seed
    that chose them."""

    percent: float
    seed: str

    def __post_init__(self) -> None:
        check_number(self.percent, "percent")
        if not 0 < self.percent <= 100:
            raise PredicateError(f"percent must be within 0 < p <= 100, not {self.percent!r}")
        check_text(self.seed, "seed")

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {"percent": self.percent, "seed": self.seed}


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationPredicate:
    """The signed result of a verification (``verify``)."""

    verification_id: str
    backup_id: str
    manifest_sha256: str | None  # the backup's signed statement (null: it had none)
    kind: VerificationKind
    ok: bool
    started_at: datetime
    finished_at: datetime
    sample: VerificationSample | None
    coverage: Mapping[str, Any]
    against_source: Mapping[str, Any] | None
    findings: tuple[Finding, ...]
    tool: ToolInfo

    def __post_init__(self) -> None:
        check_text(self.verification_id, "verification_id")
        check_text(self.backup_id, "backup_id")
        _optional_sha256(self.manifest_sha256, "manifest_sha256")
        check_choice(self.kind, "kind", VERIFICATION_KINDS)
        check_flag(self.ok, "ok")
        check_time(self.started_at, "started_at")
        check_time(self.finished_at, "finished_at")
        if self.sample is not None and not isinstance(self.sample, VerificationSample):
            raise PredicateError(
                f"sample must be a VerificationSample or None, not {describe(self.sample)}"
            )
        _set(self, "coverage", _frozen_object(self.coverage, "coverage"))
        if self.against_source is not None:
            _set(self, "against_source", _frozen_object(self.against_source, "against_source"))
        _set(self, "findings", _findings(self.findings, "findings"))
        if not isinstance(self.tool, ToolInfo):
            raise PredicateError(f"tool must be a ToolInfo, not {describe(self.tool)}")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "verification") -> VerificationPredicate:
        """Read a verification attestation's predicate; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        sample = f.optional_object("sample")
        found: VerificationPredicate = _build(
            cls,
            where,
            verification_id=f.raw("verification_id"),
            backup_id=f.raw("backup_id"),
            manifest_sha256=f.raw("manifest_sha256"),
            kind=f.raw("kind"),
            ok=f.raw("ok"),
            started_at=f.time("started_at"),
            finished_at=f.time("finished_at"),
            sample=None
            if sample is None
            else _build(
                VerificationSample,
                sample.where,
                percent=sample.raw("percent"),
                seed=sample.raw("seed"),
            ),
            coverage=f.json_object("coverage"),
            against_source=f.optional_json_object("against_source"),
            findings=tuple(
                finding_from_predicate(item, path) for item, path in f.items("findings")
            ),
            tool=ToolInfo.from_predicate(f.raw("tool"), f.path("tool")),
        )
        if sample is not None:
            sample.done()
        f.done()
        return found

    def to_predicate(self) -> dict[str, Any]:
        """The predicate's JSON object."""
        return {
            "verification_id": self.verification_id,
            "backup_id": self.backup_id,
            "manifest_sha256": self.manifest_sha256,
            "kind": self.kind,
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "sample": None if self.sample is None else self.sample.to_predicate(),
            "coverage": thawed_json(self.coverage),
            "against_source": thawed_json(self.against_source),
            "findings": [finding_to_predicate(f) for f in self.findings],
            "tool": self.tool.to_predicate(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillDataset:
    """One dataset of a drill: the fingerprint expected (the backup's), the one restored,
    and whether they match."""

    name: str
    expected: str
    restored: str
    match: bool

    def __post_init__(self) -> None:
        check_text(self.name, "name")
        check_text(self.expected, "expected", empty=True)
        check_text(self.restored, "restored", empty=True)
        check_flag(self.match, "match")

    @classmethod
    def from_predicate(cls, obj: object, where: str) -> DrillDataset:
        """Read one object of a drill's ``datasets``; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        names = ("name", "expected", "restored", "match")
        dataset: DrillDataset = _build(cls, where, **{name: f.raw(name) for name in names})
        f.done()
        return dataset

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "name": self.name,
            "expected": self.expected,
            "restored": self.restored,
            "match": self.match,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillPredicate:
    """The signed result of a restore drill (``drill run``). Seconds are kept as signed
    (an integer stays an integer)."""

    drill_id: str
    backup_id: str
    manifest_sha256: str | None
    engine: EngineName
    target: str
    forced: bool
    scratch: Mapping[str, Any] | None  # the throwaway server (null: a named target)
    started_at: datetime
    finished_at: datetime
    ok: bool
    rto_seconds: float
    restore_seconds: float
    total_seconds: float
    phases: Mapping[str, float]
    fingerprint_match: bool
    datasets: tuple[DrillDataset, ...]
    probes: tuple[Mapping[str, Any], ...]
    findings: tuple[Finding, ...]
    tool: ToolInfo

    def __post_init__(self) -> None:
        check_text(self.drill_id, "drill_id")
        check_text(self.backup_id, "backup_id")
        _optional_sha256(self.manifest_sha256, "manifest_sha256")
        engine = check_choice(self.engine, "engine", {e.value for e in EngineName})
        _set(self, "engine", EngineName(engine))
        check_text(self.target, "target")
        check_flag(self.forced, "forced")
        if self.scratch is not None:
            _set(self, "scratch", _frozen_object(self.scratch, "scratch"))
        check_time(self.started_at, "started_at")
        check_time(self.finished_at, "finished_at")
        check_flag(self.ok, "ok")
        for name in ("rto_seconds", "restore_seconds", "total_seconds"):
            check_number(getattr(self, name), name)
        phases = _frozen_object(self.phases, "phases")
        for name, seconds in phases.items():
            check_text(name, "a phase name")
            check_number(seconds, f"phases.{name}")
        _set(self, "phases", phases)
        check_flag(self.fingerprint_match, "fingerprint_match")
        if not isinstance(self.datasets, tuple | list) or not all(
            isinstance(d, DrillDataset) for d in self.datasets
        ):
            raise PredicateError("datasets must be a sequence of DrillDataset")
        _set(self, "datasets", tuple(self.datasets))
        if not isinstance(self.probes, tuple | list):
            raise PredicateError(f"probes must be a sequence, not {describe(self.probes)}")
        probes = tuple(_frozen_object(p, f"probes[{n}]") for n, p in enumerate(self.probes))
        _set(self, "probes", probes)
        _set(self, "findings", _findings(self.findings, "findings"))
        if not isinstance(self.tool, ToolInfo):
            raise PredicateError(f"tool must be a ToolInfo, not {describe(self.tool)}")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "drill") -> DrillPredicate:
        """Read a drill attestation's predicate; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        plain = (
            "drill_id",
            "backup_id",
            "manifest_sha256",
            "engine",
            "target",
            "forced",
            "ok",
            "rto_seconds",
            "restore_seconds",
            "total_seconds",
            "fingerprint_match",
        )
        values: dict[str, Any] = {name: f.raw(name) for name in plain}
        found: DrillPredicate = _build(
            cls,
            where,
            **values,
            scratch=f.optional_json_object("scratch"),
            started_at=f.time("started_at"),
            finished_at=f.time("finished_at"),
            phases=f.json_object("phases"),
            datasets=tuple(
                DrillDataset.from_predicate(item, path) for item, path in f.items("datasets")
            ),
            probes=tuple(_frozen_object(item, path) for item, path in f.items("probes")),
            findings=tuple(
                finding_from_predicate(item, path) for item, path in f.items("findings")
            ),
            tool=ToolInfo.from_predicate(f.raw("tool"), f.path("tool")),
        )
        f.done()
        return found

    def to_predicate(self) -> dict[str, Any]:
        """The predicate's JSON object."""
        return {
            "drill_id": self.drill_id,
            "backup_id": self.backup_id,
            "manifest_sha256": self.manifest_sha256,
            "engine": self.engine.value,
            "target": self.target,
            "forced": self.forced,
            "scratch": thawed_json(self.scratch),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "ok": self.ok,
            "rto_seconds": self.rto_seconds,
            "restore_seconds": self.restore_seconds,
            "total_seconds": self.total_seconds,
            "phases": dict(self.phases),
            "fingerprint_match": self.fingerprint_match,
            "datasets": [d.to_predicate() for d in self.datasets],
            "probes": [thawed_json(p) for p in self.probes],
            "findings": [finding_to_predicate(f) for f in self.findings],
            "tool": self.tool.to_predicate(),
        }
