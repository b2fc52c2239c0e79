"""Fingerprints and index files of a fixed set of inputs stay byte-identical.

The pins in ``outputs.json`` were computed before the services renovation (issue 14) by
``generate.py``; any change of output (a different digest, a new error, a dataset lost) fails
here. Inputs: files built from fixed values here, and every BSON, mongodump archive and RDB
file of ../shared/formats (skipped when that folder is absent).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.unit.pinned.generate import compute, shared_inputs, synthetic

PINS: dict[str, dict[str, Any]] = json.loads((Path(__file__).with_name("outputs.json")).read_text())
SHARED = sorted(k for k in PINS if k.startswith("shared/"))


def test_synthetic_inputs_match_their_pins() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = synthetic(Path(tmp))
        got = compute(inputs)
    assert got == {k: PINS[k] for k in inputs}


@pytest.mark.parametrize("name", SHARED)
def test_shared_file_matches_its_pin(name: str) -> None:
    inputs = shared_inputs()
    if not inputs:
        pytest.skip("../shared/formats is absent (the genuine files live beside the repo)")
    assert name in inputs, f"{name} is pinned but no longer in GROUND_TRUTH.json"
    assert compute({name: inputs[name]}) == {name: PINS[name]}
