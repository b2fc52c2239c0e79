"""Sealed samples do not outlive their request (issue 17): the 5-record sample an approver
sees is removed once its request ended (executed, vetoed, cancelled, expired) by the sweep
that every new export request, every decision and every execution runs; the sample of an
open request is kept; the ledger keeps the digest and the approver's view says the sample is
no longer kept. Real SecantusDB, real backups, real accounts with TOTP, real age encryption;
time is injected, never slept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import _customers, prepare
from tests.e2e.test_export_preview import _ledger_text, _people, _show

from affidavit.errors import ApprovalPending
from affidavit.models.approval import ApprovalRequest
from affidavit.models.identity import Principal
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import gated, requests
from affidavit.services.context import App
from affidavit.services.exports import preview as export_preview
from affidavit.services.exports import samples
from affidavit.services.exports.run import run_export as run_export_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def _ask(app: App, olga: Principal) -> tuple[str, str]:
    """An export run request by olga: its id and its sample's digest."""
    with app.acting_as(olga), pytest.raises(ApprovalPending) as pending:
        run_export_service(app, "customers-to-acme")
    request = pending.value.request
    return str(request["id"]), str(request["params"]["preview"]["sample_sha256"])


def _sealed(home: Path, digest: str) -> Path:
    return home / samples.PREVIEW_DIR / f"{digest}.json"


def _request(app: App, who: Principal, request_id: str) -> ApprovalRequest:
    return requests.get_request(app, who, request_id)


def test_after_approval_and_run_the_sample_is_removed(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    secrets: dict[str, str] = {}
    people = _people(app, secrets)
    request_id, digest = _ask(app, people["olga"])
    assert _sealed(home, digest).is_file()
    requests.approve(app, people["paul"], request_id, note="fine")
    assert _sealed(home, digest).is_file()  # approved, not yet run: still open
    done = gated.execute(app, people["olga"], request_id)
    assert done.result["ok"] is True
    assert not _sealed(home, digest).exists()
    assert digest in _ledger_text(home)  # the ledger keeps the digest
    # the approver's view: no longer kept, not an error (the service and the CLI)
    seen = export_preview.request_view(
        app, people["paul"], _request(app, people["paul"], request_id), datetime.now(UTC)
    )
    assert seen["preview"]["sample"] is None
    assert seen["preview"]["sample_sha256"] == digest
    assert "no longer kept" in seen["preview"]["sample_withheld"]
    assert "executed" in seen["preview"]["sample_withheld"]
    shown = _show(cli, tmp_path, secrets, "paul", request_id)
    assert "no longer kept" in shown["preview"]["sample_withheld"]


def test_after_a_veto_the_sample_is_removed(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    requests.veto(app, people["paul"], request_id, reason="too much personal data")
    assert not _sealed(home, digest).exists()
    seen = export_preview.shown(
        app, people["paul"], _request(app, people["paul"], request_id), datetime.now(UTC)
    )
    assert seen is not None and seen["sample"] is None
    assert "no longer kept: the request is vetoed" in seen["sample_withheld"]


def test_after_a_cancellation_the_sample_is_removed(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    requests.cancel(app, people["olga"], request_id, reason="asked by mistake")
    assert not _sealed(home, digest).exists()


def test_an_open_requests_sample_is_kept_and_an_expired_ones_is_swept(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    first, digest = _ask(app, people["olga"])
    # a second request shows the same records (the same digest); vetoing it must not take
    # the sample the first, still open, request shows
    second, same = _ask(app, people["olga"])
    assert same == digest and second != first
    requests.veto(app, people["paul"], second, reason="a duplicate")
    assert _sealed(home, digest).is_file()
    assert export_preview.sweep(app) == []
    seen = export_preview.shown(
        app, people["paul"], _request(app, people["paul"], first), datetime.now(UTC)
    )
    assert seen is not None and seen["sample"] is not None and len(seen["sample"]) == 5
    # the approval window (a day by default) passes with nobody judging: time injected
    later = datetime.now(UTC) + timedelta(days=2)
    assert export_preview.sweep(app, now=later) == [digest]
    assert not _sealed(home, digest).exists()
    seen = export_preview.shown(app, people["paul"], _request(app, people["paul"], first), later)
    assert seen is not None and "no longer kept: the request is expired" in seen["sample_withheld"]


def test_a_sample_no_request_names_is_swept_after_the_grace_and_foreign_files_stay(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    _, kept = _ask(app, people["olga"])  # an open request's sample
    folder = home / samples.PREVIEW_DIR
    # a dry pass whose request was never recorded left its sample
    orphan = "ab" * 32
    export_preview._seal(app, orphan, b'[{"_id":"x"}]')
    # a partial file of a writer that died, and things the sweep does not own
    partial = folder / f".{orphan}.4242.partial"
    partial.write_text("{")
    (folder / "notes.txt").write_text("not a sample")
    (folder / f"{'cd' * 32}.json").mkdir()  # a folder with a sample's name
    (folder / f"{'ef' * 32}.json").symlink_to(folder / "notes.txt")
    unreadable = folder / "locked"
    unreadable.mkdir(mode=0o000)
    try:
        # within the grace the orphan may be a sample whose request is being recorded
        assert export_preview.sweep(app) == []
        later = datetime.now(UTC) + samples.GRACE + timedelta(minutes=1)
        assert export_preview.sweep(app, now=later) == [orphan]
    finally:
        unreadable.chmod(0o700)
    assert not _sealed(home, orphan).exists() and not partial.exists()
    assert _sealed(home, kept).is_file()  # open: kept, whatever its age
    assert (folder / "notes.txt").read_text() == "not a sample"
    assert (folder / f"{'cd' * 32}.json").is_dir()
    assert (folder / f"{'ef' * 32}.json").is_symlink()
    assert unreadable.is_dir()


def test_a_sample_sealed_again_for_a_new_request_survives_the_old_ones_end(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    """The race the sweep must not lose: a vetoed request's records are asked for again;
    the new dry pass seals the same digest a moment before its request is recorded."""
    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    request_id, digest = _ask(app, people["olga"])
    requests.veto(app, people["paul"], request_id, reason="not yet")
    assert not _sealed(home, digest).exists()
    export_preview._seal(app, digest, b"[]")  # the sweep judges names and times only
    assert export_preview.sweep(app) == []  # written after the vetoed request: not its own
    assert _sealed(home, digest).is_file()


def test_run_due_sweeps_the_sample_of_a_request_that_expired_unattended(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody judges the request and nobody asks for another export: the scheduler's
    ``run-due`` still removes the expired request's sample (time injected, not slept)."""
    from affidavit.services import schedule

    prepare(cli, home, tmp_path, mongo)
    people = _people(app, {})
    _, digest = _ask(app, people["olga"])
    schedule.run_due(app)  # the request is open: its sample stays
    assert _sealed(home, digest).is_file()
    later = datetime.now(UTC) + timedelta(days=2)
    monkeypatch.setattr(schedule, "_now", lambda: later)
    schedule.run_due(app)
    assert not _sealed(home, digest).exists()
