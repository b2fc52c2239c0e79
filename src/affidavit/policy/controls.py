"""The controls catalog: every rule ``affidavit policy check`` evaluates, with its rationale,
the policy parameters it reads, how often it is evaluated and the framework requirements it
supports. docs/controls.md is written from this table (a test keeps the two in step).

Mappings name requirements the control provides evidence for; they are not a claim that the
control alone satisfies the requirement (that is the assessor's judgement).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from affidavit.errors import InputError
from affidavit.models.governance import Severity

NIST = "nist-800-53"
ISO = "iso-27001"
SOC2 = "soc2"
HIPAA = "hipaa"
GDPR = "gdpr"
DORA = "dora"

FRAMEWORKS: Mapping[str, str] = MappingProxyType(
    {
        NIST: "NIST SP 800-53 Rev. 5",
        ISO: "ISO/IEC 27001:2022 Annex A",
        SOC2: "AICPA SOC 2 Trust Services Criteria (2017, rev. 2022)",
        HIPAA: "HIPAA Security Rule, 45 CFR 164",
        GDPR: "GDPR (EU) 2016/679",
        DORA: "DORA (EU) 2022/2554",
    }
)

EVERY_CHECK = "every policy check"


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """One control of the catalog."""

    id: str
    title: str
    severity: Severity
    rationale: str
    parameters: tuple[str, ...]  # policy keys it reads (per level unless prefixed policy.)
    mappings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    frequency: str = EVERY_CHECK

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.value,
            "frequency": self.frequency,
            "rationale": self.rationale,
            "parameters": list(self.parameters),
            "mappings": {k: list(v) for k, v in self.mappings.items()},
        }

    def maps_to(self, framework: str) -> tuple[str, ...]:
        """The requirement ids of ``framework`` this control supports."""
        return self.mappings.get(framework, ())


def _c(
    id: str,
    title: str,
    severity: Severity,
    rationale: str,
    parameters: tuple[str, ...],
    **mappings: tuple[str, ...],
) -> Control:
    by_framework = {
        {"nist": NIST, "iso": ISO, "soc2": SOC2, "hipaa": HIPAA, "gdpr": GDPR, "dora": DORA}[
            key
        ]: value
        for key, value in mappings.items()
    }
    return Control(
        id=id,
        title=title,
        severity=severity,
        rationale=rationale,
        parameters=parameters,
        mappings=MappingProxyType(by_framework),
    )


_HIPAA_BACKUP = "164.308(a)(7)(ii)(A)"
_HIPAA_DR = "164.308(a)(7)(ii)(B)"
_HIPAA_TEST = "164.308(a)(7)(ii)(D)"

CONTROLS: tuple[Control, ...] = (
    _c(
        "policy.approved",
        "A backup policy is in effect, approved by someone other than its proposer",
        Severity.HIGH,
        "Without an approved policy there is nothing to measure against; two-person approval "
        "keeps one administrator from weakening the rules alone.",
        (),
        nist=("CP-1", "PL-1", "AC-5"),
        iso=("A.5.1", "A.5.3"),
        soc2=("CC5.3",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "dataset.protected",
        "Every dataset is protected by a backup",
        Severity.HIGH,
        "A dataset that no complete backup contains cannot be restored after loss.",
        (),
        nist=("CP-9",),
        iso=("A.8.13",),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        gdpr=("Art. 32(1)(c)",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "backup.rpo",
        "The newest complete backup of every dataset is younger than the RPO",
        Severity.HIGH,
        "The recovery-point objective bounds how much data a restore may lose.",
        ("rpo_hours",),
        nist=("CP-9", "CP-10"),
        iso=("A.8.13",),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        gdpr=("Art. 32(1)(c)",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "backup.frequency",
        "Backups are taken at least as often as the RPO requires",
        Severity.MEDIUM,
        "A single fresh backup can hide a plan that runs too rarely; the gaps between "
        "consecutive backups of a source in the last 30 days must not exceed the RPO.",
        ("rpo_hours",),
        nist=("CP-9",),
        iso=("A.8.13",),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        dora=("Art. 12(1)",),
    ),
    _c(
        "backup.abandoned",
        "Every abandoned backup run was followed by a complete backup and left no partial files",
        Severity.MEDIUM,
        "A backup whose process was killed (SIGKILL, out of memory, a lost host) protects "
        "nothing and may leave partial files in the vault; it is recorded failed as abandoned, "
        "and stays a finding until a later backup of the same source completes and no partial "
        "file is left.",
        (),
        nist=("CP-9", "CP-10"),
        iso=("A.8.13",),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        dora=("Art. 12(1)",),
    ),
    _c(
        "backup.retention",
        "Backup retention and the configured default retention are within policy limits",
        Severity.MEDIUM,
        "Too short a retention loses restore points regulators expect; too long keeps "
        "personal data beyond its purpose.",
        ("retention_min_days", "retention_max_days"),
        nist=("CP-9", "SI-12"),
        iso=("A.8.13", "A.8.10"),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        gdpr=("Art. 5(1)(e)",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "backup.encrypted",
        "Every backup is encrypted with a key the organisation controls",
        Severity.CRITICAL,
        "Backups leave the database's access controls; encryption at rest with a managed "
        "key keeps a stolen copy unreadable.",
        ("encryption_required",),
        nist=("SC-28", "SC-28(1)", "CP-9(8)"),
        iso=("A.8.13", "A.8.24"),
        soc2=("A1.2", "CC6.1"),
        hipaa=(_HIPAA_BACKUP, "164.312(a)(2)(iv)"),
        gdpr=("Art. 32(1)(a)",),
        dora=("Art. 12(3)",),
    ),
    _c(
        "backup.immutable",
        "Backups are stored immutably for their whole retention",
        Severity.HIGH,
        "Ransomware and insiders delete or encrypt backups first; write-once storage with a "
        "retention lock (S3 Object Lock) keeps them.",
        ("immutability_required",),
        nist=("CP-9", "SI-7", "AU-9"),
        iso=("A.8.13",),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        dora=("Art. 12(3)",),
    ),
    _c(
        "backup.cross_region",
        "A current backup exists in a second region where policy requires it",
        Severity.HIGH,
        "A regional disaster must not take the data and its backups together.",
        ("cross_region_copy_required", "rpo_hours"),
        nist=("CP-6", "CP-6(1)", "CP-9"),
        iso=("A.8.13", "A.8.14"),
        soc2=("A1.2",),
        hipaa=(_HIPAA_DR,),
        gdpr=("Art. 32(1)(c)",),
        dora=("Art. 12(3)",),
    ),
    _c(
        "verify.recent",
        "The newest backup of every dataset was verified within its period, content matching",
        Severity.HIGH,
        "A backup nobody checked may be corrupt; re-fingerprinting proves record by record "
        "that it still holds what was signed.",
        ("verify_every_days",),
        nist=("CP-9(1)",),
        iso=("A.8.13",),
        soc2=("A1.3",),
        hipaa=(_HIPAA_TEST,),
        gdpr=("Art. 32(1)(d)",),
        dora=("Art. 12(2)",),
    ),
    _c(
        "drill.recent",
        "Every source was restored in a drill within its period, the restore matching",
        Severity.HIGH,
        "Only a restore proves a backup can be restored; a drill re-fingerprints the "
        "restored data against the signed manifest.",
        ("drill_every_days",),
        nist=("CP-4", "CP-9(1)"),
        iso=("A.8.13", "A.5.30"),
        soc2=("A1.3",),
        hipaa=(_HIPAA_DR, _HIPAA_TEST),
        gdpr=("Art. 32(1)(c)", "Art. 32(1)(d)"),
        dora=("Art. 12(2)", "Art. 12(6)"),
    ),
    _c(
        "drill.rto",
        "The newest drill of every source restored within the RTO",
        Severity.HIGH,
        "The recovery-time objective is met only if a real restore is that fast.",
        ("rto_seconds",),
        nist=("CP-10", "CP-10(4)"),
        iso=("A.5.30",),
        soc2=("A1.3",),
        hipaa=(_HIPAA_DR,),
        gdpr=("Art. 32(1)(c)",),
        dora=("Art. 12(6)",),
    ),
    _c(
        "ledger.integrity",
        "The audit ledger verifies: every entry, the Merkle tree and every signed checkpoint",
        Severity.CRITICAL,
        "Evidence is only as good as the log it comes from; a ledger that does not verify "
        "has been altered.",
        (),
        nist=("AU-9", "AU-10"),
        iso=("A.8.15",),
        soc2=("CC7.2",),
        hipaa=("164.312(b)",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "ledger.checkpoint_published",
        "A signed ledger checkpoint reached an external witness within its period",
        Severity.MEDIUM,
        "A published checkpoint pins the log's history outside the machine that keeps it, so "
        "an administrator cannot rewrite it unnoticed.",
        ("policy.checkpoint_publish_every_days",),
        nist=("AU-9(2)", "AU-10"),
        iso=("A.8.15",),
        soc2=("CC7.2",),
    ),
    _c(
        "keys.rotated",
        "The key-encryption key was rotated within its period",
        Severity.MEDIUM,
        "Rotation limits what one compromised key version exposes.",
        ("key_rotation_days",),
        nist=("SC-12", "SC-28(1)"),
        iso=("A.8.24",),
        soc2=("CC6.1",),
        hipaa=("164.312(a)(2)(iv)",),
        gdpr=("Art. 32(1)(a)",),
    ),
    _c(
        "deletion.lawful",
        "No backup was deleted before its retention ended or while under legal hold",
        Severity.CRITICAL,
        "Early deletion destroys restore points and evidence; deleting under a hold may be "
        "spoliation.",
        (),
        nist=("CP-9", "SI-12", "AU-11"),
        iso=("A.8.13", "A.5.33"),
        soc2=("A1.2",),
        hipaa=(_HIPAA_BACKUP,),
        dora=("Art. 12(1)",),
    ),
    _c(
        "dataset.classified",
        "Every dataset has a classification of its own",
        Severity.LOW,
        "Requirements follow the classification; a dataset that only inherits its source's "
        "level may be protected too weakly.",
        (),
        nist=("RA-2",),
        iso=("A.5.12",),
        gdpr=("Art. 32(1)",),
    ),
    _c(
        "inventory.known_targets",
        "Backups go only to vaults in the approved baseline, and every vault is known",
        Severity.HIGH,
        "Copies in unknown places escape retention, encryption and access controls.",
        (),
        nist=("CM-8", "CP-9"),
        iso=("A.5.9", "A.8.13"),
        soc2=("CC6.1",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "config.baseline",
        "Sources and vaults match the approved configuration baseline",
        Severity.HIGH,
        "Drift in TLS, authentication, persistence, replication, encryption or immutability "
        "silently weakens protection.",
        (),
        nist=("CM-2", "CM-3", "CM-6"),
        iso=("A.8.9",),
        soc2=("CC8.1",),
        dora=("Art. 12(1)",),
    ),
    _c(
        "access.reviewed",
        "Access was reviewed within the period the policy sets",
        Severity.MEDIUM,
        "Roles outlive the work they were granted for; a periodic review of who holds what, "
        "against what they really used, is how privilege creep is found and removed.",
        ("policy.access_review_max_days",),
        nist=("AC-2", "AC-2(3)", "AC-6(7)"),
        iso=("A.5.18", "A.8.2"),
        soc2=("CC6.2", "CC6.3"),
    ),
    _c(
        "access.least_privilege",
        "No account keeps an unused role unreviewed or holds duties that must stay apart",
        Severity.HIGH,
        "An unused role is power nobody needs; one person holding duties that separation of "
        "duties keeps apart (making backups and deleting them) can act alone.",
        (),
        nist=("AC-6(7)", "AC-5", "AC-2"),
        iso=("A.5.15", "A.5.18", "A.8.2"),
        soc2=("CC6.1", "CC6.3"),
    ),
    _c(
        "access.mfa_enforced",
        "Every person holding a role can pass MFA, and no critical action ran on a password alone",
        Severity.HIGH,
        "A stolen password must not be enough to delete backups, disclose keys or hand out "
        "roles; step-up MFA works only for people who have a second factor.",
        ("policy.access_review_max_days",),
        nist=("IA-2(1)", "AU-2"),
        iso=("A.8.5",),
        soc2=("CC6.1",),
    ),
    _c(
        "access.segregation_of_duties",
        "No gated operation ran without a second person's approval",
        Severity.HIGH,
        "Multi-party approval is the control; a waived approval, a gated operation done in "
        "local mode (not authenticated) and a break-glass each bypassed it and must be seen "
        "and accepted, never silent.",
        ("policy.access_review_max_days",),
        nist=("AC-5", "AU-2", "AU-9"),
        iso=("A.5.3", "A.5.15"),
        soc2=("CC6.1", "CC6.3"),
    ),
    _c(
        "export.approved",
        "Every export ran from an approved spec, approved by a second person",
        Severity.HIGH,
        "Data leaving the organisation is a disclosure: one person must not be able to "
        "define and ship an export alone.",
        (),
        nist=("AC-21", "AC-5"),
        iso=("A.5.14",),
        gdpr=("Art. 44", "Art. 45", "Art. 46"),
    ),
    _c(
        "export.minimised",
        "Every export left fields behind or transformed them",
        Severity.MEDIUM,
        "Data minimisation: only the fields the purpose needs leave, and identifying ones "
        "are redacted, masked, generalised or pseudonymised.",
        (),
        nist=("SI-12", "PT-3"),
        iso=("A.8.11",),
        gdpr=("Art. 5(1)(c)", "Art. 25"),
    ),
    _c(
        "export.consent",
        "Every export names its purpose and legal basis, with consent checked where it is "
        "the basis",
        Severity.HIGH,
        "Processing needs a lawful basis; where it is consent, records of subjects without "
        "valid consent for the purpose must not leave.",
        (),
        nist=("PT-2", "PT-3"),
        gdpr=("Art. 6", "Art. 7"),
    ),
    _c(
        "export.contract_valid",
        "Every delivered export met its data contract",
        Severity.MEDIUM,
        "A recipient relies on the schema, counts and quality the contract promises; an "
        "export that breaks it is not shipped.",
        (),
        nist=("SI-12",),
        iso=("A.8.12",),
        gdpr=("Art. 5(1)(c)",),
    ),
    _c(
        "export.recipient_verified",
        "Every export went to a recipient that proved possession of its key",
        Severity.HIGH,
        "Encryption protects an export only if the key belongs to the intended recipient; "
        "restricted data also needs a data-processing agreement.",
        (),
        nist=("SC-8", "AC-21"),
        iso=("A.5.14",),
        gdpr=("Art. 28", "Art. 32(1)(a)"),
    ),
    _c(
        "export.slo",
        "Every export met the service-level objective its spec declares",
        Severity.LOW,
        "Throughput, latency and error rate are recorded for every run; a run that missed "
        "its spec's objective (too slow, too long, too many records failing the contract) is "
        "a signal that the export or its source is degrading.",
        (),
        nist=("SI-12", "CP-2"),
        iso=("A.8.16",),
        soc2=("A1.1",),
        gdpr=("Art. 32(1)(d)",),
    ),
    _c(
        "audit.requests_within_sla",
        "Every auditor's evidence request was answered by its due date",
        Severity.MEDIUM,
        "An auditor's request for evidence that goes unanswered past its due date is a "
        "communication failure with the assessor and delays the opinion; the SLA clock makes "
        "it visible.",
        (),
        nist=("CA-2", "CA-7"),
        iso=("A.5.35",),
        soc2=("CC2.3", "CC4.1"),
    ),
)

BY_ID: Mapping[str, Control] = MappingProxyType({c.id: c for c in CONTROLS})
#: controls no exception can excuse: evidence and the rules themselves must hold
UNEXCEPTABLE: frozenset[str] = frozenset({"ledger.integrity", "policy.approved"})
CONTROL_IDS: frozenset[str] = frozenset(BY_ID)


def control(control_id: str) -> Control:
    """The control with ``control_id``; raise :class:`InputError` naming the known ids."""
    try:
        return BY_ID[control_id]
    except KeyError:
        raise InputError(
            f"unknown control {control_id!r}",
            hint="`affidavit policy controls` lists them",
        ) from None


def check_framework(name: str) -> str:
    """Validate a framework name (``--framework``)."""
    if name not in FRAMEWORKS:
        raise InputError(
            f"unknown framework {name!r}", hint=f"use one of {', '.join(sorted(FRAMEWORKS))}"
        )
    return name
