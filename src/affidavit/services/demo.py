"""``affidavit demo``: the whole story on throwaway servers, with embedded defaults.

So far: start a SecantusDB (MongoDB wire protocol) and a redis-server on random loopback
ports, seed them with a realistic sample, register both as sources and a folder vault in a
fresh home, take the inventory, fingerprint every dataset live (exact profile, with index
files), back both sources up into the folder vault (encrypted, locked, signed), verify each
backup and restore it in a timed drill, show a tampered artifact being caught, verify the
ledger that recorded all of it, and then certify: a policy proposed by one person and approved
by another, a published checkpoint, an approved configuration baseline, a policy check whose
findings persist (one acknowledged, one excepted by a second person), and a signed evidence
package built for the day and verified offline with nothing but the ledger's public key.

With ``--serve`` (:func:`seed_demo_people`), the home then gets four demo-only people (an
administrator, an operator, an approver and an auditor), each with a random password and an
enrolled TOTP secret, for the server the CLI starts over it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from affidavit.config import Settings
from affidavit.constants import Classification, EngineName
from affidavit.crypto import totp
from affidavit.crypto.tokens import new_recovery_codes
from affidavit.errors import InputError
from affidavit.evidence.verify import EvidenceReport
from affidavit.ledger.verify import VerifyReport
from affidavit.models.backup import Backup
from affidavit.models.checks import Drill, Verification
from affidavit.models.ledger import ClientInfo
from affidavit.models.period import Period
from affidavit.models.permissions import Role
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import audit as audit_service
from affidavit.services import backup as backup_service
from affidavit.services import baseline as baseline_service
from affidavit.services import drill as drill_service
from affidavit.services import findings as findings_service
from affidavit.services import fingerprint as fps
from affidavit.services import identity as identity_service
from affidavit.services import inventory as inv
from affidavit.services import ledger as ledger_service
from affidavit.services import policy as policy_service
from affidavit.services import principals
from affidavit.services import roles as roles_service
from affidavit.services import verify as verify_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import App, open_app
from affidavit.services.evidence import (
    EvidenceBuild,
    build_evidence,
    read_evidence_file,
    verify_evidence,
)
from affidavit.services.policy import CheckOutcome
from affidavit.services.setup import initialise

DEMO_SEED = 20261128
PROPOSER = "alice@example.com"
APPROVER = "bob@example.com"

DEMO_POLICY = """\
# The demo's backup policy (see docs/controls.md for every key).
[policy]
name = "Demo Corp backup policy"
owner = "platform@example.com"
checkpoint_publish_every_days = 1

[owners]
"drill.rto" = "sre@example.com"
"dataset.classified" = "data-protection@example.com"

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

[levels.confidential]
rpo_hours = 12

[levels.restricted]
rpo_hours = 4
verify_every_days = 1
immutability_required = true
cross_region_copy_required = true
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoServers:
    """The running demo servers."""

    mongodb_uri: str
    redis_uri: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What the demo built."""

    home: Path
    servers: DemoServers
    seeded: dict[str, int]
    inventory: inv.Inventory
    fingerprints: dict[str, list[fps.DatasetFingerprint]]
    backups: list[Backup]
    verifications: list[Verification]
    drills: list[Drill]
    tampered: Verification
    ledger: VerifyReport
    check: CheckOutcome
    evidence: EvidenceBuild
    evidence_report: EvidenceReport
    report_html: Path
    vkey: str


def _tampered_backup(app: App, vault_root: Path, rep: Reporter) -> Verification:
    """Back up the Redis sample once more, flip one byte of its RDB artifact in the folder
    vault (as an attacker with write access to the storage would), and verify it: the
    verification must fail, naming the artifact."""
    victim = backup_service.run_backup(app, "session-cache", reporter=rep)
    data = next(a for a in victim.artifacts if a.path.endswith("dump.rdb.age"))
    path = vault_root / data.path
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    path.chmod(0o444)
    return verify_service.verify_backup(app, victim.id, reporter=rep)


@contextmanager
def demo_servers(reporter: Reporter) -> Iterator[DemoServers]:
    """Start both demo servers; stop them (by PID) on exit."""
    with ExitStack() as stack:
        reporter.stage("starting SecantusDB (MongoDB wire protocol) on 127.0.0.1")
        mongo = stack.enter_context(SecantusScratch())
        reporter.stage("starting redis-server on 127.0.0.1")
        redis = stack.enter_context(RedisScratch())
        yield DemoServers(mongodb_uri=mongo.uri, redis_uri=redis.uri)


def run_demo(
    settings: Settings, *, scale: int = 200, reporter: Reporter | None = None
) -> DemoResult:
    """Run the demo in ``settings.home``, which must not hold a catalog yet."""
    rep = reporter or SilentReporter()
    if (settings.home / "catalog.sqlite").exists():
        raise InputError(
            f"{settings.home} already holds an affidavit catalog",
            hint="the demo needs a fresh home; omit --home to use a throwaway one",
        )
    with demo_servers(rep) as servers:
        seeded: dict[str, int] = {}
        for engine, uri in (
            (EngineName.MONGODB, servers.mongodb_uri),
            (EngineName.REDIS, servers.redis_uri),
        ):
            rep.stage(f"seeding the {engine} sample")
            parsed = ConnectionUri.parse(engine, uri)
            with engine_for_uri(
                engine, parsed, password=None, timeout=settings.connect_timeout
            ) as db:
                seeded.update(
                    {
                        f"{engine}:{k}": v
                        for k, v in db.seed_sample(seed=DEMO_SEED, scale=scale).items()
                    }
                )
        rep.stage(f"initialising {settings.home}")
        initialise(settings)
        with open_app(settings) as app:
            inv.add_source(
                app,
                name="orders-db",
                engine=EngineName.MONGODB,
                uri=servers.mongodb_uri,
                secret=None,
                classification=Classification.CONFIDENTIAL,
                region="eu-west-1",
                owner="platform@example.com",
            )
            inv.add_source(
                app,
                name="session-cache",
                engine=EngineName.REDIS,
                uri=servers.redis_uri,
                secret=None,
                classification=Classification.INTERNAL,
                region="eu-west-1",
                owner="sre@example.com",
            )
            inv.add_vault(
                app,
                name="local-vault",
                url=f"file://{settings.home / 'vault'}",
                region="eu-west-1",
                immutable_days=35,
            )
            rep.stage("taking the inventory")
            inventory = inv.take_inventory(app)
            inv.classify_dataset(
                app,
                "orders-db/shop.customers",
                Classification.RESTRICTED,
                reason="holds personal data (names, e-mail, phone)",
            )
            inventory = inv.take_inventory(app)
            fingerprints = {}
            for source in ("orders-db", "session-cache"):
                fingerprints[source] = fps.fingerprint_source(
                    app,
                    source,
                    dataset=None,
                    profile="exact",
                    out=settings.home / "fingerprints" / source,
                    reporter=rep,
                )
            backups = [
                backup_service.run_backup(app, source, reporter=rep)
                for source in ("orders-db", "session-cache")
            ]
            verifications = [verify_service.verify_backup(app, b.id, reporter=rep) for b in backups]
            drills = [
                drill_service.run_drill(app, b.id, rto_seconds=600, reporter=rep) for b in backups
            ]
            rep.stage("tampering with one artifact of an extra backup, then verifying it")
            tampered = _tampered_backup(app, settings.home / "vault", rep)
            rep.stage("verifying the ledger")
            report = ledger_service.verify_catalog(app)
        cert = _certify(settings, rep)
    return DemoResult(
        home=settings.home,
        servers=servers,
        seeded=seeded,
        inventory=inventory,
        fingerprints=fingerprints,
        backups=backups,
        verifications=verifications,
        drills=drills,
        tampered=tampered,
        ledger=report,
        check=cert.check,
        evidence=cert.evidence,
        evidence_report=cert.verified,
        report_html=cert.report_html,
        vkey=cert.vkey,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Certification:
    check: CheckOutcome
    evidence: EvidenceBuild
    verified: EvidenceReport
    report_html: Path
    vkey: str


def _as(settings: Settings, actor: str) -> Settings:
    return settings.model_copy(update={"actor": actor})


def _certify(settings: Settings, rep: Reporter) -> _Certification:
    """Policy (two people), witness, baseline, policy check, findings, evidence."""
    home = settings.home
    policy_file = home / "policy.toml"
    policy_file.write_text(DEMO_POLICY, encoding="utf-8")
    rep.stage(f"policy proposed by {PROPOSER}, approved by {APPROVER}")
    with open_app(_as(settings, PROPOSER)) as app:
        version = policy_service.propose_policy(app, policy_file)
        inv.classify_dataset(
            app, "orders-db/shop.orders", Classification.CONFIDENTIAL,
            reason="order history: business confidential",
        )  # fmt: skip
        exc = findings_service.request_exception(
            app, "dataset.classified", "dataset:session-cache/db0",
            reason="cache of public catalogue pages; classified in the Q1 data review",
            expires=datetime.now(UTC) + timedelta(days=90),
        )  # fmt: skip
    with open_app(_as(settings, APPROVER)) as app:
        policy_service.approve_policy(app, version.version)
        findings_service.approve_exception(app, exc.id)
        rep.stage("publishing a ledger checkpoint to the witness folder")
        ledger_service.create_checkpoint(app, publish=str(home / "witness"))
        rep.stage("approving the configuration baseline")
        baseline_service.approve_baseline(app, note="demo servers as deployed")
        rep.stage("checking every control of the policy")
        check = policy_service.check_policy(app)
        for finding in check.opened:
            if finding.control == "backup.immutable":
                findings_service.acknowledge_finding(
                    app, finding.id,
                    note="restricted backups move to the S3 Object Lock vault (CHG-1042)",
                )  # fmt: skip
        rep.stage("building the evidence package for the day")
        now = datetime.now(UTC)
        period = Period(now - timedelta(days=1), now + timedelta(minutes=5))
        out = home / f"evidence-{now:%Y%m%d}.tar.gz"
        built = build_evidence(app, period=period, out=out, reporter=rep)
    vkey = ledger_service.ledger_vkey(settings)
    rep.stage("verifying the evidence package offline with the public key only")
    verified = verify_evidence(out, vkey)
    report_html = home / "evidence-report.html"
    report_html.write_bytes(read_evidence_file(out, "report/index.html"))
    return _Certification(
        check=check, evidence=built, verified=verified, report_html=report_html, vkey=vkey
    )


# -- the demo's people (``affidavit demo --serve``) -------------------------------------------

DEMO_PEOPLE: Final = (
    ("admin", Role.ADMIN),
    ("operator", Role.OPERATOR),
    ("approver", Role.APPROVER),
    ("auditor", Role.AUDITOR),
)
_SEEDING: Final = ClientInfo(address="127.0.0.1", agent="affidavit demo")
_SEED_AGE: Final = timedelta(minutes=10)
DEMO_ENGAGEMENT: Final = timedelta(days=30)
"""The demo auditor's engagement: the 30 days before the demo (and its day), open 30 days."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPerson:
    """One of the demo's accounts and its demo-only credentials (printed by the demo: never
    use them anywhere else)."""

    name: str
    role: Role
    password: str
    totp_secret: str
    otpauth_uri: str

    def code(self, at: datetime | None = None) -> str:
        """The TOTP code of the moment ``at`` (now by default)."""
        return totp.code_at(self.totp_secret, at or datetime.now(UTC))


def _demo_password() -> str:
    """A random demo-only password: 16 base32 characters (80 bits), grouped by four."""
    return new_recovery_codes(1)[0]


def seed_demo_people(settings: Settings, *, now: datetime | None = None) -> list[DemoPerson]:
    """Create :data:`DEMO_PEOPLE` in the demo's home through the identity and role services,
    as a person would: the administrator bootstrapped by the local operator, the others
    created and granted their role by that administrator, each enrolling TOTP. Every step is
    a ledger event. It all happens ten minutes before ``now`` (the TOTP time steps used here
    are older than any the server will see, so no code is refused as replayed)."""
    at = (now or datetime.now(UTC)) - _SEED_AGE
    passwords = {name: _demo_password() for name, _ in DEMO_PEOPLE}
    people: list[DemoPerson] = []
    with open_app(settings) as app:

        def enrol(name: str, role: Role, when: datetime) -> str:
            first = identity_service.login(app, name, passwords[name], client=_SEEDING, now=when)
            enrolment = identity_service.begin_totp(app, first.principal, name, now=when)
            identity_service.confirm_totp(
                app, first.principal, name, totp.code_at(enrolment.secret, when), now=when
            )
            identity_service.logout(app, first.principal, now=when)
            people.append(
                DemoPerson(
                    name=name,
                    role=role,
                    password=passwords[name],
                    totp_secret=enrolment.secret,
                    otpauth_uri=enrolment.uri,
                )
            )
            return enrolment.secret

        (admin_name, _), *others = DEMO_PEOPLE
        identity_service.bootstrap_admin(
            app, principals.local_principal(app), admin_name, passwords[admin_name], now=at
        )
        secret = enrol(admin_name, Role.ADMIN, at)
        later = at + timedelta(seconds=totp.STEP_SECONDS)
        admin = identity_service.login(
            app,
            admin_name,
            passwords[admin_name],
            totp.code_at(secret, later),
            client=_SEEDING,
            now=later,
        ).principal
        for name, role in others:
            identity_service.create_account(app, admin, name, password=passwords[name], now=later)
            roles_service.grant_role(app, admin, name, role, now=later)
            enrol(name, role, later)
        # the auditor's engagement: the demo's month, so that its portal shows the demo's
        # backups, verifications and drills (an auditor sees nothing outside an engagement)
        audit_service.open_engagement(
            app,
            admin,
            start=(later - DEMO_ENGAGEMENT).date().isoformat(),
            end=(later + timedelta(days=1)).date().isoformat(),
            framework="soc2",
            auditor="auditor",
            expires=(later + DEMO_ENGAGEMENT).date().isoformat(),
            reason="the demo's engagement",
            now=later,
        )
        identity_service.logout(app, admin, now=later)
    return people
