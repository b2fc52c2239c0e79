"""The signed predicates as typed values (issue 14): every genuine manifest, verification and
drill result that the pre-renovation code signed reads and writes back byte for byte under
RFC 8785, and every malformed variant is refused with the one error type, never another
exception.

``assets/manifest-*.dsse.json`` are genuine envelopes (runs and ingests of MongoDB and Redis)
signed by the key of ``assets/ledger.vkey``; the verification and drill predicates come from
the genuine package ``tests/unit/evidence/assets/evidence-format-2.tar.gz``.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from affidavit.constants import EngineName
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.note import NoteVerifier
from affidavit.evidence.package import read_package
from affidavit.ledger.attestation import BACKUP_PREDICATE_TYPE, Statement, verify_attestation
from affidavit.models.backup import ArtifactRole
from affidavit.models.checks import Finding
from affidavit.models.json_fields import PredicateError
from affidavit.models.manifest import (
    BackupManifest,
    Consistency,
    ManifestArtifact,
    ManifestDataset,
    ManifestEncryption,
    ManifestSource,
    ManifestVault,
    OpTime,
    ToolInfo,
)
from affidavit.models.predicates import DrillPredicate, VerificationPredicate

ASSETS = Path(__file__).parent / "assets"
ENVELOPES = sorted(ASSETS.glob("manifest-*.dsse.json"))
PACKAGE = Path(__file__).parents[1] / "evidence" / "assets" / "evidence-format-2.tar.gz"


def _keys() -> dict[str, Any]:
    verifier = NoteVerifier.from_vkey((ASSETS / "ledger.vkey").read_text().strip())
    return {f"{verifier.key_id:08x}": verifier.key}


def _statement(path: Path) -> dict[str, Any]:
    envelope = json.loads(path.read_bytes())
    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return statement


def _predicate(path: Path) -> dict[str, Any]:
    predicate: dict[str, Any] = _statement(path)["predicate"]
    return predicate


def _canonical(value: Any) -> bytes:
    return rfc8785.dumps(value)


def _package_predicates(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = read_package(PACKAGE).files
    out = []
    for path in sorted(files):
        if path.startswith(f"attestations/{kind}/"):
            payload = base64.b64decode(json.loads(files[path])["payload"])
            out.append((path.rsplit("/", 1)[-1], json.loads(payload)["predicate"]))
    return out


VERIFICATIONS = _package_predicates("verification")
DRILLS = _package_predicates("drill")


def test_the_assets_are_what_they_say() -> None:
    kinds = {(_predicate(p)["kind"], _predicate(p)["source"]["engine"]) for p in ENVELOPES}
    assert kinds == {
        ("run", "redis"),
        ("run", "mongodb"),
        ("ingest", "redis"),
        ("ingest", "mongodb"),
    }
    modes = {_predicate(p)["consistency"]["mode"] for p in ENVELOPES}
    assert modes == {"rdb-snapshot", "per-collection", "as-ingested"}
    assert len(VERIFICATIONS) >= 5 and len(DRILLS) >= 4


# -- genuine predicates round-trip ---------------------------------------------------------------


@pytest.mark.parametrize("path", ENVELOPES, ids=lambda p: p.name)
def test_a_genuine_manifest_round_trips_byte_for_byte(path: Path) -> None:
    statement = verify_attestation(
        Envelope.from_json(path.read_bytes()), _keys(), predicate_type=BACKUP_PREDICATE_TYPE
    )
    predicate = _predicate(path)
    manifest = BackupManifest.from_predicate(statement.predicate)
    assert _canonical(manifest.to_predicate()) == _canonical(predicate)
    # the statement rebuilt from the model is the signed payload itself
    rebuilt = Statement(
        subjects=statement.subjects,
        predicate_type=BACKUP_PREDICATE_TYPE,
        predicate=manifest.to_predicate(),
    )
    payload = base64.b64decode(json.loads(path.read_bytes())["payload"])
    assert rebuilt.to_json() == payload
    # and so is a manifest built by keyword from its parts (what backup.py does)
    again = BackupManifest(
        **{f.name: getattr(manifest, f.name) for f in dataclasses.fields(BackupManifest)}
    )
    assert again == manifest
    assert _canonical(again.to_predicate()) == _canonical(predicate)


@pytest.mark.parametrize("path", ENVELOPES, ids=lambda p: p.name)
def test_a_genuine_manifest_reads_as_typed_values(path: Path) -> None:
    predicate = _predicate(path)
    manifest = BackupManifest.from_predicate(predicate)
    assert manifest.backup_id == predicate["backup_id"]
    assert manifest.started_at.tzinfo is not None and manifest.retain_until > manifest.started_at
    assert manifest.fingerprints == {d["name"]: d["fingerprint"] for d in predicate["datasets"]}
    assert all(
        a.role in (ArtifactRole.DATA, ArtifactRole.METADATA, ArtifactRole.INDEX)
        for a in manifest.artifacts
    )
    for name in manifest.fingerprints:
        index = manifest.index_of(name)
        assert index is not None and index.role is ArtifactRole.INDEX
        assert manifest.artifact(index.path) == index
    subjects = sorted((s["name"], s["digest"]["sha256"]) for s in _statement(path)["subject"])
    assert sorted(manifest.subjects()) == subjects
    assert manifest.source.engine in (EngineName.MONGODB, EngineName.REDIS)


def test_the_output_is_a_fresh_copy_and_the_values_are_frozen() -> None:
    manifest = BackupManifest.from_predicate(_predicate(ENVELOPES[0]))
    out = manifest.to_predicate()
    out["artifacts"][0]["size"] = -1
    out["source"]["name"] = "x"
    assert manifest.to_predicate() != out
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.backup_id = "bk-other"  # type: ignore[misc]
    assert isinstance(manifest.artifacts, tuple)


@pytest.mark.parametrize(("name", "predicate"), VERIFICATIONS, ids=[n for n, _ in VERIFICATIONS])
def test_a_genuine_verification_round_trips(name: str, predicate: dict[str, Any]) -> None:
    typed = VerificationPredicate.from_predicate(predicate)
    assert _canonical(typed.to_predicate()) == _canonical(predicate)
    assert typed.verification_id == name.removesuffix(".json")
    assert all(isinstance(f, Finding) for f in typed.findings)


@pytest.mark.parametrize(("name", "predicate"), DRILLS, ids=[n for n, _ in DRILLS])
def test_a_genuine_drill_round_trips(name: str, predicate: dict[str, Any]) -> None:
    typed = DrillPredicate.from_predicate(predicate)
    assert _canonical(typed.to_predicate()) == _canonical(predicate)
    assert typed.drill_id == name.removesuffix(".json")
    assert typed.engine in (EngineName.MONGODB, EngineName.REDIS)
    with pytest.raises(TypeError):
        typed.phases["load"] = 0  # type: ignore[index]


def test_results_with_findings_a_sample_and_a_source_comparison_round_trip() -> None:
    """What the package does not hold: a sampled verification against the source with
    findings, a failed drill with probes and a named target."""
    _, genuine = VERIFICATIONS[0]
    sampled = {
        **genuine,
        "kind": "sample",
        "ok": False,
        "sample": {"percent": 12.5, "seed": "0123456789abcdef"},
        "against_source": {"source": "orders", "compared": False, "datasets": {}},
        "findings": [
            {
                "code": "drift",
                "message": "2 record(s) changed",
                "subject": "db0",
                "details": {"count": 2, "keys": [{"key": "k", "change": "changed"}]},
            }
        ],
    }
    typed = VerificationPredicate.from_predicate(sampled)
    assert typed.sample is not None and typed.sample.percent == 12.5
    assert _canonical(typed.to_predicate()) == _canonical(sampled)
    _, drill = DRILLS[0]
    failed = {
        **drill,
        "ok": False,
        "scratch": None,
        "target": "mongodb://***@restore.example.com/",
        "probes": [
            {
                "name": "p1",
                "dataset": "shop.orders",
                "kind": "count",
                "ok": False,
                "actual": 3,
                "expect": {"min": 4},
                "error": None,
            }
        ],
        "findings": [{"code": "probe-failed", "message": "p1", "subject": "p1", "details": {}}],
    }
    typed_drill = DrillPredicate.from_predicate(failed)
    assert _canonical(typed_drill.to_predicate()) == _canonical(failed)


def test_the_worked_example_of_the_format_page_reads() -> None:
    page = (Path(__file__).parents[3] / "docs" / "formats" / "manifest.md").read_text()
    block = page.split("```json\n", 1)[1].split("```", 1)[0]
    predicate = json.loads(block)
    assert BackupManifest.from_predicate(predicate).to_predicate() == predicate


# -- construction by keyword (how backup.py builds one) -------------------------------------------


def _manifest(**changes: Any) -> BackupManifest:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "backup_id": "bk-20261205T120000Z-0a1b2c",
        "kind": "run",
        "format": "rdb",
        "source": ManifestSource(
            name="cache",
            engine=EngineName.REDIS,
            uri="redis://cache.example.com:6379/0",
            server_version="7.0.15",
        ),
        "tool": ToolInfo(name="affidavit", version="0.1.0"),
        "started_at": now,
        "consistency": Consistency(mode="rdb-snapshot", captured_at_ms=1796472001000),
        "vault": ManifestVault(name="v1", url="file:///srv/backups", region=None),
        "retain_until": now.replace(year=2027),
        "encryption": ManifestEncryption(
            recipient="age1xyz", kek_id="file:kek.json", kek_version=1
        ),
        "artifacts": (
            ManifestArtifact(
                path="cache/bk/dump.rdb.age",
                role=ArtifactRole.DATA,
                dataset=None,
                size=10,
                sha256="1" * 64,
                plain_size=5,
                plain_sha256="2" * 64,
            ),
        ),
        "datasets": (
            ManifestDataset(
                name="db0",
                records=3,
                fingerprint="afp1:exact:b4:n3:" + "5" * 64,
                classification="internal",
            ),
        ),
    }
    values.update(changes)
    return BackupManifest(**values)


def test_a_manifest_built_by_keyword_reads_back() -> None:
    manifest = _manifest()
    assert BackupManifest.from_predicate(manifest.to_predicate()) == manifest
    empty = _manifest(artifacts=(), datasets=[])
    assert empty.subjects() == (
        (
            "cache/bk-20261205T120000Z-0a1b2c/empty",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
    )
    assert empty.datasets == ()


BAD_KEYWORDS: list[tuple[str, Callable[[], object]]] = [
    ("naive-start", lambda: _manifest(started_at=datetime(2026, 1, 1))),
    ("kind", lambda: _manifest(kind="copy")),
    ("source-a-dict", lambda: _manifest(source={"name": "cache"})),
    ("artifacts-of-dicts", lambda: _manifest(artifacts=({"path": "x"},))),
    ("duplicate-path", lambda: _manifest(artifacts=_manifest().artifacts * 2)),
    ("duplicate-dataset", lambda: _manifest(datasets=_manifest().datasets * 2)),
    (
        "engine",
        lambda: ManifestSource(
            name="s",
            engine="cassandra",  # type: ignore[arg-type]
            uri=None,
            server_version=None,
        ),
    ),
    ("size-negative", lambda: dataclasses.replace(_manifest().artifacts[0], size=-1)),
    ("size-a-bool", lambda: dataclasses.replace(_manifest().artifacts[0], size=True)),
    (
        "role-manifest",
        lambda: dataclasses.replace(_manifest().artifacts[0], role=ArtifactRole.MANIFEST),
    ),
    ("digest-upper", lambda: dataclasses.replace(_manifest().artifacts[0], sha256="A" * 64)),
    (
        "kek-version-str",
        lambda: ManifestEncryption(recipient="age1", kek_id="k", kek_version="1"),  # type: ignore[arg-type]
    ),
    ("mode-members", lambda: Consistency(mode="rdb-snapshot", captured_at_ms=1, note="x")),
    ("mode-missing-member", lambda: Consistency(mode="as-ingested")),
    ("optime-negative", lambda: OpTime(t=-1, i=0)),
    ("missing-argument", lambda: BackupManifest.from_predicate({})),
]


@pytest.mark.parametrize("build", [b for _, b in BAD_KEYWORDS], ids=[n for n, _ in BAD_KEYWORDS])
def test_an_invalid_manifest_cannot_be_built(build: Callable[[], object]) -> None:
    with pytest.raises(PredicateError):
        build()


# -- every malformed variant is refused with the one error type ----------------------------------

# a genuine manifest of each consistency mode
BASES = {
    mode: next(p for p in ENVELOPES if _predicate(p)["consistency"]["mode"] == mode)
    for mode in ("rdb-snapshot", "per-collection", "as-ingested")
}
# members that may be null, by their path with list indexes as []
NULLABLE = {
    "source.engine",
    "source.uri",
    "source.server_version",
    "vault.region",
    "artifacts[].dataset",
    "artifacts[].plain_size",
    "artifacts[].plain_sha256",
}
# members whose absence is allowed (written only when they have a value)
OPTIONAL = {"consistency.operation_time_before", "consistency.operation_time_after"}
# members that may be empty strings
MAY_BE_EMPTY = {"consistency.note", "source.server_version", "vault.region"}

Path_ = tuple[str | int, ...]


def _walk(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _walk(item, (*path, n))


def _pattern(path: Path_) -> str:
    out = ""
    for part in path:
        out += "[]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _set_at(obj: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def _drop_at(obj: Any, path: Path_) -> None:
    for part in path[:-1]:
        obj = obj[part]
    del obj[path[-1]]


def _wrong_values(pattern: str, value: Any, nullable: bool | None = None) -> list[Any]:
    """Values of the wrong type (or range) for the member at ``pattern`` holding ``value``."""
    nullable = pattern in NULLABLE if nullable is None else nullable
    out: list[Any]
    if isinstance(value, float) or pattern.endswith("_seconds"):  # any number >= 0
        out = ["1", True, -1, -0.5, float("inf"), float("nan"), 2**60, [], {}]
        out += [] if nullable else [None]
    elif isinstance(value, bool):
        out = [1, 0, "true", None]
    elif isinstance(value, int):
        out = ["1", 1.5, True, False, -1, 2**53, [], {}]
        out += [] if nullable else [None]
    elif isinstance(value, str):
        out = [1, 1.5, True, [], {}, [value], {"value": value}, "\ud800"]
        out += [] if nullable else [None]
        out += [] if pattern in MAY_BE_EMPTY or nullable else [""]
    elif value is None:
        out = [1, True, [], {}]
    elif isinstance(value, dict):
        out = ["x", 1, [], [value], True] + ([] if nullable else [None])
    else:  # a list
        out = ["x", 1, {}, None, True, [1], [None], [[]], ["x"]]
    return out


def _mutations() -> Iterator[tuple[str, dict[str, Any]]]:
    for mode, path in BASES.items():
        base = _predicate(path)
        for where, value in _walk(base):
            if not where:
                continue
            pattern = _pattern(where)
            for n, wrong in enumerate(_wrong_values(pattern, value)):
                mutated = copy.deepcopy(base)
                _set_at(mutated, where, wrong)
                yield f"{mode}:{pattern}={type(wrong).__name__}{n}", mutated
            if isinstance(where[-1], str) and pattern not in OPTIONAL:
                mutated = copy.deepcopy(base)
                _drop_at(mutated, where)
                yield f"{mode}:drop:{pattern}", mutated
            if isinstance(value, dict):
                mutated = copy.deepcopy(base)
                _set_at(mutated, (*where, "extra"), 1)
                yield f"{mode}:extra-member:{pattern}", mutated
        extra = copy.deepcopy(base)
        extra["signed_by"] = "someone"
        yield f"{mode}:extra-member:top", extra


def _semantic(base: dict[str, Any]) -> Iterator[tuple[str, Callable[[dict[str, Any]], None]]]:
    first = "artifacts", 0
    yield "type", lambda m: _set_at(m, ("type",), "https://affidavit.dev/backup-manifest/v2")
    yield "kind-unknown", lambda m: _set_at(m, ("kind",), "export")
    yield "kind-case", lambda m: _set_at(m, ("kind",), "RUN")
    yield "format-garbage", lambda m: _set_at(m, ("format",), "rdb; rm -rf /")
    yield "engine-unknown", lambda m: _set_at(m, ("source", "engine"), "cassandra")
    yield "role-unknown", lambda m: _set_at(m, (*first, "role"), "backup")
    yield "role-manifest", lambda m: _set_at(m, (*first, "role"), "manifest")
    yield "sha-upper", lambda m: _set_at(m, (*first, "sha256"), "A" * 64)
    yield "sha-short", lambda m: _set_at(m, (*first, "sha256"), "0" * 63)
    yield "sha-long", lambda m: _set_at(m, (*first, "sha256"), "0" * 65)
    yield "sha-not-hex", lambda m: _set_at(m, (*first, "sha256"), "g" * 64)
    yield "sha-spaced", lambda m: _set_at(m, (*first, "sha256"), " " + "0" * 63)
    yield "plain-sha-not-hex", lambda m: _set_at(m, (*first, "plain_sha256"), "z" * 64)
    yield "fingerprint-garbage", lambda m: _set_at(m, ("datasets", 0, "fingerprint"), "afp1:x")
    yield (
        "fingerprint-profile",
        lambda m: _set_at(m, ("datasets", 0, "fingerprint"), "afp1:fuzzy:b12:n1:" + "0" * 64),
    )
    yield "classification", lambda m: _set_at(m, ("datasets", 0, "classification"), "secret")
    yield "encryption-format", lambda m: _set_at(m, ("encryption", "format"), "gpg")
    yield "time-no-offset", lambda m: _set_at(m, ("started_at",), "2026-12-05T03:11:17")
    yield "time-zulu", lambda m: _set_at(m, ("started_at",), "2026-12-05T03:11:17Z")
    yield "time-date-only", lambda m: _set_at(m, ("retain_until",), "2027-01-09")
    yield "time-garbage", lambda m: _set_at(m, ("retain_until",), "next tuesday")
    yield "time-spaced", lambda m: _set_at(m, ("retain_until",), "2027-01-09 03:11:17+00:00")
    yield "duplicate-artifact", lambda m: m["artifacts"].append(copy.deepcopy(m["artifacts"][0]))
    yield "duplicate-dataset", lambda m: m["datasets"].append(copy.deepcopy(m["datasets"][0]))
    yield "mode-unknown", lambda m: _set_at(m, ("consistency", "mode"), "eventual")
    yield "mode-mixed", lambda m: _set_at(m, ("consistency", "cluster_time"), {"t": 1, "i": 1})
    yield "mode-null-member", lambda m: _set_at(m, ("consistency", "note"), None)
    yield "artifacts-an-object", lambda m: _set_at(m, ("artifacts",), {"0": m["artifacts"][0]})
    yield "artifact-a-list", lambda m: _set_at(m, first, list(m["artifacts"][0].items()))
    yield "deeply-nested", lambda m: _set_at(m, ("source",), _deep(200))
    yield "int-beyond-2**53", lambda m: _set_at(m, (*first, "size"), 2**63)
    yield "float-for-int", lambda m: _set_at(m, (*first, "size"), 1e3)
    yield "nan", lambda m: _set_at(m, (*first, "size"), float("nan"))
    yield "key-not-a-string", lambda m: _set_at(m, (1,), "x")
    del base


def _deep(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"a": value}
    return value


MUTATIONS = list(_mutations())
for _mode, _path in BASES.items():
    for _name, _change in _semantic(_predicate(_path)):
        _mutated = _predicate(_path)
        _change(_mutated)
        MUTATIONS.append((f"{_mode}:{_name}", _mutated))
MUTATIONS += [
    ("not-an-object", []),  # type: ignore[list-item]
    ("null", None),  # type: ignore[list-item]
    ("a-string", "manifest"),  # type: ignore[list-item]
    ("empty", {}),
]


def test_the_mutations_cover_every_member() -> None:
    assert len(MUTATIONS) > 500
    names = {name for name, _ in MUTATIONS}
    for where, _ in _walk(_predicate(BASES["per-collection"])):
        if where and isinstance(where[-1], str) and _pattern(where) not in OPTIONAL:
            assert f"per-collection:drop:{_pattern(where)}" in names


@pytest.mark.parametrize(("name", "predicate"), MUTATIONS, ids=[n for n, _ in MUTATIONS])
def test_a_malformed_manifest_is_refused_with_the_one_error(
    name: str, predicate: dict[str, Any]
) -> None:
    with pytest.raises(PredicateError) as refused:
        BackupManifest.from_predicate(predicate)
    assert refused.value.message.startswith("manifest"), refused.value.message
    assert refused.value.hint


def test_the_refusal_names_the_member() -> None:
    predicate = _predicate(BASES["rdb-snapshot"])
    predicate["artifacts"][1]["size"] = -5
    with pytest.raises(PredicateError, match=r"^manifest\.artifacts\[1\]\.size must be"):
        BackupManifest.from_predicate(predicate)
    del predicate["artifacts"][1]["size"]
    with pytest.raises(PredicateError, match=r"^manifest\.artifacts\[1\]\.size is missing"):
        BackupManifest.from_predicate(predicate)


def test_optional_members_may_be_left_out() -> None:
    predicate = _predicate(BASES["per-collection"])
    del predicate["consistency"]["operation_time_before"]
    del predicate["consistency"]["operation_time_after"]
    manifest = BackupManifest.from_predicate(predicate)
    assert _canonical(manifest.to_predicate()) == _canonical(predicate)
    snapshot = {**predicate, "consistency": {"mode": "snapshot", "cluster_time": {"t": 5, "i": 1}}}
    assert BackupManifest.from_predicate(snapshot).consistency.cluster_time == OpTime(t=5, i=1)


# -- malformed verification and drill results -----------------------------------------------------


def _result_mutations() -> Iterator[tuple[str, type[Any], dict[str, Any]]]:
    for kind, reader, (_, base) in (
        ("verification", VerificationPredicate, VERIFICATIONS[2]),  # the one with findings
        ("drill", DrillPredicate, DRILLS[0]),
    ):
        for key in base:
            mutated = copy.deepcopy(base)
            del mutated[key]
            yield f"{kind}:drop:{key}", reader, mutated
            nullable = key in ("manifest_sha256", "sample", "against_source", "scratch")
            for n, wrong in enumerate(_wrong_values(key, base[key], nullable)):
                if base[key] is None and isinstance(wrong, dict):
                    continue  # an object where null stands may be valid (a sample, a scratch)
                mutated = copy.deepcopy(base)
                mutated[key] = wrong
                yield f"{kind}:{key}={type(wrong).__name__}{n}", reader, mutated
        yield f"{kind}:extra", reader, {**base, "extra": 1}
        yield (
            f"{kind}:finding-code",
            reader,
            {
                **base,
                "findings": [{"code": "all-good", "message": "", "subject": "", "details": {}}],
            },
        )
        yield (
            f"{kind}:finding-extra",
            reader,
            {
                **base,
                "findings": [
                    {"code": "drift", "message": "", "subject": "", "details": {}, "x": 1}
                ],
            },
        )
        yield (
            f"{kind}:finding-details",
            reader,
            {**base, "findings": [{"code": "drift", "message": "", "subject": "", "details": []}]},
        )
        yield (
            f"{kind}:finding-nan",
            reader,
            {
                **base,
                "findings": [
                    {"code": "drift", "message": "", "subject": "", "details": {"x": float("inf")}}
                ],
            },
        )
        yield f"{kind}:time", reader, {**base, "started_at": "yesterday"}
        yield f"{kind}:sha", reader, {**base, "manifest_sha256": "F" * 64}
    _, verification = VERIFICATIONS[0]
    for name, sample in (
        ("zero", {"percent": 0, "seed": "s"}),
        ("over", {"percent": 101, "seed": "s"}),
        ("no-seed", {"percent": 5}),
        ("bool", {"percent": True, "seed": "s"}),
        ("extra", {"percent": 5, "seed": "s", "n": 1}),
    ):
        yield (
            f"verification:sample-{name}",
            VerificationPredicate,
            {**verification, "sample": sample},
        )
    yield "verification:kind", VerificationPredicate, {**verification, "kind": "quick"}
    _, drill = DRILLS[0]
    yield "drill:phase-bool", DrillPredicate, {**drill, "phases": {**drill["phases"], "load": True}}
    yield "drill:phase-negative", DrillPredicate, {**drill, "phases": {"load": -0.5}}
    yield "drill:rto-negative", DrillPredicate, {**drill, "rto_seconds": -1}
    yield "drill:engine", DrillPredicate, {**drill, "engine": "dynamodb"}
    yield (
        "drill:dataset-match",
        DrillPredicate,
        {**drill, "datasets": [{**drill["datasets"][0], "match": "yes"}]},
    )
    yield "drill:probe-a-list", DrillPredicate, {**drill, "probes": [[1, 2]]}


RESULT_MUTATIONS = list(_result_mutations())


@pytest.mark.parametrize(
    ("name", "reader", "predicate"), RESULT_MUTATIONS, ids=[n for n, _, _ in RESULT_MUTATIONS]
)
def test_a_malformed_result_is_refused_with_the_one_error(
    name: str, reader: Any, predicate: dict[str, Any]
) -> None:
    with pytest.raises(PredicateError):
        reader.from_predicate(predicate)
