"""``verify --cluster`` (issue 18): the segments of a backup checked on a real Dask cluster
(``distributed.LocalCluster``: a scheduler and worker *processes* on 127.0.0.1, random ports)
give exactly a local run's result: the same findings, the same signed statement (subjects and
predicate, times and ids aside), with 1 and 2 workers, over mutual TLS, with a worker killed
mid-run, and with a bit flipped in one segment. A scheduler that does not answer is exit 3
with nothing recorded; an address that is not tls:// (or tcp:// on loopback) is exit 2.

Segments are cut to 128 KiB (as in ``test_verify_segments.py``) so that a few MB of documents
make about twenty tasks."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import bson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from affidavit.config import load_settings
from affidavit.crypto.age_reader import AgeFile
from affidavit.ledger.attestation import Statement
from affidavit.models.manifest import BackupManifest
from affidavit.services import backup as backup_service
from affidavit.services import segment_tables
from affidavit.services.backends import vault_backend
from affidavit.services.context import open_app
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.verify.segments import (
    RangedFile,
    Remote,
    SegmentJob,
    SegmentPart,
    SegmentUse,
    check_segment,
    read_segments,
)

distributed = pytest.importorskip("distributed")
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402
from distributed.security import Security  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject

SEGMENT = 128 * 1024
_TASK = "affidavit-segment-"


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_tables, "SEGMENT_SIZE", SEGMENT)


@pytest.fixture(autouse=True)
def short_connect_timeout(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AFFIDAVIT_CONNECT_TIMEOUT", "3")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    """Two worker processes (one thread each) and a scheduler on 127.0.0.1."""
    local = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    )
    client = Client(local)
    try:
        _wait_workers(client, 2)
        yield local, client
    finally:
        client.close()
        local.close()


def _documents() -> bytes:
    """About 2.5 MB of documents of many sizes; every 97th is 300 KB (spans whole segments)."""
    docs = []
    for i in range(4000):
        size = 300_000 if i % 97 == 50 else (i * 37) % 900
        docs.append(bson.encode({"_id": bson.ObjectId(f"{i:024x}"), "n": i, "pad": "x" * size}))
    return b"".join(docs)


@pytest.fixture
def ingested(cli: Any, tmp_path: Path) -> dict[str, Any]:
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "customers.metadata.json").write_text(
        json.dumps({"options": {}, "indexes": [], "collectionName": "customers"})
    )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = json.loads(r.out)
    out["vault"] = vault
    return out


def _verify(cli: Any, backup_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", backup_id, "--json", *args)
    assert "Traceback" not in r.err
    assert r.out, r.err
    return r.code, json.loads(r.out)


_VOLATILE = {"id", "verification_id", "started_at", "finished_at", "seconds"}
_MODE = {"mode", "vouched_by", "vouched_by_action"}  # which mode ran, and why


def _checked(coverage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in coverage.items() if k not in _MODE}


def _result(home: Path, out: dict[str, Any]) -> dict[str, Any]:
    """What must be identical between two runs: the reported result and the signed statement
    (subjects, predicate), times and ids aside."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (envelope,) = db.execute(
            "select envelope from verifications where id = ?", (out["id"],)
        ).fetchone()
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    predicate = {
        k: v for k, v in statement["predicate"].items() if k not in _VOLATILE and "_at" not in k
    }
    predicate["coverage"] = _checked(predicate["coverage"])
    reported = {k: v for k, v in out.items() if k not in _VOLATILE | _MODE}
    if "coverage" in reported:  # run-due reports only the id and the outcome
        reported["coverage"] = _checked(reported["coverage"])
    return {
        "reported": reported,
        "subjects": statement["subject"],
        "predicate": predicate,
    }


def _segment_tasks(stream: Any) -> list[dict[str, Any]]:
    return [t for t in stream.data if str(t["key"]).startswith(_TASK)]


def _wait_workers(client: Client, n: int) -> None:
    """Until the scheduler has exactly ``n`` workers (a guard against a hang, not a limit)."""
    deadline = time.monotonic() + 300
    while len(client.scheduler_info()["workers"]) != n:
        assert time.monotonic() < deadline, f"the cluster did not reach {n} workers"
        time.sleep(0.1)


def _address(local: LocalCluster) -> str:
    address: str = local.scheduler_address
    return address


# -- the same result -------------------------------------------------------------------------


def test_cluster_runs_equal_the_local_run(
    cli: Any, home: Path, ingested: dict[str, Any], cluster: tuple[LocalCluster, Client]
) -> None:
    local, client = cluster
    backup_id = ingested["backup_id"]
    code, alone = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and alone["ok"] is True, alone["findings"]
    expected = _result(home, alone)

    with get_task_stream(client) as two:
        code, out = _verify(cli, backup_id, "--cluster", _address(local))
    assert code == 0, out["findings"]
    assert _result(home, out) == expected
    # the local run was deep and proved the tables: the cluster's run is fast, vouched by it
    assert (alone["mode"], out["mode"]) == ("deep", "fast") and out["vouched_by"] is not None
    with get_task_stream(client) as deep:
        code, forced = _verify(cli, backup_id, "--cluster", _address(local), "--deep")
    assert code == 0 and forced["mode"] == "deep" and _result(home, forced) == expected
    assert len(_segment_tasks(deep)) == len(_segment_tasks(two))
    tasks = _segment_tasks(two)
    assert len(tasks) >= 20  # the data artifact's segments and the metadata's, on the cluster

    local.scale(1)
    try:
        _wait_workers(client, 1)
        with get_task_stream(client) as one:
            code, out = _verify(cli, backup_id, "--cluster", _address(local))
        assert code == 0 and _result(home, out) == expected
        assert len(_segment_tasks(one)) == len(tasks)
        assert len({t["worker"] for t in _segment_tasks(one)}) == 1
    finally:
        local.scale(2)
        _wait_workers(client, 2)
    assert cli("ledger", "verify").code == 0


def test_a_flipped_bit_is_found_by_the_cluster_as_by_a_local_run(
    cli: Any, home: Path, ingested: dict[str, Any], cluster: tuple[LocalCluster, Client]
) -> None:
    local, client = cluster
    backup_id = ingested["backup_id"]
    (path,) = ingested["vault"].rglob("*customers.bson.age")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    code, alone = _verify(cli, backup_id, "--workers", "2")
    assert code == 1
    codes = {f["code"] for f in alone["findings"]}
    assert {"segment-mismatch", "artifact-hash-mismatch"} <= codes
    with get_task_stream(client) as stream:
        code, out = _verify(cli, backup_id, "--cluster", _address(local))
    assert code == 1
    assert _segment_tasks(stream)
    assert _result(home, out) == _result(home, alone)
    (mismatch,) = [f for f in out["findings"] if f["code"] == "segment-mismatch"]
    assert len(mismatch["details"]["segments"]) == 1


def test_a_worker_killed_mid_run_changes_nothing(
    cli: Any,
    home: Path,
    tmp_path: Path,
    ingested: dict[str, Any],
    cluster: tuple[LocalCluster, Client],
) -> None:
    """A plugin stalls the first segment task a worker is about to execute and writes that
    worker's pid; the test kills the process (SIGKILL) while the run waits for it. The
    scheduler runs its tasks again elsewhere; the result is the local one."""
    local, client = cluster
    backup_id = ingested["backup_id"]
    code, alone = _verify(cli, backup_id)
    assert code == 0
    marker = tmp_path / "stalled.pid"
    client.register_plugin(_stall_plugin(marker))
    killed: list[int] = []

    def kill_when_stalled() -> None:
        while not marker.exists() or not marker.read_text():
            time.sleep(0.05)
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    before = set(client.scheduler_info()["workers"])
    try:
        code, out = _verify(cli, backup_id, "--cluster", _address(local))
    finally:
        client.unregister_worker_plugin(_STALL)
    killer.join()
    assert killed, "no worker was stalled and killed"
    assert code == 0, out["findings"]
    assert _result(home, out) == _result(home, alone)
    _wait_workers(client, 2)  # the nanny restarts the killed worker
    assert set(client.scheduler_info()["workers"]) != before
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)


_STALL = "affidavit-test-stall"


def _stall_plugin(marker: Path) -> WorkerPlugin:
    class StallFirstSegment(WorkerPlugin):  # pickled by value: defined in a function
        name = _STALL

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish != "executing" or not str(key).startswith(_TASK):
                return
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return  # one stall per test run
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            while True:  # this worker's event loop stops here until the test kills it
                time.sleep(1)

    return StallFirstSegment()


# -- S3: ranged reads on the workers ---------------------------------------------------------


def test_an_s3_vault_is_read_by_ranged_gets_on_the_workers(
    cli: Any, home: Path, tmp_path: Path, s3_env: str
) -> None:
    """The S3 vault (the moto server) hands out streams: a local run reads it sequentially,
    a cluster run has each worker fetch only its segment (``read_range``, a ranged GET);
    the results are the same. The cluster is started here, after the AWS settings are
    in the environment its worker inherits."""
    import boto3

    bucket = f"affidavit-{os.urandom(6).hex()}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    assert cli("vault", "add", "v1", "--url", f"s3://{bucket}/backups").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    (folder / "customers.bson").write_bytes(_documents())
    (folder / "customers.metadata.json").write_text(json.dumps({"options": {}, "indexes": []}))
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    backup_id = json.loads(r.out)["backup_id"]
    code, alone = _verify(cli, backup_id)
    assert code == 0, alone["findings"]
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",
        ) as local,
        Client(local) as watcher,
        get_task_stream(watcher) as stream,
    ):
        code, out = _verify(cli, backup_id, "--cluster", _address(local))
    assert code == 0, out["findings"]
    assert _result(home, out) == _result(home, alone)
    assert len(_segment_tasks(stream)) >= 20
    _segments_without_fallback(home, backup_id)


def _segments_without_fallback(home: Path, backup_id: str) -> None:
    """The worker's function (:func:`check_segment`, here in this process: no cluster) over
    every segment of the data artifact, merged by :func:`read_segments`: every segment as
    signed, every document framed where it lies (a document cut by a segment's end completed
    from chunks fetched for it), the signed fingerprint. A cluster run whose workers fell
    back silently would still verify; this is what shows they did not need to."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
    manifest = BackupManifest.from_predicate(Statement.from_json(bytes(raw)).predicate)
    (art,) = [a for a in manifest.artifacts if a.path.endswith("customers.bson.age")]
    with open_app(load_settings(home=home)) as app:
        stored = backup_service.get_backup(app, backup_id)
        identity = unwrap_identity(keystore_for(app.settings), stored)
        with app.read() as uow:
            vault = uow.vaults.get(stored.vault)
    backend = vault_backend(vault)
    ran: list[int] = []

    def run(jobs: Sequence[SegmentJob]) -> Iterator[SegmentPart]:
        for job in jobs:
            ran.append(job.index)
            yield check_segment(job)

    with RangedFile(backend, art.path, art.size) as ranged:
        ranged.fetch(0, 70_000)  # the header and nonce (what the client reads)
        with ranged.as_file() as header:
            age = AgeFile.from_file(header, identity)
            got = read_segments(
                age,
                art.segments,
                size=art.size,
                plain_size=art.plain_size,
                workers=1,
                use=SegmentUse(frame=True),
                dataset="shop.customers",
                advance=lambda n: None,
                remote=Remote(vault=vault, path=art.path, run=run),
            )
    assert got.ok, (got.problems, got.table_issues, got.frame_errors)
    assert got.fingerprint == manifest.fingerprints["shop.customers"]
    assert ran == list(range(len(art.segments.segments))) and len(ran) >= 20
    assert any(row.first_record is None for row in art.segments.segments)  # documents span


def test_the_worker_function_needs_no_fallback_on_a_folder_vault(
    home: Path, ingested: dict[str, Any]
) -> None:
    _segments_without_fallback(home, ingested["backup_id"])


# -- TLS -------------------------------------------------------------------------------------


def _tls_files(folder: Path) -> dict[str, Path]:
    """A throwaway CA and two certificates it signs (one for the scheduler and workers, one
    for the client), with keys, as PEM files."""
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("affidavit test CA"))
        .issuer_name(name("affidavit test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("cluster", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"affidavit test {who}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files[f"{who}-cert"] = folder / f"{who}.pem"
        files[f"{who}-cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}-key"] = folder / f"{who}.key"
        files[f"{who}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files[f"{who}-key"].chmod(0o600)
    return files


def test_over_tls_and_a_plain_client_is_refused(
    cli: Any, home: Path, tmp_path: Path, ingested: dict[str, Any]
) -> None:
    tls = _tls_files(tmp_path)
    security = Security(
        tls_ca_file=str(tls["ca"]),
        tls_scheduler_cert=str(tls["cluster-cert"]),
        tls_scheduler_key=str(tls["cluster-key"]),
        tls_worker_cert=str(tls["cluster-cert"]),
        tls_worker_key=str(tls["cluster-key"]),
        tls_client_cert=str(tls["client-cert"]),
        tls_client_key=str(tls["client-key"]),
        require_encryption=True,
    )
    backup_id = ingested["backup_id"]
    code, alone = _verify(cli, backup_id)
    assert code == 0
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
        protocol="tls://",
        security=security,
    ) as local:
        address = _address(local)
        assert address.startswith("tls://")
        flags = [
            "--cluster-ca",
            str(tls["ca"]),
            "--cluster-cert",
            str(tls["client-cert"]),
            "--cluster-key",
            str(tls["client-key"]),
        ]
        with Client(local, security=security) as watcher, get_task_stream(watcher) as stream:
            code, out = _verify(cli, backup_id, "--cluster", address, *flags)
        assert code == 0, out["findings"]
        assert _result(home, out) == _result(home, alone)
        assert _segment_tasks(stream)
        listed = json.loads(cli("verify", "list", backup_id, "--json").out)["verifications"]
        plain = "tcp://" + address.removeprefix("tls://")
        r = cli("verify", backup_id, "--cluster", plain)
        assert r.code == 3 and "does not answer" in r.err and "Traceback" not in r.err
        r = cli("verify", backup_id, "--cluster", address)  # TLS without this client's files
        assert r.code == 2 and "TLS" in r.err and "Traceback" not in r.err
    after = json.loads(cli("verify", "list", backup_id, "--json").out)["verifications"]
    assert after == listed  # nothing recorded by the refused runs


# -- bad input -------------------------------------------------------------------------------


def _events(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (count,) = db.execute("select count(*) from ledger_entries").fetchone()
    return int(count)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_scheduler_that_does_not_answer_is_exit_3_and_nothing_is_recorded(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    before = _events(home)
    r = cli("verify", ingested["backup_id"], "--cluster", f"tcp://127.0.0.1:{_free_port()}")
    assert r.code == 3 and "Traceback" not in r.err
    assert "does not answer" in r.err and "hint" in r.err.lower()
    assert _events(home) == before
    assert json.loads(cli("verify", "list", "--json").out)["verifications"] == []


def test_a_scheduler_without_workers_is_exit_3_and_nothing_is_recorded(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    before = _events(home)
    with LocalCluster(
        n_workers=0,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
    ) as local:
        r = cli("verify", ingested["backup_id"], "--cluster", _address(local))
    assert r.code == 3 and "has no workers" in r.err and "Traceback" not in r.err
    assert _events(home) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8786",
        "127.0.0.1:8786",
        "inproc://scheduler",
        "tcp://127.0.0.1",
        "tcp://192.0.2.10:8786",  # the payload key would travel unencrypted
        "tls://scheduler.example:8786/path",
    ],
)
def test_a_cluster_address_that_is_not_tls_or_loopback_tcp_is_bad_input(
    cli: Any, home: Path, ingested: dict[str, Any], url: str
) -> None:
    before = _events(home)
    r = cli("verify", ingested["backup_id"], "--cluster", url)
    assert r.code == 2 and "--cluster" in r.err and "Traceback" not in r.err
    assert _events(home) == before
