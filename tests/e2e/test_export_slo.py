"""The SLO of an export spec (issue 17): every run records its throughput, latency (duration)
and error rate in its ledger event; ``export.slo`` fails the runs that missed their spec's
objective. Real SecantusDB, real backups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    SPEC,
    _customers,
    _refused,
    events,
    export_controls,
    prepare,
    run_export,
)

from affidavit.errors import InputError
from affidavit.models.export import Slo, parse_spec
from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def _with_slo(table: str) -> str:
    return SPEC + "\n[slo]\n" + table + "\n"


def test_a_run_that_meets_its_slo_passes_and_records_its_figures(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo, spec=_with_slo("max_duration_s = 600\nmax_error_rate = 0"))
    run_export(cli)
    (done,) = events(home, "export.completed")
    figures = done["details"]["performance"]
    assert figures["records_in"] == 40
    assert figures["error_rate"] == 0.0
    assert 0 < figures["duration_s"] < 600
    assert figures["docs_per_s"] == pytest.approx(40 / figures["duration_s"], rel=0.1)
    assert figures["slo"] == {"max_duration_s": 600.0, "max_error_rate": 0.0}
    assert figures["slo_missed"] == []
    control = export_controls(cli)["export.slo"]
    assert control["status"] == "pass" and "SLO met" in control["message"]


def test_a_run_that_missed_its_slo_fails_the_control(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    # unreachable throughput, and a tolerated contract failure above the error rate allowed
    spec = _with_slo("min_docs_per_s = 1000000000\nmax_error_rate = 0.01").replace(
        "max_violations = 0", "max_violations = 40"
    )
    spec = spec.replace('enum = ["FR", "DE", "NL"]', 'enum = ["FR", "DE"]')  # NL records fail
    prepare(cli, home, tmp_path, mongo, spec=spec)
    out = run_export(cli)
    assert out["predicate"]["records"]["excluded"] == {"contract": 13}
    (done,) = events(home, "export.completed")
    figures = done["details"]["performance"]
    assert figures["error_rate"] == round(13 / 40, 6)
    missed = " ".join(figures["slo_missed"])
    assert "throughput" in missed and "error rate 0.3250 > 0.01" in missed
    control = export_controls(cli)["export.slo"]
    assert control["status"] == "fail"
    assert "missed its SLO" in control["message"] and "error rate" in control["message"]


def test_a_blocked_run_records_its_figures_too(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    spec = _with_slo("max_error_rate = 0.5").replace(
        'enum = ["FR", "DE", "NL"]', 'enum = ["FR", "DE"]'
    )
    prepare(cli, home, tmp_path, mongo, spec=spec)
    run_export(cli, code=1)
    (blocked,) = events(home, "export.blocked")
    figures = blocked["details"]["performance"]
    assert figures["error_rate"] == round(13 / 40, 6) and figures["slo_missed"] == []


def test_a_spec_without_an_slo_passes_naming_its_figures(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    run_export(cli)
    (done,) = events(home, "export.completed")
    assert "slo" not in done["details"]["performance"]
    control = export_controls(cli)["export.slo"]
    assert control["status"] == "pass" and "no SLO declared" in control["message"]


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("min_docs_per_s = -1", "must be a number >= 0"),
        ('max_duration_s = "fast"', "must be a number >= 0"),
        ("max_error_rate = 2", "between 0 and 1"),
        ("max_latency = 3", "unknown key(s) max_latency"),
        ("", "declares no objective"),
    ],
)
def test_a_malformed_slo_is_refused(
    cli: Any, home: Path, tmp_path: Path, table: str, words: str
) -> None:
    text = _with_slo(table).format(dest=tmp_path)
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(text, name="t")
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(text)
    _refused(cli("export", "spec", "add", str(spec_file)), words, hint=False)


def test_slo_limits() -> None:
    slo = Slo(min_docs_per_s=100, max_duration_s=10, max_error_rate=0.1)
    assert slo.missed(docs_per_s=100, duration_s=10, error_rate=0.1) == []
    assert len(slo.missed(docs_per_s=99.9, duration_s=10.1, error_rate=0.11)) == 3
