"""The evidence package against someone who writes the catalog (and the vault) but holds no
key: a history with a held backup, a hold released and a backup deleted, and a failed
verification, built on a real Redis server; then the catalog is tampered with as the attack
pass did (M5: holds and deletions misstated in the rows; M6: a failed verification moved out
of the period through the ``time`` column of ``ledger_entries``; B6: an entry that is not
JSON or nests 100,000 arrays). Each attack ends in a refused build or a package that fails
verification, the finding named; the untampered catalog builds a package that verifies."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from affidavit.cli.main import main
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto.dsse import sign_envelope
from affidavit.crypto.signing import SigningKey
from affidavit.errors import IntegrityError
from affidavit.evidence.content import FORMAT, FORMAT_1
from affidavit.evidence.package import (
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    SIGNATURE,
    manifest_bytes,
    read_package,
)
from affidavit.evidence.verify import EvidenceReport
from affidavit.models.period import Period
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import backup as backups
from affidavit.services import evidence as evidence_service
from affidavit.services import inventory as inv
from affidavit.services import policy as policy_service
from affidavit.services import verify as verify_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.backup import recording
from affidavit.services.context import load_ledger_identity, open_app
from affidavit.services.evidence import build_evidence, verify_evidence
from affidavit.services.setup import initialise

POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)
DEEP = b"[" * 100_000 + b"]" * 100_000


@dataclass(frozen=True)
class History:
    home: Path
    vkey: str
    key: SigningKey
    keyid: str
    period: Period
    deleted: str  # a backup whose hold CASE-1 was placed and released, then deleted
    held: str  # a backup under hold CASE-2, whose verification failed
    verification: str  # that failed verification
    package: Path  # built from the untampered catalog


def _as(settings: Settings, actor: str) -> Settings:
    return settings.model_copy(update={"actor": actor})


@contextlib.contextmanager
def _clock_at(moment: datetime) -> Iterator[None]:
    """The backup service's and the folder vault's clocks at ``moment`` (past a retention)."""
    import affidavit.vaults.file as file_vault

    real = file_vault.datetime

    class _Clock(real):  # type: ignore[misc,valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return moment

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recording, "now", lambda: moment)
        mp.setattr(file_vault, "datetime", _Clock)
        yield


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    root = tmp_path_factory.mktemp("evidence-tamper")
    home = root / "home"
    vault = root / "vault"
    settings = load_settings(home=home, environ={}, overrides={"actor": "ops@example.com"})
    initialise(settings)
    with RedisScratch(replica_sync_delay=0) as cache:
        with engine_for_uri(EngineName.REDIS, ConnectionUri.parse(EngineName.REDIS, cache.uri),
                            password=None, timeout=5) as db:  # fmt: skip
            db.seed_sample(seed=5, scale=5)
        with open_app(settings) as app:
            inv.add_source(app, name="cache", engine=EngineName.REDIS, uri=cache.uri,
                           secret=None, classification=Classification.INTERNAL,
                           region="eu-west-1", owner="sre@example.com")  # fmt: skip
            inv.add_vault(app, name="v1", url=f"file://{vault}", region="eu-central-1")
            inv.take_inventory(app)
            doomed = backups.run_backup(app, "cache", retain_days=1)
            backups.add_hold(app, doomed.id, case_id="CASE-1", reason="litigation")
            backups.release_hold(app, doomed.id, case_id="CASE-1", reason="case closed")
            held = backups.run_backup(app, "cache")
            backups.add_hold(app, held.id, case_id="CASE-2", reason="regulator inquiry")
            data = next(a for a in held.artifacts if a.role.value == "data")
            path = vault / data.path  # the vault's writer flips a byte: verification fails
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
            failed = verify_service.verify_backup(app, held.id)
            assert not failed.ok
        with _clock_at(doomed.retain_until + timedelta(minutes=1)), open_app(settings) as app:
            backups.delete_backup(app, doomed.id, reason="retention over")
        policy_file = root / "policy.toml"
        policy_file.write_text(POLICY, encoding="utf-8")
        with open_app(_as(settings, "alice")) as app:
            version = policy_service.propose_policy(app, policy_file)
        with open_app(_as(settings, "bob")) as app:
            policy_service.approve_policy(app, version.version)
            policy_service.check_policy(app)
    now = datetime.now(UTC)
    period = Period(now - timedelta(days=1), now + timedelta(minutes=30))
    package = root / "clean.tgz"
    with open_app(settings) as app:
        build_evidence(app, period=period, out=package)
    identity = load_ledger_identity(home)
    assert identity is not None
    return History(
        home=home, vkey=identity.vkey, key=identity.signer.key,
        keyid=f"{identity.signer.key_id:08x}", period=period, deleted=doomed.id, held=held.id,
        verification=failed.id, package=package,
    )  # fmt: skip


# -- helpers ------------------------------------------------------------------------------------


def _copy_home(history: History, tmp_path: Path) -> Path:
    """A home of the test's own (the attacks must not reach the module's history)."""
    home = tmp_path / "home"
    shutil.copytree(history.home, home)
    return home


def _settings(home: Path) -> Settings:
    return load_settings(home=home, environ={}, overrides={"actor": "ops@example.com"})


def _sql(home: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """What the attacker does with write access to the catalog database."""
    with contextlib.closing(sqlite3.connect(home / "catalog.sqlite")) as db, db:
        for sql, params in statements:
            db.execute(sql, params)


def _events(home: Path) -> list[dict[str, Any]]:
    """Every ledger event, parsed from the entries themselves."""
    with contextlib.closing(sqlite3.connect(home / "catalog.sqlite")) as db:
        rows = db.execute("SELECT entry FROM ledger_entries ORDER BY seq").fetchall()
    return [json.loads(bytes(entry)) for (entry,) in rows]


def _seq(home: Path, action: str, subject: str) -> int:
    (seq,) = [e["seq"] for e in _events(home) if e["action"] == action and e["subject"] == subject]
    return int(seq)


def _ledger_size(home: Path) -> int:
    with contextlib.closing(sqlite3.connect(home / "catalog.sqlite")) as db:
        return int(db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _build_cli(
    home: Path, period: Period, out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--home", str(home), "evidence", "build", "--from", period.start.isoformat(),
                 "--to", period.end.isoformat(), "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _verify_cli(
    path: Path, vkey: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["evidence", "verify", str(path), "--public-key", vkey, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _backups(path: Path) -> dict[str, dict[str, Any]]:
    records = json.loads(read_package(path).files["records/backups.json"])
    return {b["id"]: b for b in records}


def _cited(path: Path) -> dict[int, dict[str, Any]]:
    lines = read_package(path).files["ledger/events.jsonl"].splitlines()
    events = (json.loads(json.loads(line)["entry"]) for line in lines)
    return {e["seq"]: e for e in events}


def _resigned(
    history: History,
    dst: Path,
    mutate: Callable[[dict[str, bytes]], None],
    *,
    format: str = FORMAT,
) -> Path:
    """The untampered package with ``mutate`` applied and signed again with the genuine key:
    what a catalog writer could make a builder produce, so the check under test is the one
    behind the signature."""
    files = dict(read_package(history.package).files)
    header = {k: v for k, v in json.loads(files.pop(MANIFEST)).items()
              if k not in ("files", "format")}  # fmt: skip
    files.pop(SIGNATURE)
    mutate(files)
    document = json.loads(manifest_bytes(files, header=header))
    document["format"] = format
    manifest = rfc8785.dumps(document)
    envelope = sign_envelope(manifest, MANIFEST_PAYLOAD_TYPE, history.key, history.keyid)
    signature = envelope.to_json().encode()
    members = {MANIFEST: manifest, SIGNATURE: signature, **dict(sorted(files.items()))}
    with (
        open(dst, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def _edit_backups(
    change: Callable[[dict[str, dict[str, Any]]], None],
) -> Callable[[dict[str, bytes]], None]:
    def mutate(files: dict[str, bytes]) -> None:
        records = json.loads(files["records/backups.json"])
        change({b["id"]: b for b in records})
        files["records/backups.json"] = json.dumps(records).encode()

    return mutate


def _failed(path: Path, vkey: str) -> EvidenceReport:
    report = verify_evidence(path, vkey)
    assert not report.ok
    return report


# -- the untampered catalog ---------------------------------------------------------------------


def test_the_package_states_deletion_and_holds_as_the_ledger_records_them(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _verify_cli(history.package, history.vkey, capsys)
    assert code == 0 and out["ok"] is True, out["findings"]
    manifest = json.loads(read_package(history.package).files[MANIFEST])
    assert manifest["format"] == FORMAT
    cited, records = _cited(history.package), _backups(history.package)
    by_action = {(e["action"], e["subject"]): e for e in cited.values()}

    deleted = records[history.deleted]
    event = by_action[("backup.deleted", f"backup:{history.deleted}")]
    assert deleted["status"] == "deleted" and deleted["deleted_seq"] == event["seq"]
    assert datetime.fromisoformat(deleted["deleted_at"]) == datetime.fromisoformat(
        event["time"].replace("Z", "+00:00")
    )
    (hold,) = deleted["holds"]
    assert hold["case"] == "CASE-1" and hold["released"] is not None
    assert cited[hold["seq"]]["action"] == "hold.added"
    assert cited[hold["released_seq"]]["action"] == "hold.released"

    held = records[history.held]
    assert held["status"] == "complete" and held["deleted_at"] is None
    assert held["deleted_seq"] is None
    (hold,) = held["holds"]
    assert hold["case"] == "CASE-2" and hold["released"] is None and hold["released_seq"] is None
    assert cited[hold["seq"]]["subject"] == f"backup:{history.held}"


def test_a_first_format_package_still_verifies(history: History, tmp_path: Path) -> None:
    """``affidavit-evidence/1``: the backup records carried the rows' deletion and holds and
    cited neither; such a package keeps verifying under its own rules."""

    def first_format(records: dict[str, dict[str, Any]]) -> None:
        for b in records.values():
            del b["deleted_seq"]
            b["holds"] = [{k: h[k] for k in ("case", "placed", "released")} for h in b["holds"]]

    old = _resigned(history, tmp_path / "v1.tgz", _edit_backups(first_format), format=FORMAT_1)
    report = verify_evidence(old, history.vkey)
    assert report.ok, [f.to_json() for f in report.findings]
    assert report.summary["format"] == FORMAT_1
    # the same records under the new format cite neither their deletion nor their holds
    new = _resigned(history, tmp_path / "v2.tgz", _edit_backups(first_format))
    codes = {f.code for f in _failed(new, history.vkey).findings}
    assert codes == {"reference-missing", "record-mismatch"}


# -- M5: holds and deletions misstated in the catalog ---------------------------------------------


def test_m5_rows_that_misstate_holds_and_deletion_do_not_reach_the_package(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _copy_home(history, tmp_path)
    _sql(home, ("DELETE FROM holds", ()),
         ("UPDATE backups SET status='deleted', deleted_at='2027-02-01 00:00:00'", ()))  # fmt: skip
    out = tmp_path / "ev.tgz"
    code, text = _build_cli(home, history.period, out, capsys)
    assert code == 0, text
    assert "package states the ledger's" in text  # the rows that disagree are named
    assert history.held in text and history.deleted in text
    code, verified = _verify_cli(out, history.vkey, capsys)
    assert code == 0 and verified["ok"] is True, verified["findings"]
    records = _backups(out)
    held = records[history.held]
    assert held["status"] == "complete" and held["deleted_at"] is None
    assert [(h["case"], h["released"]) for h in held["holds"]] == [("CASE-2", None)]
    deleted = records[history.deleted]
    assert deleted["status"] == "deleted"
    assert not deleted["deleted_at"].startswith("2027-02-01")
    assert [h["case"] for h in deleted["holds"]] == ["CASE-1"]


def test_m5_a_package_that_misstates_holds_and_deletion_fails(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def misstate(records: dict[str, dict[str, Any]]) -> None:  # what the old builder wrote
        for b in records.values():
            b.update(status="deleted", deleted_at="2027-02-01T00:00:00+00:00", holds=[])

    forged = _resigned(history, tmp_path / "forged.tgz", _edit_backups(misstate))
    code, out = _verify_cli(forged, history.vkey, capsys)
    assert code == 1 and out["ok"] is False
    held = f"records/backups.json#{history.held}"
    deleted = f"records/backups.json#{history.deleted}"
    messages = {(f["code"], f["subject"], f["message"]) for f in out["findings"]}
    assert any(c == "reference-missing" and s == held and "backup.deleted" in m
               for c, s, m in messages)  # fmt: skip
    assert any(c == "record-mismatch" and s == held and "hold.added" in m
               for c, s, m in messages)  # fmt: skip
    assert any(c == "record-mismatch" and s == deleted and "deleted_at" in m
               for c, s, m in messages)  # fmt: skip
    assert any(c == "record-mismatch" and s == deleted and "hold.released" in m
               for c, s, m in messages)  # fmt: skip
    assert {c for c, _, _ in messages} == {"reference-missing", "record-mismatch"}


FORGED_LIFECYCLE: list[tuple[str, Callable[[History, dict[str, dict[str, Any]]], None], str]] = [
    ("deleted-backup-said-complete",
     lambda h, r: r[h.deleted].update(status="complete", deleted_at=None, deleted_seq=None),
     "backup.deleted"),
    ("deletion-time-moved",
     lambda h, r: r[h.deleted].update(deleted_at="2027-02-01T00:00:00+00:00"), "deleted_at"),
    ("active-hold-dropped", lambda h, r: r[h.held].update(holds=[]), "hold.added"),
    ("active-hold-said-released",
     lambda h, r: r[h.held]["holds"][0].update(released="2027-02-01T00:00:00+00:00"),
     "hold.released"),
    ("released-hold-said-active",
     lambda h, r: r[h.deleted]["holds"][0].update(released=None, released_seq=None),
     "hold.released"),
    ("hold-case-renamed", lambda h, r: r[h.held]["holds"][0].update(case="CASE-9"), "case"),
    ("hold-placed-later",
     lambda h, r: r[h.held]["holds"][0].update(placed="2027-02-01T00:00:00+00:00"), "placement"),
    ("complete-backup-said-deleted",
     lambda h, r: r[h.held].update(status="deleted"), "backup.deleted"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "what"), [e[1:] for e in FORGED_LIFECYCLE], ids=[e[0] for e in FORGED_LIFECYCLE]
)
def test_a_record_that_misstates_one_deletion_or_hold_is_caught(
    history: History,
    tmp_path: Path,
    change: Callable[[History, dict[str, dict[str, Any]]], None],
    what: str,
) -> None:
    forged = _resigned(
        history, tmp_path / "forged.tgz", _edit_backups(lambda r: change(history, r))
    )
    report = _failed(forged, history.vkey)
    assert {f.code for f in report.findings} <= {"record-mismatch", "reference-missing"}
    assert all(f.subject.startswith("records/backups.json#") for f in report.findings)
    assert any(what in f.message for f in report.findings), [f.message for f in report.findings]


# -- M6: a failed verification moved out of the period through the time column -----------------


def _hide_verification(history: History, home: Path) -> int:
    seq = _seq(home, "verification.completed", f"backup:{history.held}")
    _sql(home, ("UPDATE ledger_entries SET time='2025-01-01T00:00:00.000000Z' WHERE seq>=?",
                (seq,)),
         ("DELETE FROM verifications WHERE id=?", (history.verification,)))  # fmt: skip
    return seq


def test_m6_a_back_dated_time_column_makes_the_build_refuse(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _copy_home(history, tmp_path)
    _hide_verification(history, home)
    size = _ledger_size(home)
    out = tmp_path / "ev.tgz"
    code, text = _build_cli(home, history.period, out, capsys)
    assert code == 1, text
    assert "refusing to sign the package" in text and "column-mismatch" in text
    assert "ledger verify" in text and "Traceback" not in text  # the hint
    assert not out.exists() and not list(tmp_path.glob(".ev.tgz.*"))
    assert _ledger_size(home) == size  # nothing recorded either


def test_m6_the_builder_selects_the_period_by_the_entries_own_time(
    history: History, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # behind the refusal: even a builder that did not verify first cites the verification by
    # its signed time, so the package lacks its record and fails (never verifies without it)
    home = _copy_home(history, tmp_path)
    seq = _hide_verification(history, home)
    monkeypatch.setattr(evidence_service, "require_verified_ledger", lambda app, **kw: None)
    out = tmp_path / "ev.tgz"
    with open_app(_settings(home)) as app:
        build_evidence(app, period=history.period, out=out)
    assert _cited(out)[seq]["action"] == "verification.completed"
    report = _failed(out, history.vkey)
    assert [f.details.get("seq") for f in report.findings if f.code == "record-missing"] == [seq]


# -- B6: entries that hold no event ---------------------------------------------------------------


@pytest.mark.parametrize("entry", [b"not an event \xff", DEEP], ids=["not-json", "nested-deep"])
def test_b6_an_unparseable_entry_is_refused_never_a_crash(
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    entry: bytes,
) -> None:
    home = _copy_home(history, tmp_path)
    (check,) = [e["seq"] for e in _events(home) if e["action"] == "policy.checked"]
    hold = _seq(home, "hold.added", f"backup:{history.held}")
    _sql(home, ("UPDATE ledger_entries SET entry=? WHERE seq IN (?, ?)", (entry, check, hold)))
    out = tmp_path / "ev.tgz"
    code, text = _build_cli(home, history.period, out, capsys)
    assert code == 1, text
    assert "refusing to sign the package" in text and "Traceback" not in text
    assert not out.exists()
    # behind the refusal the builder still neither crashes nor signs what it cannot prove
    monkeypatch.setattr(evidence_service, "require_verified_ledger", lambda app, **kw: None)
    with open_app(_settings(home)) as app, pytest.raises(IntegrityError, match=f"seq {check}"):
        build_evidence(app, period=history.period, out=out)
    assert not out.exists()


@pytest.mark.parametrize("entry", ["not an event", DEEP.decode()], ids=["not-json", "nested-deep"])
def test_b6_a_cited_line_whose_entry_is_no_event_is_a_finding(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str
) -> None:
    def replace(files: dict[str, bytes]) -> None:
        lines = files["ledger/events.jsonl"].splitlines()
        obj = json.loads(lines[-1])
        obj["entry"] = entry
        lines[-1] = json.dumps(obj).encode()
        files["ledger/events.jsonl"] = b"\n".join(lines) + b"\n"

    forged = _resigned(history, tmp_path / "forged.tgz", replace)
    code, out = _verify_cli(forged, history.vkey, capsys)
    assert code == 1 and "event-malformed" in {f["code"] for f in out["findings"]}
