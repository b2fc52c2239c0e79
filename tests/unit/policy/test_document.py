"""The policy file: every requirement validated, every problem named with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from affidavit.constants import Classification
from affidavit.errors import InputError
from affidavit.models.governance import Severity
from affidavit.policy.controls import CONTROL_IDS
from affidavit.policy.document import parse_policy

GOOD = (Path(__file__).with_name("policy.toml")).read_text(encoding="utf-8")


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(text, controls=CONTROL_IDS)


def test_defaults_merge_into_every_level_and_levels_override() -> None:
    policy = parse(GOOD)
    assert policy.level(Classification.PUBLIC).rpo_hours == 24
    restricted = policy.level(Classification.RESTRICTED)
    assert restricted.rpo_hours == 4 and restricted.immutability_required
    assert restricted.retention_max_days == 400
    assert policy.owner_of("drill.rto") == "sre@example.com"
    assert policy.owner_of("backup.rpo") == "platform@example.com"
    assert policy.sla_days[Severity.HIGH] == 3 and policy.sla_days[Severity.LOW] == 90
    assert policy.checkpoint_publish_every_days == 2


def problems(text: str) -> str:
    with pytest.raises(InputError) as info:
        parse(text)
    return info.value.message


def test_every_problem_is_named_with_its_path_at_once() -> None:
    text = (
        GOOD.replace("rpo_hours = 24", "rpo_hours = -1")
        .replace("key_rotation_days = 365\n", "")
        .replace("[levels.restricted]", "[levels.secret]\nx = 1\n[levels.restricted]")
        .replace('"drill.rto"', '"drill.rot"')
    )
    message = problems(text)
    assert "defaults.rpo_hours: Input should be greater than 0" in message
    assert "levels.public.key_rotation_days: missing" in message
    assert "levels.restricted.key_rotation_days: missing" in message
    assert "levels.secret: unknown classification level" in message
    assert "owners.drill.rot: unknown control" in message
    # a bad default is reported once, not once per level that inherits it
    assert message.count("defaults.rpo_hours") == 1


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (("retention_min_days = 30", "retention_min_days = 500"), "must not exceed"),
        (("encryption_required = true", 'encryption_required = "yes"'), "encryption_required"),
        (("rto_seconds = 14400", "rto_seconds = 0"), "rto_seconds"),
        (("[policy]", "[policy]\nextra = 1"), "policy.extra: unknown key"),
        (('owner = "platform@example.com"', ""), "policy.owner: missing"),
        (("[defaults]", "[defaults]\nrpo_minutes = 3"), "defaults.rpo_minutes: unknown"),
    ],
)
def test_wrong_values_are_refused(mutation: tuple[str, str], expected: str) -> None:
    assert expected in problems(GOOD.replace(*mutation))


def test_not_toml_and_missing_header_and_oversize() -> None:
    assert "not valid TOML" in problems("[policy\n")
    assert "missing table [policy]" in problems(GOOD.split("[owners]")[1].join(["[owners]", ""]))
    assert "larger than" in problems("#" * (300 * 1024))
