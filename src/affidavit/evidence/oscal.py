"""The evidence package's OSCAL rendering: one NIST OSCAL **assessment-results** document.

:func:`assessment_results` turns an :class:`EvidenceContent` into a document that validates
against NIST's ``oscal_assessment-results_schema.json`` (OSCAL 1.2.1):

- ``metadata``: the period as the title, ``last-modified`` = ``generated_at``, the ledger's
  origin as the assessor (an organisation party in the ``assessor`` role) and affidavit's own
  facts (origin, checkpoint, framework) as props in the ``https://affidavit.dev/ns/oscal``
  namespace;
- ``import-ap``: affidavit keeps no separate assessment plan. The href points at a back-matter
  resource (``#<uuid>``, OSCAL's way to cite one) that names the plan's real sources inside the
  package: the controls catalog and the approved policy versions;
- one ``result`` for the period with ``reviewed-controls`` = every NIST SP 800-53 control the
  assessed controls map to (OSCAL ids: ``cp-9``, ``cp-9.1`` for CP-9(1)); one
  ``observation`` per control result (control x subject) with its evidence (records and
  attestations inside the package); and one ``finding`` per (affidavit control, NIST control)
  whose target is the NIST objective ``<id>_obj`` — ``satisfied`` only when every subject
  passed or the control had nothing to evaluate. An *excepted* failure is ``not-satisfied``
  (the objective is not met; the approved exception is a risk acceptance, named in the
  remarks), and so is a control that was not evaluated or has no result (fail closed).

OSCAL catalogs are NIST's, so a package built for another framework (ISO 27001, SOC 2, ...)
still targets NIST ids and carries that framework's requirement ids as props
(``name="requirement"``, ``class=<framework>``).

Everything is deterministic: UUIDs are version-5 UUIDs of stable names (the ledger origin, the
period and the item), so the same content always yields the same JSON. Every string obeys the
schema's patterns: untrusted text is reduced to one line without control characters, markup
fields escape Markdown's HTML/link syntax, tokens are reduced to ``[A-Za-z0-9._-]``, times are
written in UTC with ``Z``, and empty lists are omitted (the schema requires ``minItems: 1``).

Hrefs are relative to the document's own place in the package (``oscal/...``), so they read
``../records/backups.json#<id>`` and ``../attestations/...``.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from affidavit.errors import InputError
from affidavit.evidence.content import FORMAT, EvidenceContent
from affidavit.evidence.package import EVENTS, OSCAL
from affidavit.policy.controls import FRAMEWORKS, NIST

__all__ = [
    "NAMESPACE",
    "OSCAL_VERSION",
    "UUID_NAMESPACE",
    "assessment_results",
    "nist_control_id",
]

OSCAL_VERSION = "1.2.1"  # the schema release the document is validated against
NAMESPACE = "https://affidavit.dev/ns/oscal"  # ns of affidavit's own props
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://affidavit.dev/evidence")

# where the records live in the package (docs/formats/evidence.md; the verifier reads the same)
_RECORDS = {
    "backups": "records/backups.json",
    "verifications": "records/verifications.json",
    "drills": "records/drills.json",
    "controls": "records/controls.json",
    "policy_versions": "records/policy-versions.json",
    "results": "records/control-results.json",
    "findings": "records/findings.json",
    "exceptions": "records/exceptions.json",
}
# from the OSCAL document's folder back to the package root ("..")
_ROOT = posixpath.relpath(".", posixpath.dirname(OSCAL) or ".")

# controls whose result comes from doing something to the subject (a restore, a
# re-fingerprint, recomputing the Merkle tree); the others examine records and configuration
_TESTED = frozenset({"verify.recent", "drill.recent", "drill.rto", "ledger.integrity"})

_STATUSES = ("pass", "fail", "excepted", "not-applicable", "not-evaluated")
# the worst status present decides the control's outcome
_PRECEDENCE = ("fail", "not-evaluated", "excepted", "pass", "not-applicable")
_STATE = {  # outcome -> (OSCAL state, reason)
    "pass": ("satisfied", "pass"),
    "not-applicable": ("satisfied", "other"),
    "excepted": ("not-satisfied", "other"),
    "fail": ("not-satisfied", "fail"),
    "not-evaluated": ("not-satisfied", "other"),
}

_NIST_ID = re.compile(r"([A-Za-z]{2})-0*(\d{1,3})(?:\s*\(0*(\d{1,3})\)|\.0*(\d{1,3}))?")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MARKDOWN = re.compile(r"([\\`*\[\]<>&|#])")  # HTML, links, code, tables, headings
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]+")


def nist_control_id(requirement: str) -> str:
    """OSCAL's id of a NIST SP 800-53 control: ``CP-9`` -> ``cp-9``, ``CP-9(1)`` ->
    ``cp-9.1``, ``AU-9(2)`` -> ``au-9.2`` (an OSCAL id is returned unchanged). Raises
    :class:`InputError` for anything else."""
    m = _NIST_ID.fullmatch(requirement.strip())
    if m is None:
        raise InputError(
            f"{requirement!r} is not a NIST SP 800-53 control id",
            hint="write it as CP-9 or CP-9(1)",
        )
    family, number, enhancement, dotted = m.groups()
    base = f"{family.lower()}-{int(number)}"
    sub = enhancement or dotted
    return f"{base}.{int(sub)}" if sub is not None else base


def assessment_results(
    content: EvidenceContent, *, package_sha256_hint: str | None = None
) -> dict[str, Any]:
    """The OSCAL assessment-results document (``{"assessment-results": {...}}``) of
    ``content``; JSON-ready and deterministic.

    ``package_sha256_hint``, when given, is a SHA-256 (64 hex digits) the builder wants pinned
    in the document, e.g. of the records it was rendered from; it is recorded as the metadata
    prop ``package-sha256`` and is not checked against anything here.

    Raises :class:`InputError` when no assessed control maps to a NIST SP 800-53 control
    (``reviewed-controls`` cannot be empty), when a mapping is not a NIST id, or when a time
    has no UTC offset.
    """
    if package_sha256_hint is not None and not re.fullmatch(
        r"[0-9a-fA-F]{64}", package_sha256_hint
    ):
        raise InputError(f"{package_sha256_hint!r} is not a SHA-256 in hex")
    return {"assessment-results": _Builder(content, package_sha256_hint).document()}


class _Builder:
    """One document's worth of lookups and UUIDs."""

    def __init__(self, content: EvidenceContent, package_sha256: str | None) -> None:
        self.c = content
        self.package_sha256 = package_sha256.lower() if package_sha256 else None
        self.scope = (content.origin, _when(content.period_start), _when(content.period_end))
        self.tool = self.uuid("component", "affidavit")
        self.party = self.uuid("party", content.origin)
        self.plan = self.uuid("resource", "assessment-plan")
        self.records: dict[str, dict[str, Mapping[str, Any]]] = {
            kind: {str(r.get("id")): r for r in getattr(content, kind) if r.get("id")}
            for kind in ("backups", "verifications", "drills")
        }
        self.controls = [c for c in content.controls if _text(c.get("id"))]
        known = {str(c["id"]) for c in self.controls}
        self.results = [r for r in content.results if str(r.get("control")) in known]
        self.nist: dict[str, list[str]] = {
            str(c["id"]): _nist_ids((c.get("mappings") or {}).get(NIST, ())) for c in self.controls
        }

    def uuid(self, *name: object) -> str:
        """A version-5 UUID of the origin, the period and ``name``."""
        return str(uuid.uuid5(UUID_NAMESPACE, "\x1f".join([*self.scope, *map(str, name)])))

    # --- the document ------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        c = self.c
        return {
            # a new build is a new revision of the document; its items keep their UUIDs
            "uuid": self.uuid(
                "assessment-results", _when(c.generated_at), c.checkpoint_size, c.checkpoint_root
            ),
            "metadata": self.metadata(),
            "import-ap": {
                "href": f"#{self.plan}",
                "remarks": "affidavit keeps no separate OSCAL assessment plan: the plan is the "
                "controls catalog and the approved backup policy in this package (see the "
                "back-matter resource).",
            },
            "results": [self.result()],
            "back-matter": {"resources": [self.plan_resource()]},
        }

    def metadata(self) -> dict[str, Any]:
        c = self.c
        start, end = c.period_start.astimezone(UTC), c.period_end.astimezone(UTC)
        framework = FRAMEWORKS.get(c.framework or "", c.framework or "")
        title = f"affidavit evidence for {_line(c.origin)}: {start:%Y-%m-%d} to {end:%Y-%m-%d}"
        return {
            "title": _md(title + (f" ({framework})" if framework else "")),
            "published": _when(c.generated_at),
            "last-modified": _when(c.generated_at),
            "version": f"{c.generated_at.astimezone(UTC):%Y%m%dT%H%M%SZ}",
            "oscal-version": OSCAL_VERSION,
            "props": _props(
                ("evidence-format", FORMAT),
                ("ledger-origin", c.origin),
                ("checkpoint-size", c.checkpoint_size),
                ("checkpoint-root", c.checkpoint_root),
                ("event-count", c.event_count),
                ("framework", c.framework),
                ("package-sha256", self.package_sha256),
            ),
            "roles": [{"id": "assessor", "title": "Assessor"}],
            "parties": [
                _clean(
                    {
                        "uuid": self.party,
                        "type": "organization",
                        "name": _text(c.origin, "unnamed ledger"),
                        "props": _props(("ledger-origin", c.origin)),
                        "remarks": "The operator of the affidavit ledger with this origin; its "
                        "signing key signed this package.",
                    }
                )
            ],
            "responsible-parties": [{"role-id": "assessor", "party-uuids": [self.party]}],
        }

    def plan_resource(self) -> dict[str, Any]:
        return {
            "uuid": self.plan,
            "title": "Assessment plan: the affidavit controls catalog and the approved policy",
            "description": "The controls (with rationale, parameters and framework mappings) "
            "and the approved policy versions that set their parameters.",
            "props": _props(("role", "assessment-plan")),
            "rlinks": [
                {"href": _href(_RECORDS["controls"]), "media-type": "application/json"},
                {"href": _href(_RECORDS["policy_versions"]), "media-type": "application/json"},
            ],
        }

    # --- the result --------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        c = self.c
        reviewed = sorted({i for ids in self.nist.values() for i in ids}, key=_nist_order)
        if not reviewed:
            raise InputError(
                "no assessed control maps to a NIST SP 800-53 control: the OSCAL document "
                "would review nothing",
                hint="build the package without --framework, or with one that has controls",
            )
        run = _newest(c.check_runs)
        observations = self.observations(run)
        by_control: dict[str, list[str]] = {}
        for control, obs in observations:
            by_control.setdefault(control, []).append(obs["uuid"])
        result: dict[str, Any] = {
            "uuid": self.uuid("result"),
            "title": _md(
                f"Backup controls, {c.period_start.astimezone(UTC):%Y-%m-%d} to "
                f"{c.period_end.astimezone(UTC):%Y-%m-%d}"
            ),
            "description": self.summary(run),
            "start": _when(c.period_start),
            "end": _when(c.period_end),
            "props": _props(
                ("check-run", run.get("id") if run else None),
                ("policy-version", run.get("policy_version") if run else None),
                ("check-ok", _bool(run.get("ok")) if run else None),
                ("framework", c.framework),
            ),
            "local-definitions": self.local_definitions(),
            "reviewed-controls": {
                "description": "The NIST SP 800-53 Rev. 5 controls the assessed affidavit "
                "controls provide evidence for.",
                "control-selections": [{"include-controls": [{"control-id": i} for i in reviewed]}],
            },
        }
        if observations:
            result["observations"] = [obs for _, obs in observations]
        findings = self.findings(by_control)
        if findings:
            result["findings"] = findings
        return _clean(result)

    def summary(self, run: Mapping[str, Any] | None) -> str:
        c = self.c
        backups = Counter(str(b.get("status")) for b in c.backups)
        lines = [
            "Results of the newest affidavit policy check in the period"
            + (
                f" (run {_md(run.get('id'))} by {_md(run.get('actor'))} at "
                f"{_when(run['at'])}, policy version {_md(run.get('policy_version'))})."
                if run
                else " (no policy check was recorded in the period)."
            ),
            "",
            f"- backups: {backups.get('complete', 0)} complete, "
            f"{backups.get('failed', 0)} failed, {len(c.backups)} in all",
            f"- verifications: {sum(1 for v in c.verifications if v.get('ok') is True)} of "
            f"{len(c.verifications)} passed",
            f"- restore drills: {sum(1 for d in c.drills if d.get('ok') is True)} of "
            f"{len(c.drills)} passed",
            f"- ledger: checkpoint size {c.checkpoint_size}, root {_md(c.checkpoint_root)}, "
            f"{c.event_count} events cited with inclusion proofs",
        ]
        return "\n".join(lines)

    def local_definitions(self) -> dict[str, Any]:
        items = [
            {
                "uuid": self.subject_uuid(subject),
                "description": _md(subject),
                "props": _props(("subject", subject), ("subject-kind", subject.partition(":")[0])),
            }
            for subject in sorted({_text(r.get("subject")) for r in self.results} - {"", "*"})
        ]
        definitions: dict[str, Any] = {
            "assessment-assets": {
                "components": [
                    _clean(
                        {
                            "uuid": self.tool,
                            "type": "software",
                            "title": "affidavit",
                            "description": "Audits and certifies backups of NoSQL databases; "
                            "evaluated the controls and recorded every result in its ledger.",
                            "props": _props(("ledger-origin", self.c.origin)),
                            "status": {"state": "operational"},
                        }
                    )
                ],
                "assessment-platforms": [
                    {
                        "uuid": self.uuid("platform", "affidavit"),
                        "title": "affidavit",
                        "uses-components": [{"component-uuid": self.tool}],
                    }
                ],
            }
        }
        if items:
            definitions["inventory-items"] = items
        return definitions

    def subject_uuid(self, subject: str) -> str:
        return self.uuid("subject", subject)

    def observations(self, run: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        order = {str(c["id"]): i for i, c in enumerate(self.controls)}
        collected = _when(run["at"] if run else self.c.generated_at)
        seen: Counter[tuple[str, str]] = Counter()
        out: list[tuple[str, dict[str, Any]]] = []
        ranked = sorted(
            self.results,
            key=lambda r: (order[str(r["control"])], _text(r.get("subject")), _status(r)),
        )
        for r in ranked:
            control, subject, status = str(r["control"]), _text(r.get("subject")), _status(r)
            key = (control, subject)
            seen[key] += 1
            obs: dict[str, Any] = {
                "uuid": self.uuid("observation", control, subject, seen[key]),
                "title": _md(f"{control}: {subject or 'no subject'} — {status}"),
                "description": _md(_text(r.get("message"), status)),
                "props": _props(
                    ("control-id", control),
                    ("subject", subject),
                    ("status", status),
                    ("severity", r.get("severity")),
                    ("owner", r.get("owner")),
                    ("exception", r.get("exception")),
                ),
                "methods": ["TEST" if control in _TESTED else "EXAMINE"],
                "types": ["control-objective"],
                "origins": [{"actors": [{"type": "tool", "actor-uuid": self.tool}]}],
                "subjects": [
                    {
                        "subject-uuid": self.subject_uuid(subject),
                        "type": "inventory-item",
                        "title": _md(subject),
                    }
                ]
                if subject and subject != "*"
                else None,
                "relevant-evidence": self.evidence(control, subject, r.get("evidence") or ()),
                "collected": collected,
            }
            out.append((control, _clean(obs)))
        return out

    def evidence(self, control: str, subject: str, refs: Iterable[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "href": _href(_RECORDS["results"]),
                "description": _md(f"The recorded result of {control} for {subject or '*'}."),
            }
        ]
        for ref in sorted({_text(x) for x in refs} - {""}):
            kind, _, ident = ref.partition(":")
            if kind == "ledger":
                out.append(
                    {
                        "href": _href(EVENTS),
                        "description": _md(
                            f"Ledger event {ident}, with its inclusion proof in the package."
                        ),
                        "props": _props(("ledger-seq", ident)),
                    }
                )
                continue
            records = {"backup": "backups", "drill": "drills"}.get(kind, "verifications")
            record = self.records[records].get(ident)
            if record is None:
                out.append({"description": _md(f"Referenced evidence {ref}.")})
                continue
            noun = records[:-1]
            out.append(
                {
                    "href": _href(_RECORDS[records], fragment=ident),
                    "description": _md(f"The {noun} record {ident}."),
                    "props": _props(("ledger-seq", record.get("seq"))),
                }
            )
            attestation = _text(record.get("attestation"))
            if attestation:
                out.append(
                    {
                        "href": _href(attestation),
                        "description": _md(
                            f"The signed attestation (in-toto statement in a DSSE envelope) of "
                            f"{noun} {ident}."
                        ),
                    }
                )
        return [_clean(e) for e in out]

    # --- findings ----------------------------------------------------------------------------

    def findings(self, by_control: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        framework = self.c.framework
        out: list[dict[str, Any]] = []
        for control in self.controls:
            cid = str(control["id"])
            statuses = Counter(_status(r) for r in self.results if str(r["control"]) == cid)
            outcome = next((s for s in _PRECEDENCE if statuses[s]), "not-evaluated")
            state, reason = _STATE[outcome]
            requirements: list[tuple[str, Any]] = []
            if framework and framework != NIST:
                mapped = (control.get("mappings") or {}).get(framework, ())
                requirements = [("requirement", x) for x in mapped]
            counts = ", ".join(f"{statuses[s]} {s}" for s in _STATUSES if statuses[s])
            title = _text(control.get("title"), cid)
            for nist in self.nist[cid]:
                finding: dict[str, Any] = {
                    "uuid": self.uuid("finding", cid, nist),
                    "title": _md(f"{nist.upper()} — {cid}: {title}"),
                    "description": _md(
                        f"affidavit control {cid} ({title}) provides evidence for NIST SP "
                        f"800-53 {nist.upper()}. Outcome: {outcome}"
                        + (f" ({counts})." if counts else " (no result recorded).")
                    ),
                    "props": [
                        *_props(
                            ("control-id", cid),
                            ("outcome", outcome),
                            ("severity", control.get("severity")),
                        ),
                        *_props(*requirements, cls=_token(framework or "")),
                    ],
                    "origins": [{"actors": [{"type": "tool", "actor-uuid": self.tool}]}],
                    "target": {
                        "type": "objective-id",
                        "target-id": f"{nist}_obj",
                        "status": {"state": state, "reason": reason},
                    },
                    "remarks": self.remarks(cid, outcome),
                }
                if by_control.get(cid):
                    finding["related-observations"] = [
                        {"observation-uuid": u} for u in by_control[cid]
                    ]
                out.append(_clean(finding))
        return out

    def remarks(self, cid: str, outcome: str) -> str | None:
        """The affidavit findings (with their remediation trail) and exceptions of a control,
        as Markdown."""
        lines: list[str] = []
        if outcome == "excepted":
            lines.append("Failures are covered by approved exceptions (risk accepted).")
        elif outcome == "not-applicable":
            lines.append("Nothing to evaluate in the period.")
        elif outcome == "not-evaluated":
            lines.append("Not evaluated (no approved policy or no result recorded).")
        for f in (f for f in self.c.findings if f.get("control") == cid):
            lines.append(
                f"- Finding {_md(f.get('id'))} on {_md(f.get('subject'))}: "
                f"{_md(f.get('status'))}, severity {_md(f.get('severity'))}, owner "
                f"{_md(f.get('owner'))}, due {_md(f.get('due_at'))}. {_md(f.get('message'))}"
            )
            for step in f.get("trail") or ():
                lines.append(
                    f"  - {_md(step.get('at'))} {_md(step.get('actor'))}: "
                    f"{_md(step.get('status'))}"
                    + (f" — {_md(step.get('note'))}" if _text(step.get("note")) else "")
                )
        for e in (e for e in self.c.exceptions if e.get("control") == cid):
            lines.append(
                f"- Exception {_md(e.get('id'))} for {_md(e.get('subject'))}: "
                f"{_md(e.get('status'))}, requested by {_md(e.get('requested_by'))}, approved "
                f"by {_md(e.get('approved_by'))}, expires {_md(e.get('expires_at'))}. "
                f"{_md(e.get('reason'))}"
            )
        return "\n".join(lines) if lines else None


# --- values ------------------------------------------------------------------------------------


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without None values and empty lists (the schema forbids empty arrays)."""
    return {k: v for k, v in obj.items() if v is not None and v != []}


def _moment(value: object) -> datetime:
    """A time with an offset, in UTC; raises :class:`InputError` otherwise."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InputError(f"the time {moment.isoformat()} has no UTC offset")
    return moment.astimezone(UTC)


def _when(value: object) -> str:
    """A schema-valid DateTimeWithTimezone: UTC with ``Z``."""
    moment = _moment(value)
    frac = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return f"{moment:%Y-%m-%dT%H:%M:%S}{frac}Z"


def _newest(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    dated = [(_moment(r["at"]), i) for i, r in enumerate(runs) if r.get("at")]
    return runs[max(dated)[1]] if dated else None


def _status(result: Mapping[str, Any]) -> str:
    status = str(result.get("status"))
    return status if status in _STATUSES else "not-evaluated"  # unknown: no determination


def _nist_ids(requirements: Iterable[Any]) -> list[str]:
    return sorted({nist_control_id(str(r)) for r in requirements}, key=_nist_order)


def _nist_order(oscal_id: str) -> tuple[str, int, int]:
    family, _, rest = oscal_id.partition("-")
    number, _, enhancement = rest.partition(".")
    return family, int(number), int(enhancement or 0)


def _text(value: object, default: str = "") -> str:
    """One line of text without control characters; ``default`` when nothing is left."""
    if value is None:
        return default
    text = " ".join(_CONTROL_CHARS.sub(" ", str(value)).split())
    return text or default


def _line(value: object) -> str:
    return _text(value, "-")


def _md(value: object) -> str:
    """A non-empty one-line Markdown text with HTML, link and code syntax escaped."""
    return _MARKDOWN.sub(r"\\\1", _line(value))


def _bool(value: object) -> str | None:
    return None if value is None else ("true" if value else "false")


def _token(value: str) -> str:
    token = _NOT_TOKEN.sub("-", value)
    return token if re.match(r"[A-Za-z_]", token) else f"_{token}"


def _props(*pairs: tuple[str, Any], cls: str | None = None) -> list[dict[str, str]]:
    """Props in affidavit's namespace; a pair whose value is None or blank is left out."""
    out: list[dict[str, str]] = []
    for name, value in pairs:
        text = _text(value)
        if text:
            prop = {"name": name, "ns": NAMESPACE, "value": text}
            if cls:
                prop["class"] = cls
            out.append(prop)
    return out


def _href(path: str, *, fragment: str | None = None) -> str:
    """A URI reference from the OSCAL document to ``path`` (relative to the package root)."""
    ref = quote(posixpath.normpath(posixpath.join(_ROOT, path)), safe="/._-~")
    return f"{ref}#{quote(fragment, safe='._-~')}" if fragment else ref
