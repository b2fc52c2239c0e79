"""Evidence package benchmark (issue 7): build and verify the package for a busy quarter.

    .venv/bin/python benchmarks/bench_evidence.py            # 10,000 events, 1,000 backups
    .venv/bin/python benchmarks/bench_evidence.py --quick    # 1,000 events, 100 backups

A fresh home in a temporary folder gets a quarter (90 days) of history written the way
production writes it: through the catalog repositories inside ``App.change()``, so every row
has its ledger event, every backup, verification and drill its signed in-toto attestation and
``*.completed`` event, and every batch its signed checkpoint. Sources and a folder vault are
registered with ``services.inventory``; a policy is proposed by one person and approved by
another; two exceptions are requested and approved (one later revoked); one offline policy
check records control results and findings; filler events then bring the ledger to the target
size. Backups, verifications and drills carry start/finish times spread over the quarter;
ledger event times are "now", and the package period (100 days ago to tomorrow) covers both.

Timed: ``build_evidence`` (median of 3 builds, each to a new file) and ``verify_evidence`` of
the packages built (median of 3). Every package must verify ok, else the run fails. Goals:
build under 30 s; verify no slower than build (ratio verify / build <= 1.0). When a goal is
missed (or with ``--profile``) one build and one verification run under cProfile and the top
entries are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from affidavit import __version__
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto.age import new_identity
from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    DRILL_PREDICATE_TYPE,
    VERIFICATION_PREDICATE_TYPE,
    Statement,
    Subject,
)
from affidavit.models.backup import (
    ArtifactRole,
    Backup,
    BackupArtifact,
    BackupDataset,
    BackupStatus,
)
from affidavit.models.checks import Drill, Finding, Verification
from affidavit.models.period import Period
from affidavit.models.uri import ConnectionUri
from affidavit.services import findings as findings_service
from affidavit.services import inventory as inv
from affidavit.services import policy as policy_service
from affidavit.services.backup import MANIFEST_TYPE, new_backup_id
from affidavit.services.context import App, Change
from affidavit.services.drill import new_drill_id
from affidavit.services.evidence import EvidenceBuild, build_evidence, verify_evidence
from affidavit.services.keys import keystore_for, wrap_identity
from affidavit.services.ledger import attest_and_record, ledger_vkey
from affidavit.services.setup import initialise

OPERATOR = "backup-bot@example.com"
PROPOSER = "alice@example.com"
APPROVER = "bob@example.com"
QUARTER_DAYS = 90
BUILD_GOAL_S = 30.0
RATIO_GOAL = 1.0
BATCH_BACKUPS = 50  # backups per App.change() (each about 7 events)
BATCH_CHECKS = 100  # verifications or drills per App.change()
BATCH_FILLER = 500  # filler events per App.change()

POLICY = """\
# benchmark policy (shape of the demo's)
[policy]
name = "Bench Corp backup policy"
owner = "platform@example.com"
checkpoint_publish_every_days = 1

[owners]
"drill.rto" = "sre@example.com"

[defaults]
rpo_hours = 24
retention_min_days = 30
retention_max_days = 400
encryption_required = true
immutability_required = false
cross_region_copy_required = false
verify_every_days = 7
drill_every_days = 30
rto_seconds = 600
key_rotation_days = 90

[levels.restricted]
rpo_hours = 4
verify_every_days = 1
immutability_required = true
"""

# name, engine, uri, classification, datasets, region, owner
SOURCES = (
    ("orders-db", EngineName.MONGODB, "mongodb://orders-db.internal:27017/",
     Classification.CONFIDENTIAL, ("shop.orders", "shop.customers"), "eu-west-1",
     "orders-team@example.com"),
    ("users-db", EngineName.MONGODB, "mongodb://users-db.internal:27017/",
     Classification.RESTRICTED, ("accounts.users", "accounts.sessions"), "eu-west-1",
     "identity@example.com"),
    ("analytics", EngineName.MONGODB, "mongodb://analytics.internal:27017/",
     Classification.INTERNAL, ("events.clicks", "events.views"), "us-east-1",
     "data@example.com"),
    ("session-cache", EngineName.REDIS, "redis://cache.internal:6379/0",
     Classification.INTERNAL, ("db0", "db1"), "eu-west-1", "sre@example.com"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Made:
    """What the benchmark needs to remember of a synthesized backup."""

    id: str
    source: str
    finished_at: datetime
    manifest_sha256: str
    artifacts: tuple[BackupArtifact, ...]
    datasets: tuple[BackupDataset, ...]


@dataclass(slots=True)
class History:
    """The synthesized home and what it holds."""

    settings: Settings
    period: Period
    backups: int
    verifications: int
    drills: int
    events: int
    setup_seconds: float


def _as(settings: Settings, actor: str) -> Settings:
    return settings.model_copy(update={"actor": actor})


def _hex(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def _ledger_size(app: App) -> int:
    with app.read() as uow:
        last, _ = uow.ledger.head()
    return 0 if last is None else last + 1


# -- backups ------------------------------------------------------------------------------------


def _backup(
    change: Change,
    rng: random.Random,
    backup_id: str,
    started: datetime,
    vault: str,
    key: tuple[Any, str],
) -> _Made:
    """One complete backup, written as ``services.backup`` writes it: ``backups.add``
    (running) + ``backup.started``, each artifact + ``backup.artifact_stored``, the signed
    manifest (``attestation.created``) + ``backups.complete`` + ``backup.completed``, and the
    clear-text manifest copy as a last artifact."""
    name, engine, uri, level, names, region, _ = rng.choice(SOURCES)
    wrapped, recipient = key
    prefix = f"{name}/{backup_id}"
    fmt = "mongodump" if engine is EngineName.MONGODB else "rdb"
    retain_until = started + timedelta(days=35)
    finished = started + timedelta(seconds=rng.uniform(30, 1800))
    uow = change.uow
    uow.backups.add(
        Backup(
            id=backup_id, source=name, vault=vault, kind="run", format=fmt,
            status=BackupStatus.RUNNING, started_at=started, finished_at=None,
            retain_until=retain_until, recipient=recipient, wrapped_identity=wrapped.ciphertext,
            kek_id=wrapped.kek_id, kek_version=wrapped.version,
        )
    )  # fmt: skip
    change.record(
        "backup.started",
        f"backup:{backup_id}",
        {
            "source": name, "vault": vault, "kind": "run", "format": fmt,
            "retain_until": retain_until.isoformat(), "recipient": recipient,
            "kek": {"id": wrapped.kek_id, "version": wrapped.version},
        },
    )  # fmt: skip
    chosen = names[: rng.choice((1, 2))]
    datasets = tuple(
        BackupDataset(
            name=ds,
            records=(count := rng.randrange(1_000, 5_000_000)),
            fingerprint=f"afp1:exact:b12:n{count}:{_hex(rng)}",
            classification=level.value,
        )
        for ds in chosen
    )
    data = "dump.rdb" if fmt == "rdb" else "dump.archive"
    planned: list[tuple[str, ArtifactRole, str | None]] = [(data, ArtifactRole.DATA, None)]
    planned += [(f"index/{d.name}.afpidx", ArtifactRole.INDEX, d.name) for d in datasets]
    if len(planned) < rng.choice((2, 3)):
        planned.append(("metadata.json", ArtifactRole.METADATA, None))
    artifacts = []
    for file, role, ds_name in planned:
        plain = rng.randrange(10_000, 2_000_000_000)
        artifact = BackupArtifact(
            path=f"{prefix}/{file}.age", role=role, size=plain + 200, sha256=_hex(rng),
            plain_size=plain, plain_sha256=_hex(rng), dataset=ds_name,
        )  # fmt: skip
        uow.backups.add_artifact(backup_id, artifact)
        change.record(
            "backup.artifact_stored",
            f"backup:{backup_id}",
            {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size},
        )
        artifacts.append(artifact)
    manifest_obj = {
        "type": MANIFEST_TYPE,
        "backup_id": backup_id,
        "kind": "run",
        "format": fmt,
        "source": {
            "name": name, "engine": engine.value,
            "uri": ConnectionUri.parse(engine, uri).redacted, "server_version": "7.0.12",
        },
        "tool": {"name": "affidavit", "version": __version__},
        "started_at": started.isoformat(),
        "consistency": {"mode": "snapshot"},
        "vault": {"name": vault, "url": "file:///vault", "region": region},
        "retain_until": retain_until.isoformat(),
        "encryption": {
            "format": "age", "recipient": recipient, "kek_id": wrapped.kek_id,
            "kek_version": wrapped.version,
        },
        "artifacts": [
            {
                "path": a.path, "role": a.role.value, "dataset": a.dataset, "size": a.size,
                "sha256": a.sha256, "plain_size": a.plain_size, "plain_sha256": a.plain_sha256,
            }
            for a in sorted(artifacts, key=lambda a: a.path)
        ],
        "datasets": [
            {"name": d.name, "records": d.records, "fingerprint": d.fingerprint,
             "classification": d.classification}
            for d in datasets
        ],
    }  # fmt: skip
    statement = Statement(
        subjects=tuple(Subject(name=a.path, sha256=a.sha256) for a in artifacts),
        predicate_type=BACKUP_PREDICATE_TYPE,
        predicate=manifest_obj,
    )
    manifest = statement.to_json()
    envelope_json = attest_and_record(change, statement).to_json()
    uow.backups.complete(
        backup_id,
        finished_at=finished,
        consistency={"mode": "snapshot"},
        manifest=manifest,
        manifest_sha256=sha256_hex(manifest),
        envelope=envelope_json,
        datasets=datasets,
    )
    change.record(
        "backup.completed",
        f"backup:{backup_id}",
        {
            "manifest_sha256": sha256_hex(manifest),
            "artifacts": len(artifacts),
            "datasets": {d.name: d.fingerprint for d in datasets},
        },
    )
    copy = envelope_json.encode()
    manifest_copy = BackupArtifact(
        path=f"{prefix}/manifest.dsse.json",
        role=ArtifactRole.MANIFEST,
        size=len(copy),
        sha256=sha256_hex(copy),
    )
    uow.backups.add_artifact(backup_id, manifest_copy)
    change.record(
        "backup.artifact_stored",
        f"backup:{backup_id}",
        {"path": manifest_copy.path, "sha256": manifest_copy.sha256, "size": manifest_copy.size},
    )
    return _Made(
        id=backup_id, source=name, finished_at=finished, manifest_sha256=sha256_hex(manifest),
        artifacts=(*artifacts, manifest_copy), datasets=datasets,
    )  # fmt: skip


def _verification(change: Change, rng: random.Random, b: _Made, started: datetime) -> None:
    """One verification, as ``services.verify.recording.record`` writes it."""
    finished = started + timedelta(seconds=rng.uniform(5, 900))
    kind = rng.choice(("full", "sample", "sample", "against-source"))
    verification_id = f"vf-{started:%Y%m%dT%H%M%SZ}-{rng.randbytes(3).hex()}"
    findings: tuple[Finding, ...] = ()
    if rng.random() < 0.03:
        bad = rng.choice(b.artifacts)
        findings = (
            Finding(
                code="artifact-hash-mismatch",
                message=f"{bad.path}: the stored bytes do not match the signed SHA-256",
                subject=bad.path,
                details={"expected": bad.sha256, "actual": _hex(rng)},
            ),
        )
    ok = not findings
    sample = 10.0 if kind == "sample" else None
    seed = rng.randbytes(8).hex() if sample else None
    coverage = {"artifacts_checked": len(b.artifacts), "datasets_checked": len(b.datasets)}
    statement = Statement(
        subjects=tuple(Subject(name=a.path, sha256=a.sha256) for a in b.artifacts),
        predicate_type=VERIFICATION_PREDICATE_TYPE,
        predicate={
            "verification_id": verification_id, "backup_id": b.id,
            "manifest_sha256": b.manifest_sha256, "kind": kind, "ok": ok,
            "started_at": started.isoformat(), "finished_at": finished.isoformat(),
            "sample": None if sample is None else {"percent": sample, "seed": seed},
            "coverage": coverage,
            "against_source": {"source": b.source, "datasets": {}}
            if kind == "against-source" else None,  # as verify writes it: a summary or null
            "findings": [f.to_json() for f in findings],
            "tool": {"name": "affidavit", "version": __version__},
        },
    )  # fmt: skip
    envelope = attest_and_record(change, statement)
    change.uow.checks.add_verification(
        Verification(
            id=verification_id, backup_id=b.id, kind=kind, started_at=started,
            finished_at=finished, ok=ok, findings=findings, sample_percent=sample,
            sample_seed=seed, coverage=coverage, envelope=envelope.to_json(),
        )
    )  # fmt: skip
    change.record(
        "verification.completed",
        f"backup:{b.id}",
        {
            "verification_id": verification_id, "kind": kind, "ok": ok,
            "findings": sorted({f.code for f in findings}), "sample_seed": seed,
            "artifacts_checked": coverage["artifacts_checked"],
            "payload_sha256": sha256_hex(envelope.payload),
        },
    )  # fmt: skip


def _drill(change: Change, rng: random.Random, b: _Made, started: datetime) -> None:
    """One restore drill, as ``services.drill._record`` writes it."""
    restore = round(rng.uniform(20, 700), 6)
    phases = {
        "fetch": round(rng.uniform(1, 60), 6),
        "restore": restore,
        "fingerprint": round(rng.uniform(1, 120), 6),
    }
    total = round(sum(phases.values()), 6)
    finished = started + timedelta(seconds=total)
    rto = 600.0
    findings: tuple[Finding, ...] = ()
    if total > rto:
        findings = (
            Finding(
                code="rto-exceeded",
                message=f"the drill took {total:.3f}s (restore {restore:.3f}s), more than the "
                f"RTO of {rto:g}s",
                subject=b.id,
                details={"total_seconds": total, "restore_seconds": restore, "rto_seconds": rto},
            ),
        )
    ok = not findings
    drill_id = new_drill_id(started)
    target = (
        "mongodb://scratch.internal:27018/" if b.source != "session-cache" else "redis://scratch"
    )
    datasets = [
        {"name": d.name, "expected": d.fingerprint, "restored": d.fingerprint, "match": True}
        for d in b.datasets
    ]
    probes = ({"name": "count", "ok": True},)
    scratch = {"kind": "isolated", "target": target}
    statement = Statement(
        subjects=tuple(
            Subject(name=a.path, sha256=a.sha256)
            for a in b.artifacts
            if a.role in (ArtifactRole.DATA, ArtifactRole.METADATA)
        ),
        predicate_type=DRILL_PREDICATE_TYPE,
        predicate={
            "drill_id": drill_id, "backup_id": b.id, "manifest_sha256": b.manifest_sha256,
            "engine": "redis" if b.source == "session-cache" else "mongodb", "target": target,
            "forced": False, "scratch": scratch, "started_at": started.isoformat(),
            "finished_at": finished.isoformat(), "ok": ok, "rto_seconds": rto,
            "restore_seconds": restore, "total_seconds": total, "phases": phases,
            "fingerprint_match": True, "datasets": datasets, "probes": list(probes),
            "findings": [f.to_json() for f in findings],
            "tool": {"name": "affidavit", "version": __version__},
        },
    )  # fmt: skip
    envelope = attest_and_record(change, statement).to_json()
    change.uow.checks.add_drill(
        Drill(
            id=drill_id, backup_id=b.id, target=target, started_at=started, finished_at=finished,
            ok=ok, rto_seconds=rto, restore_seconds=restore, fingerprint_match=True,
            phases=phases, probes=probes, findings=findings, envelope=envelope,
        )
    )  # fmt: skip
    change.record(
        "drill.completed",
        f"backup:{b.id}",
        {
            "drill_id": drill_id, "ok": ok, "target": target, "forced": False,
            "scratch": scratch, "rto_seconds": rto, "restore_seconds": restore,
            "total_seconds": total, "phases": phases, "fingerprint_match": True,
            "datasets": {d["name"]: d["restored"] for d in datasets},
            "findings": sorted({f.code for f in findings}),
        },
    )  # fmt: skip


_FILLER = (
    "inventory.taken",
    "verification.could_not_run",
    "backup.deletion_refused",
    "alert.raised",
    "ledger.exported",
)


def _filler(change: Change, rng: random.Random, made: list[_Made], i: int, origin: str) -> None:
    """One of the everyday events that cite no record of the package (the bulk of a busy
    ledger), with the subject and details its service records."""
    action = _FILLER[i % len(_FILLER)]
    b = rng.choice(made)
    subject = f"backup:{b.id}"
    details: dict[str, Any]
    if action == "inventory.taken":
        subject = "inventory"
        details = {
            "sources": {
                s[0]: {"reachable": True, "version": "7.0.12", "datasets": 2,
                       "records": rng.randrange(10**6, 10**8), "error": None}
                for s in SOURCES
            }
        }  # fmt: skip
    elif action == "verification.could_not_run":
        details = {"kind": "sample", "error": "the vault did not answer within 10 s"}
    elif action == "backup.deletion_refused":
        details = {
            "reason": "storage clean-up",
            "refused_because": [f"it is retained until {b.finished_at + timedelta(days=35)}"],
        }
    elif action == "alert.raised":  # with its catalog row, as services.alerts writes it
        at = datetime.now(UTC)
        summary = f"backup {b.id} has no verification in the last 7 days"
        payload = {
            "kind": "verification.overdue", "subject": subject, "summary": summary,
            "details": {"backup": b.id}, "at": at.isoformat(),
        }  # fmt: skip
        alert_id = change.uow.checks.add_alert(
            at=at, kind="verification.overdue", subject=subject, payload=payload
        )
        details = {
            "alert_id": alert_id, "kind": "verification.overdue", "summary": summary,
            "details": payload["details"],
        }  # fmt: skip
    else:
        subject = f"ledger:{origin}"
        details = {
            "file": f"/srv/exports/ledger-{i}.jsonl", "sha256": _hex(rng), "entries": i,
            "checkpoints": i // 7,
        }  # fmt: skip
    change.record(action, subject, details)


def synthesize(
    root: Path, *, events: int, backups: int, verifications: int, drills: int, seed: int = 7
) -> History:
    """A fresh home holding a quarter of history (see the module docstring)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    settings = load_settings(home=root / "home", environ={"AFFIDAVIT_ACTOR": OPERATOR})
    initialise(settings)
    now = datetime.now(UTC)
    quarter_start = now - timedelta(days=QUARTER_DAYS)
    (root / "vault").mkdir()
    app = App(settings)
    try:
        for name, engine, uri, level, _, region, owner in SOURCES:
            inv.add_source(
                app, name=name, engine=engine, uri=uri, secret=None, classification=level,
                region=region, owner=owner,
            )  # fmt: skip
        vault = inv.add_vault(app, name="vault-eu", url=f"file://{root / 'vault'}", region="eu")
        policy_file = root / "policy.toml"
        policy_file.write_text(POLICY, encoding="utf-8")
    finally:
        app.close()

    # policy and exceptions: proposed/requested by one person, approved by another
    alice, bob = App(_as(settings, PROPOSER)), App(_as(settings, APPROVER))
    try:
        version = policy_service.propose_policy(alice, policy_file)
        exceptions = [
            findings_service.request_exception(
                alice, "dataset.classified", "dataset:session-cache/db0",
                reason="cache of public catalogue pages; classified in the Q3 data review",
                expires=now + timedelta(days=90),
            ),
            findings_service.request_exception(
                alice, "backup.immutable", "*",
                reason="restricted backups move to the S3 Object Lock vault (CHG-1042)",
                expires=now + timedelta(days=30),
            ),
        ]  # fmt: skip
        policy_service.approve_policy(bob, version.version)
        for x in exceptions:
            findings_service.approve_exception(bob, x.id)
        findings_service.revoke_exception(
            bob, exceptions[1].id, reason="Object Lock vault is live; exception no longer needed"
        )
    finally:
        alice.close()
        bob.close()

    app = App(settings)
    try:
        keystore = keystore_for(settings)
        step = timedelta(days=QUARTER_DAYS) / backups
        made: list[_Made] = []
        for lo in range(0, backups, BATCH_BACKUPS):
            batch = []
            for i in range(lo, min(lo + BATCH_BACKUPS, backups)):
                started = quarter_start + step * i + timedelta(seconds=rng.uniform(0, 600))
                backup_id = new_backup_id(started)
                identity, recipient = new_identity()  # wrapped under the KEK, as in production
                key = (wrap_identity(keystore, backup_id, identity), recipient)
                batch.append((backup_id, started, key))
            with app.change() as change:
                for backup_id, started, key in batch:
                    made.append(_backup(change, rng, backup_id, started, vault.name, key))

        def check_time(b: _Made) -> datetime:
            latest = min(now, b.finished_at + timedelta(days=7))
            return b.finished_at + (latest - b.finished_at) * rng.random()

        for count, write in ((verifications, _verification), (drills, _drill)):
            for lo in range(0, count, BATCH_CHECKS):
                with app.change() as change:
                    for _ in range(lo, min(lo + BATCH_CHECKS, count)):
                        b = rng.choice(made)
                        write(change, rng, b, check_time(b))

        policy_service.check_policy(app, live=False)  # control results + findings
        ledger_id = app.ledger_identity()
        assert ledger_id is not None  # initialise() created it
        origin = ledger_id.origin
        i = 0
        while (size := _ledger_size(app)) < events:
            with app.change() as change:
                for _ in range(min(BATCH_FILLER, events - size)):
                    _filler(change, rng, made, i, origin)
                    i += 1
        size = _ledger_size(app)
    finally:
        app.close()
    return History(
        settings=settings,
        period=Period(now - timedelta(days=QUARTER_DAYS + 10), now + timedelta(days=1)),
        backups=len(made),
        verifications=verifications,
        drills=drills,
        events=size,
        setup_seconds=time.perf_counter() - start,
    )


# -- timing -------------------------------------------------------------------------------------


def _profile(label: str, fn: Any, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"--- cProfile: {label} ---\n{out.getvalue()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--events", type=int, default=None, help="ledger size to reach")
    parser.add_argument("--backups", type=int, default=None, help="complete backups")
    parser.add_argument("--runs", type=int, default=3, help="builds and verifications timed")
    parser.add_argument("--profile", action="store_true", help="always print a cProfile")
    parser.add_argument("--top", type=int, default=25, help="profile entries shown")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes")
    args = parser.parse_args()
    events = args.events or (1_000 if args.quick else 10_000)
    backups = args.backups or (100 if args.quick else 1_000)
    verifications, drills = max(1, backups * 3 // 10), max(1, backups // 10)
    root = Path(tempfile.mkdtemp(prefix="bench-evidence-", dir=args.dir))
    rows: list[tuple[str, str, str, str]] = []
    profiles: list[str] = []
    failed = False
    try:
        history = synthesize(
            root, events=events, backups=backups, verifications=verifications, drills=drills
        )
        settings = history.settings
        vkey = ledger_vkey(settings)
        rows.append(
            (
                f"setup: {history.backups:,} backups, {history.verifications:,} verifications, "
                f"{history.drills:,} drills, {history.events:,} events",
                f"{history.setup_seconds:.1f} s",
                "-",
                "-",
            )
        )
        builds: list[EvidenceBuild] = []
        build_times: list[float] = []
        app = App(settings)
        try:
            for run in range(args.runs):
                out = root / f"evidence-{run}.tar.gz"
                start = time.perf_counter()
                builds.append(build_evidence(app, period=history.period, out=out))
                build_times.append(time.perf_counter() - start)
        finally:
            app.close()
        verify_times: list[float] = []
        for built in builds:
            start = time.perf_counter()
            report = verify_evidence(built.path, vkey)
            verify_times.append(time.perf_counter() - start)
            if not report.ok:
                failed = True
                print(f"FAIL: {built.path.name} does not verify:")
                for f in report.findings[:10]:
                    print(f"  {f.code}: {f.subject}: {f.message}")
        build_s = statistics.median(build_times)
        verify_s = statistics.median(verify_times)
        ratio = verify_s / build_s
        first = builds[0]
        rows.append(
            (
                f"build_evidence, median of {args.runs}",
                f"{build_s:.2f} s",
                f"< {BUILD_GOAL_S:g} s",
                "met" if build_s < BUILD_GOAL_S else "MISSED",
            )
        )
        rows.append(
            (
                f"verify_evidence, median of {args.runs}",
                f"{verify_s:.2f} s",
                "-",
                "ok" if not failed else "FAILED",
            )
        )
        rows.append(
            (
                "ratio verify / build",
                f"{ratio:.3f}",
                f"<= {RATIO_GOAL:g}",
                "met" if ratio <= RATIO_GOAL else "MISSED",
            )
        )
        rows.append(
            (
                "build / verify, each run",
                " ".join(f"{t:.2f}" for t in build_times)
                + " / "
                + " ".join(f"{t:.2f}" for t in verify_times)
                + " s",
                "-",
                "-",
            )
        )
        rows.append(("package size", f"{first.path.stat().st_size / 1e6:.2f} MB", "-", "-"))
        rows.append(("events cited (with inclusion proofs)", f"{first.events:,}", "-", "-"))
        rows.append(
            (
                "records in package: backups / verifications / drills / findings",
                f"{first.backups:,} / {first.verifications:,} / {first.drills:,} / "
                f"{first.findings:,}",
                "-",
                "-",
            )
        )
        rows.append(("files in package", f"{first.files:,}", "-", "-"))
        if args.profile or build_s >= BUILD_GOAL_S or ratio > RATIO_GOAL:
            app = App(settings)
            try:
                profiles.append(
                    _profile(
                        "build_evidence",
                        lambda: build_evidence(
                            app, period=history.period, out=root / "evidence-profiled.tar.gz"
                        ),
                        args.top,
                    )
                )
            finally:
                app.close()
            profiles.append(
                _profile("verify_evidence", lambda: verify_evidence(first.path, vkey), args.top)
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {platform.platform()}, "
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "figure", "goal", "status")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for text in profiles:
        print(f"\n{text}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
