"""JSON views of service results (the stable ``--json`` shapes). They live in
:mod:`affidavit.services.views`, shared with the REST API, so that both say the same thing."""

from __future__ import annotations

from affidavit.services.views import (
    backup_json,
    dataset_json,
    description_json,
    drill_json,
    hold_json,
    inventory_json,
    source_json,
    source_test_json,
    vault_json,
    verification_json,
)

__all__ = [
    "backup_json",
    "dataset_json",
    "description_json",
    "drill_json",
    "hold_json",
    "inventory_json",
    "source_json",
    "source_test_json",
    "vault_json",
    "verification_json",
]
