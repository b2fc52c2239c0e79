"""Session 10 attack pass on the new export inputs (Redis keys and their glob), consent
sources, ODCS contracts and nested CSV/Parquet columns (commits f105609, 0544ab2, 48b6047).

Each finding is a test that failed on the code as found and passes with its fix; what held
is tested too, where a cheap test could show it. ODCS documents are checked with the real
official schema (the pinned open-data-contract-standard package); the CLI runs for real.
Nothing is mocked."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from affidavit.errors import FormatError, InputError
from affidavit.models.export import Contract, OutputFormat
from affidavit.models.key_pattern import MAX_PATTERN_BYTES, KeyPattern
from affidavit.models.odcs import parse_odcs
from affidavit.services.exports.consent import (
    NO_CONSENT,
    NOT_VALID,
    load_consents,
    subject_text,
)
from affidavit.services.exports.encodings import Encoder, StrayColumns, read_records
from affidavit.services.exports.verify import ExportVerification, _check_records

DOC = """\
apiVersion: v3.0.2
kind: DataContract
id: 53581432-6c55-4ba2-a65f-72344a91553a
version: 1.0.0
status: active
schema:
  - name: customers
    logicalType: object
    properties:
      - name: _id
        logicalType: integer
        primaryKey: true
      - name: country
        logicalType: string
        required: true
      - name: email
        logicalType: string
        logicalTypeOptions: {maxLength: 30}
      - name: age
        logicalType: integer
        logicalTypeOptions: {minimum: 0}
      - name: tags
        logicalType: array
        items:
          logicalType: string
      - name: address
        logicalType: object
        properties:
          - name: city
            logicalType: string
            quality:
              - type: text
                description: the city people write
"""


def _refused(text: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_odcs(text)
    assert words in caught.value.message, caught.value.message


def test_the_base_document_is_accepted() -> None:
    contract = parse_odcs(DOC)
    assert contract.schema["required"] == ["_id", "country"]


# --- ODCS: a member given twice (YAML and JSON keep the last one silently) -----------------


def test_odcs_a_member_given_twice_in_yaml_is_refused() -> None:
    """Found: `required: true` then `required: false` on one property was read as not
    required (PyYAML keeps the last), so the contract was weaker than the document reads."""
    doc = DOC.replace(
        "        required: true\n", "        required: true\n        required: false\n"
    )
    _refused(doc, "gives the member 'required' twice")


def test_odcs_a_member_given_twice_in_a_yaml_flow_mapping_is_refused() -> None:
    doc = DOC.replace("{minimum: 0}", "{minimum: 0, minimum: -100}")
    _refused(doc, "gives the member 'minimum' twice")


def test_odcs_a_member_given_twice_in_json_is_refused() -> None:
    data = yaml.load(DOC, Loader=yaml.SafeLoader)
    text = json.dumps(data)
    doubled = text.replace('"required": true', '"required": true, "required": false', 1)
    assert doubled != text
    _refused(doubled, "gives the member 'required' twice")


def test_odcs_a_yaml_merge_key_is_refused() -> None:
    """Found: `<<: {required: false}` was merged silently (no alias needed)."""
    doc = DOC.replace(
        "        required: true\n", "        <<: {unique: true}\n        required: true\n"
    )
    _refused(doc, "merge key")


# --- ODCS: nesting (a crash, and the official schema's validator taking minutes) ---------------


def _nested(depth: int, leaves: int = 1) -> str:
    """The base document with one chain of ``depth`` object properties ending in
    ``leaves`` string properties, as JSON."""
    data = yaml.load(DOC, Loader=yaml.SafeLoader)
    node = data["schema"][0]["properties"]
    for level in range(depth - 1):
        child = {"name": f"n{level}", "logicalType": "object", "properties": []}
        node.append(child)
        node = child["properties"]
    node.extend({"name": f"leaf{n}", "logicalType": "string"} for n in range(leaves))
    return json.dumps(data)


def test_odcs_properties_nested_past_any_allowed_path_are_refused_at_once() -> None:
    """Found: 120 nested object properties (12 KB) raised RecursionError out of
    `spec add` (a traceback, not exit 2)."""
    started = time.monotonic()
    _refused(_nested(120), "nests more than 64 levels deep")
    assert time.monotonic() - started < 2


def test_odcs_properties_deeper_than_a_field_path_are_refused_before_the_schema() -> None:
    """Found: the official schema's validator takes ~3x longer per nested level (11 levels a
    minute, 12 three minutes, for a 2 KB document): `spec add`, and the server's, hung. A
    field that leaves has at most 8 segments, so a deeper property describes nothing."""
    started = time.monotonic()
    _refused(_nested(9), "nests properties more than 8 levels deep")
    assert time.monotonic() - started < 2


def test_odcs_many_deep_properties_are_refused_before_the_schema() -> None:
    """Found: 40 properties at depth 8 (3 KB) took a minute to check, and the 128 KiB limit
    allows thousands: a budget on their nesting refuses them at once."""
    started = time.monotonic()
    _refused(_nested(8, leaves=10), "too many properties too deeply")
    assert time.monotonic() - started < 2


def test_odcs_a_usual_nested_document_still_checks_fast() -> None:
    started = time.monotonic()
    contract = parse_odcs(_nested(5, leaves=40))
    assert "n0.n1.n2.n3.leaf39" in contract.paths
    assert time.monotonic() - started < 10


# --- ODCS: bounds that no value meets --------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("{minimum: 0}", "{minimum: 10, maximum: 5}", "bounds 10 and 5"),
        ("{minimum: 0}", "{minimum: 200, format: i8}", "bounds 200 and 127"),
        ("{maxLength: 30}", "{minLength: 10, maxLength: 3}", "minLength 10 is above maxLength 3"),
        (
            "        items:\n",
            "        logicalTypeOptions: {minItems: 4, maxItems: 2}\n        items:\n",
            "minItems 4 is above maxItems 2",
        ),
        (
            "      - name: address\n        logicalType: object\n",
            "      - name: address\n        logicalType: object\n"
            "        logicalTypeOptions: {minProperties: 5, maxProperties: 1}\n",
            "minProperties 5 is above maxProperties 1",
        ),
    ],
)
def test_odcs_inverted_bounds_are_refused(old: str, new: str, words: str) -> None:
    """Found: inverted bounds (and a minimum beyond the integer format's range) were
    accepted: every record would fail a contract that reads as a limit."""
    assert old in DOC
    _refused(DOC.replace(old, new), words)


def test_odcs_exclusive_bounds_that_meet_are_refused() -> None:
    doc = DOC.replace("v3.0.2", "v3.1.0").replace(
        "{minimum: 0}", "{exclusiveMinimum: 5, maximum: 5}"
    )
    _refused(doc, "bounds 5 and 5")
    equal = DOC.replace("{minimum: 0}", "{minimum: 5, maximum: 5}")
    assert parse_odcs(equal).schema["properties"]["age"]["minimum"] == 5  # one value: fine


# --- ODCS: a text rule that reads as a check -------------------------------------------------


def test_odcs_a_text_rule_carrying_a_metric_and_limit_is_refused() -> None:
    """Found: `type: text` with `metric: nullValues, mustBe: 0` passed the official schema
    and was dropped as words for people: the document reads as "no nulls", nothing
    checked it."""
    doc = DOC.replace(
        "              - type: text\n",
        "              - type: text\n                metric: nullValues\n                mustBe: 0\n",
    )
    _refused(doc, "a text rule with metric, mustBe")


# --- ODCS: a composite primary key ---------------------------------------------------------


def test_odcs_a_composite_primary_key_is_refused() -> None:
    """Found: two properties with primaryKey (ODCS: one key of several columns, ordered by
    primaryKeyPosition) became two single-field unique rules, so records that share one
    part of the key (two lines of one order) failed a contract the document does not
    state."""
    doc = DOC.replace(
        "        primaryKey: true\n",
        "        primaryKey: true\n        primaryKeyPosition: 1\n",
    ).replace(
        "        required: true\n",
        "        required: true\n        primaryKey: true\n        primaryKeyPosition: 2\n",
    )
    _refused(doc, "primary key has several properties (_id, country)")


# --- ODCS: what held -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        ("x: !!python/object/apply:os.system ['true']\n", "not valid YAML or JSON"),
        ("x: &a [1]\ny: *a\n", "uses a YAML alias"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    ],
)
def test_odcs_hostile_yaml_is_refused(tail: str, words: str) -> None:
    _refused(DOC + tail, words)


def test_odcs_numbers_given_as_strings_are_refused_by_the_schema() -> None:
    doc = DOC.replace("{minimum: 0}", "{minimum: '0'}")
    _refused(doc, "is not of type 'number'")


def test_odcs_a_document_over_128_kib_is_refused() -> None:
    _refused(DOC + "# " + "x" * 131072 + "\n", "larger than 128 KiB")


# --- Redis key pattern: what held ------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "*a" * (MAX_PATTERN_BYTES // 2 - 1) + "b",
        "*?" * (MAX_PATTERN_BYTES // 2),
        "*[a-z]" * (MAX_PATTERN_BYTES // 6),
    ],
)
def test_key_pattern_star_runs_do_not_backtrack_exponentially(pattern: str) -> None:
    """Redis's own skipLongerMatches bounds `*a*a*...b` against long keys: linear here too,
    and the 256-byte cap bounds the recursion (128 levels at most)."""
    matcher = KeyPattern.parse(pattern).matcher()
    started = time.monotonic()
    for key in (b"a" * 100_000, b"ab" * 50_000 + b"c"):
        matcher(key)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * (MAX_PATTERN_BYTES + 1), 7, None])
def test_key_pattern_bad_values_are_input_errors(bad: Any) -> None:
    with pytest.raises(InputError):
        KeyPattern.parse(bad)


def test_key_pattern_matches_bytes_not_characters() -> None:
    pattern = KeyPattern.parse("h?llo")
    assert pattern.match(b"h\xffllo")  # not UTF-8: one byte
    assert not pattern.match("h\u00e9llo".encode())  # two bytes


# --- the CLI: bad ODCS input is exit 2, one line and a hint, nothing recorded ------------------


SPEC = """
name = "attack-odcs"
purpose = "research"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "/tmp"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "keep"
country = "keep"
email = "keep"
age = "keep"
tags = "keep"
"address.city" = "keep"

[contract]
odcs = '''
{odcs}'''
"""


def _ledger_size(home: Path) -> int:
    import sqlite3

    path = home / "catalog.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        (n,) = db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
    return int(n)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (
            DOC.replace(
                "        required: true\n", "        required: true\n        required: false\n"
            ),
            "gives the member 'required' twice",
        ),
        (DOC.replace("{minimum: 0}", "{minimum: 10, maximum: 5}"), "bounds 10 and 5"),
        (
            _nested(9),
            "nests properties more than 8 levels deep",
        ),
    ],
)
def test_cli_spec_add_refuses_weakened_or_hostile_odcs(
    cli: Any, home: Path, tmp_path: Path, doc: str, words: str
) -> None:
    before = _ledger_size(home)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(odcs=doc))
    started = time.monotonic()
    result = cli("export", "spec", "add", str(spec))
    assert time.monotonic() - started < 10
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0], result.err
    assert lines[-1].startswith("hint: ")
    assert len(lines) == 2
    assert "Traceback" not in result.err
    assert _ledger_size(home) == before


# --- nested CSV/Parquet read back at the destination: what held -----------------------------

FIELDS = ("_id", "address.city")


def _read(path: Path, fmt: OutputFormat) -> list[Any]:
    return [record for _, record in read_records(path, fmt, FIELDS)]


def test_csv_a_header_with_a_path_and_its_parent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b'_id,address.city,address\r\n1,Paris,"{""ssn"":""1""}"\r\n')
    (problem,) = _read(path, OutputFormat.CSV)
    assert isinstance(problem, StrayColumns) and problem.stray == ("address",)


def test_csv_a_quoted_cell_cannot_smuggle_a_column(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b'_id,address.city\r\n1,"Paris",ssn\r\n2,"Lyon"",ssn"\r\n')
    first, second = _read(path, OutputFormat.CSV)
    assert isinstance(first, FormatError) and "3 cells, not 2" in first.message
    assert second == {"_id": 2, "address": {"city": 'Lyon",ssn'}}  # one cell, its text


def test_csv_duplicated_column_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"_id,address.city,address.city\r\n1,Paris,Lyon\r\n")
    (problem,) = _read(path, OutputFormat.CSV)
    assert isinstance(problem, FormatError) and "not the allow-list" in problem.message


def test_csv_a_json_looking_string_is_written_quoted_and_reads_back_a_string(
    tmp_path: Path,
) -> None:
    """A source string that reads as JSON (an object hiding a field outside the allow-list)
    is written as its JSON string, so it never reads back as a document."""
    record = {"_id": 1, "address": {"city": '{"ssn": "1-23"}'}}
    encoder = Encoder(OutputFormat.CSV, FIELDS)
    path = tmp_path / "out.csv"
    path.write_bytes(encoder.header() + encoder.encode(record) + encoder.finish())
    (back,) = _read(path, OutputFormat.CSV)
    assert back == record


@pytest.mark.parametrize("fmt", [OutputFormat.CSV, OutputFormat.PARQUET])
def test_a_string_starting_like_a_huge_number_reads_back_a_string(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    """The fix above must not misread a hex pseudonym such as `1436e1848c47...`: JSON's
    scanner meets the number `1436e1848` (beyond a double) before it fails on the rest."""
    records = [
        {"_id": "1436e1848c470b036ec43dd2205788b1", "address": {"city": "9e999 rue X"}},
        {"_id": 2, "address": {"city": "1e400"}},  # a string that reads as JSON: quoted
    ]
    encoder = Encoder(fmt, FIELDS)
    path = tmp_path / f"out.{fmt.value}"
    body = b"".join(encoder.encode(r) for r in records)
    path.write_bytes(encoder.header() + body + encoder.finish())
    assert _read(path, fmt) == records


def test_parquet_a_struct_column_of_the_parent_name_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "out.parquet"
    table = pa.table({"_id": ["1"], "address": pa.array([{"city": "Paris", "ssn": "1-23"}])})
    pq.write_table(table, path)
    (problem,) = _read(path, OutputFormat.PARQUET)
    assert isinstance(problem, StrayColumns) and problem.stray == ("address",)


def test_parquet_a_struct_column_of_the_dotted_name_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "out.parquet"
    city = pa.array([{"name": "Paris", "ssn": "1-23"}])
    pq.write_table(pa.table({"_id": ["1"], "address.city": city}), path)
    (problem,) = _read(path, OutputFormat.PARQUET)
    assert isinstance(problem, FormatError) and "not the allow-list as strings" in problem.message


REDIS_SPEC = """
name = "attack-redis"
purpose = "research"
legal_basis = "consent"
recipient = "acme"
destination = "/tmp"

[input]
source = "cache"
dataset = "db0"
{input}

[consent]
{consent}

[fields]
_id = "keep"
"value.email" = "keep"
"""


@pytest.mark.parametrize(
    ("input_line", "consent", "words"),
    [
        ('key_pattern = ""', 'file = "/tmp/c.jsonl"', "input.key_pattern must be a non-empty"),
        (
            f'key_pattern = "{"*a" * 200}"',
            'file = "/tmp/c.jsonl"',
            "longer than 256 bytes or holds a NUL",
        ),
        ('key_pattern = "a\\u0000b"', 'file = "/tmp/c.jsonl"', "holds a NUL"),
        ("key_pattern = 7", 'file = "/tmp/c.jsonl"', "input.key_pattern must be a non-empty"),
        ('key_pattern = "customer:*"', 'source = "cache"', "consent.source needs consent.dataset"),
        (
            'key_pattern = "customer:*"',
            'source = "cache"\nkey_pattern = "consent:*"\nfile = "/tmp/c.jsonl"',
            "names a file and a source",
        ),
        (
            'key_pattern = "customer:*"',
            'source = "cache"\nkey_pattern = ["consent:*"]',
            "consent.key_pattern must be a non-empty",
        ),
    ],
)
def test_cli_spec_add_refuses_bad_redis_selectors(
    cli: Any, home: Path, tmp_path: Path, input_line: str, consent: str, words: str
) -> None:
    before = _ledger_size(home)
    spec = tmp_path / "spec.toml"
    spec.write_text(REDIS_SPEC.format(input=input_line, consent=consent))
    result = cli("export", "spec", "add", str(spec))
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0], result.err
    assert lines[-1].startswith("hint: ") and len(lines) == 2, result.err
    assert _ledger_size(home) == before


# --- consent: what held (semantics now written in docs/exports.md) ---------------------------


def _consent_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "consents.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_consent_same_subject_twice_any_valid_entry_wins(tmp_path: Path) -> None:
    """An expired ("revoked") entry beside a still-open one does not revoke it: any valid
    entry gives consent (a withdrawal is its entry's valid_to), as docs/exports.md says."""
    at = datetime(2026, 6, 1, tzinfo=UTC)
    path = _consent_file(
        tmp_path,
        {"subject": "p1", "purpose": "r", "valid_from": "2026-01-01T00:00:00Z"},
        {
            "subject": "p1",
            "purpose": "r",
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_to": "2026-02-01T00:00:00Z",
        },
        {
            "subject": "p2",
            "purpose": "r",
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_to": "2026-02-01T00:00:00Z",
        },
    )
    consents = load_consents(path, "r")
    assert consents.judge("p1", at) is None
    assert consents.judge("p2", at) == NOT_VALID
    assert consents.judge("p3", at) == NO_CONSENT


def test_consent_window_includes_its_start_and_excludes_its_end(tmp_path: Path) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    path = _consent_file(
        tmp_path,
        {
            "subject": 7,
            "purpose": "r",
            "valid_from": "2026-01-01T01:00:00+01:00",  # the same instant as start
            "valid_to": "2026-02-01T00:00:00Z",
        },
    )
    consents = load_consents(path, "r")
    assert consents.judge("7", start) is None
    assert consents.judge("7", start - timedelta(microseconds=1)) == NOT_VALID
    assert consents.judge("7", end - timedelta(microseconds=1)) is None
    assert consents.judge("7", end) == NOT_VALID


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"subject": "p", "purpose": "r", "valid_from": "2026-01-01T00:00:00"}, "time zone"),
        ({"subject": "p", "purpose": "r", "valid_from": "2026-01-01"}, "time zone"),
        ({"subject": True, "purpose": "r", "valid_from": "2026-01-01T00:00:00Z"}, "subject"),
        ({"subject": "", "purpose": "r", "valid_from": "2026-01-01T00:00:00Z"}, "subject"),
        (
            {
                "subject": "p",
                "purpose": "r",
                "valid_from": "2026-01-01T00:00:00Z",
                "valid_to": "2026-01-01T00:00:00Z",
            },
            "valid_to is not after valid_from",
        ),
        (
            {"subject": "p", "purpose": "r", "valid_from": "2026-01-01T00:00:00Z", "x": 1},
            "unknown key",
        ),
    ],
)
def test_consent_malformed_entries_are_input_errors(
    tmp_path: Path, entry: dict[str, Any], words: str
) -> None:
    with pytest.raises(InputError) as caught:
        load_consents(_consent_file(tmp_path, entry), "r")
    assert "line 1" in caught.value.message and words in caught.value.message


def test_consent_an_objectid_subject_matches_its_hex_text() -> None:
    """Documented: an ObjectId subject is compared as its hex digits, so a string consent
    subject with those digits matches it (and an integer its digits)."""
    hexa = "65f0c0ffee0000000000beef"
    assert subject_text({"$oid": hexa}) == subject_text(hexa) == hexa
    assert subject_text({"$numberLong": "42"}) == subject_text("42")
    assert subject_text({"$numberDouble": "42.0"}) != "42"  # a double is not an integer


# --- export verify: a number beyond a double in a cell or line ---------------------------------


def _verify_records(path: Path, fmt: OutputFormat) -> ExportVerification:
    """The record pass of ``export verify`` over a decrypted output file (its digests,
    which the attacker cannot forge, are checked beside it)."""
    result = ExportVerification(file=path)
    contract = Contract(schema={"type": "object"})
    output = {"records": 2, "fingerprint": "x", "plaintext_sha256": "y"}
    _check_records(result, path, fmt, output, contract, list(FIELDS), "z", ())
    return result


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        (OutputFormat.CSV, b"_id,address.city\r\n1,1e400\r\n2,Paris\r\n"),
        (OutputFormat.CSV, b'_id,address.city\r\n1,"[-1e999]"\r\n2,Paris\r\n'),
        (OutputFormat.EXTJSON, b'{"_id":1e400}\n{"_id":2}\n'),
        (OutputFormat.PARQUET, None),
        (OutputFormat.CSV, b'_id,address.city\r\n1,"""\\ud800"""\r\n2,Paris\r\n'),
        (OutputFormat.CSV, b'_id,address.city\r\n1,"[""\\udfff""]"\r\n2,Paris\r\n'),
        (OutputFormat.EXTJSON, b'{"_id":"\\ud800"}\n{"_id":2}\n'),
        (OutputFormat.EXTJSON, b'{"_id":' + b"[" * 5000 + b"]" * 5000 + b'}\n{"_id":2}\n'),
    ],
)
def test_verify_a_number_beyond_a_double_is_a_discrepancy_not_a_crash(
    tmp_path: Path, fmt: OutputFormat, data: bytes | None
) -> None:
    """Found: a cell (or JSON line) `1e400` parses to infinity, and `"\\ud800"` to a lone
    surrogate, which writing the record again refuses with a ValueError: `export verify` of
    a file altered so (re-encrypted to the recipient's public key) died with a traceback
    instead of listing what is wrong."""
    path = tmp_path / f"out.{fmt.value}"
    if data is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"_id": ["1", "2"], "address.city": ["1e400", "Paris"]}), path)
    else:
        path.write_bytes(data)
    result = _verify_records(path, fmt)
    checks = {d.check for d in result.discrepancies}
    assert "encoding" in checks, result.discrepancies
    words = ("beyond", "surrogate", "nests too deeply")
    assert any(word in d.message for d in result.discrepancies for word in words)
