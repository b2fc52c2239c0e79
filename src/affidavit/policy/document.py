"""The policy file (``policy.toml``): requirements per classification level, validated with
precise errors.

Example::

    [policy]
    name = "Example Corp backup policy"
    owner = "platform-team@example.com"   # default owner of every control
    checkpoint_publish_every_days = 1      # a ledger checkpoint must reach a witness this often
    access_review_max_days = 90            # an access review is closed this often; the period
    #                                        the access controls look back over

    [owners]                               # owners of single controls (override the default)
    "drill.rto" = "sre-oncall@example.com"

    [sla]                                  # days until a new finding is due, by severity
    critical = 1
    high = 7

    [defaults]                             # every level inherits these ...
    rpo_hours = 24
    retention_min_days = 30
    retention_max_days = 400
    encryption_required = true
    immutability_required = false
    cross_region_copy_required = false
    verify_every_days = 7
    drill_every_days = 90
    rto_seconds = 14400
    key_rotation_days = 365

    [levels.restricted]                    # ... and a level overrides what it must
    rpo_hours = 4
    immutability_required = true

Every classification level (public, internal, confidential, restricted) must end up with every
requirement, from its own table or from ``[defaults]``; the error names each missing or wrong
key with its path (``levels.restricted.rpo_hours: ...``), all of them at once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from affidavit.constants import Classification
from affidavit.errors import InputError
from affidavit.models.governance import Severity

MAX_POLICY_BYTES = 256 * 1024
_M = TypeVar("_M", bound=BaseModel)
_HINT = "see docs/controls.md for the policy file; `affidavit policy validate FILE` checks one"


class LevelRequirements(BaseModel):
    """What a classification level requires. Every field is needed once defaults are merged."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    rpo_hours: float = Field(gt=0, le=24 * 366, description="maximum age of the newest backup")
    retention_min_days: int = Field(ge=1, le=36500)
    retention_max_days: int = Field(ge=1, le=36500)
    encryption_required: bool
    immutability_required: bool
    cross_region_copy_required: bool
    verify_every_days: float = Field(gt=0, le=3660, description="content verification period")
    drill_every_days: float = Field(gt=0, le=3660, description="restore drill period")
    rto_seconds: float = Field(gt=0, le=30 * 86400, description="recovery-time objective")
    key_rotation_days: int = Field(ge=1, le=3660, description="KEK rotation period")

    @model_validator(mode="after")
    def _retention_order(self) -> LevelRequirements:
        if self.retention_min_days > self.retention_max_days:
            raise ValueError("retention_min_days must not exceed retention_max_days")
        return self


class _Header(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200)
    owner: str = Field(min_length=1, max_length=254)
    checkpoint_publish_every_days: float = Field(default=1, gt=0, le=366)
    access_review_max_days: int = Field(default=90, ge=1, le=3660)


class _Sla(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    critical: int = Field(default=1, ge=0, le=3660)
    high: int = Field(default=7, ge=0, le=3660)
    medium: int = Field(default=30, ge=0, le=3660)
    low: int = Field(default=90, ge=0, le=3660)


class _Owners(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A validated policy."""

    name: str
    owner: str
    checkpoint_publish_every_days: float
    owners: Mapping[str, str]
    access_review_max_days: int = 90
    sla_days: Mapping[Severity, int]
    levels: Mapping[Classification, LevelRequirements]

    def level(self, classification: Classification) -> LevelRequirements:
        """The requirements of a classification level."""
        return self.levels[classification]

    def owner_of(self, control: str) -> str:
        """Who owns ``control``: its own entry under ``[owners]``, else the policy owner."""
        return self.owners.get(control, self.owner)

    def to_json(self) -> dict[str, Any]:
        """The effective requirements (defaults merged), JSON-ready."""
        return {
            "name": self.name,
            "owner": self.owner,
            "checkpoint_publish_every_days": self.checkpoint_publish_every_days,
            "access_review_max_days": self.access_review_max_days,
            "owners": dict(self.owners),
            "sla_days": {s.value: d for s, d in self.sla_days.items()},
            "levels": {c.value: req.model_dump() for c, req in self.levels.items()},
        }


def parse_policy(
    text: str, *, name: str = "policy.toml", controls: frozenset[str] = frozenset()
) -> Policy:
    """Parse and validate a policy file; raise :class:`InputError` listing every problem.

    ``controls`` are the known control ids: an ``[owners]`` entry for any other id is an
    error (a typo would otherwise leave the control with the default owner unnoticed).
    """
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise InputError(f"{name} is larger than {MAX_POLICY_BYTES // 1024} KiB", hint=_HINT)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{name} is not valid TOML: {exc}", hint=_HINT) from None
    except RecursionError:
        raise InputError(f"{name} nests too deeply to be a policy", hint=_HINT) from None
    problems: list[str] = []
    allowed = {"policy", "owners", "sla", "defaults", "levels"}
    problems += [f"{key}: unknown table" for key in sorted(set(data) - allowed)]

    header = _validated(_Header, data.get("policy"), "policy", problems)
    sla = _validated(_Sla, data.get("sla", {}), "sla", problems)
    owners = _owners(data.get("owners", {}), controls, problems)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append("defaults: must be a table")
        defaults = {}
    unknown_defaults = sorted(set(defaults) - set(LevelRequirements.model_fields))
    problems += [f"defaults.{key}: unknown requirement" for key in unknown_defaults]
    levels_raw = data.get("levels", {})
    if not isinstance(levels_raw, dict):
        problems.append("levels: must be a table of classification levels")
        levels_raw = {}
    known_levels = {c.value for c in Classification}
    problems += [
        f"levels.{key}: unknown classification level (use {', '.join(sorted(known_levels))})"
        for key in sorted(set(levels_raw) - known_levels)
    ]
    levels: dict[Classification, LevelRequirements] = {}
    for level in Classification:
        own = levels_raw.get(level.value, {})
        if not isinstance(own, dict):
            problems.append(f"levels.{level.value}: must be a table")
            continue
        merged = {k: v for k, v in defaults.items() if k in LevelRequirements.model_fields}
        merged.update(own)
        req = _validated(
            LevelRequirements,
            merged,
            f"levels.{level.value}",
            problems,
            origin=_origin(defaults, own),
        )
        if req is not None:
            levels[level] = req
    if problems or header is None or sla is None:
        shown = "; ".join(problems)
        raise InputError(f"{name} is invalid: {shown}", hint=_HINT)
    return Policy(
        name=header.name,
        owner=header.owner,
        checkpoint_publish_every_days=header.checkpoint_publish_every_days,
        access_review_max_days=header.access_review_max_days,
        owners=owners,
        sla_days={
            Severity.CRITICAL: sla.critical,
            Severity.HIGH: sla.high,
            Severity.MEDIUM: sla.medium,
            Severity.LOW: sla.low,
        },
        levels=levels,
    )


def _validated(
    model: type[_M],
    value: Any,
    where: str,
    problems: list[str],
    *,
    origin: Callable[[str], str] | None = None,
) -> _M | None:
    """Validate one table, adding ``path: message`` for each error (each only once; a bad
    value inherited from ``[defaults]`` is reported at ``defaults.KEY``)."""
    if value is None:
        problems.append(f"{where}: missing table [{where}]")
        return None
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a table")
        return None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            table = (origin(loc) if origin and loc else "") or where
            path = f"{table}.{loc}" if loc else where
            msg = (
                "missing (set it here or in [defaults])" if err["type"] == "missing" else err["msg"]
            )
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            if f"{path}: {msg}" not in problems:
                problems.append(f"{path}: {msg}")
        return None


def _origin(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> Callable[[str], str]:
    def where(key: str) -> str:
        return "defaults" if key in defaults and key not in own else ""

    return where


def _owners(value: Any, controls: frozenset[str], problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append("owners: must be a table of control id = owner")
        return {}
    owners: dict[str, str] = {}
    for control, owner in value.items():
        if controls and control not in controls:
            problems.append(f"owners.{control}: unknown control")
        elif not isinstance(owner, str) or not owner.strip() or len(owner) > 254:
            problems.append(f"owners.{control}: must be a non-empty string")
        else:
            owners[control] = owner
    return owners
