"""The access entry value type: canonical bytes (RFC 8785), parsing of untrusted entries, and
the request helpers (user-agent parsing, outcomes, clipping of hostile text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError
from affidavit.models.access import AccessEntry, Device, DeviceType, Outcome
from affidavit.services import access_log as svc

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.0 Mobile/15E148 Safari/604.1"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def _entry(**changes: object) -> AccessEntry:
    values: dict[str, object] = {
        "seq": 7,
        "time": "2026-12-01T12:00:00.000001Z",
        "identity": "alice",
        "auth_method": "session",
        "method": "GET",
        "route": "/api/v1/backups/{backup_id}",
        "outcome": Outcome.ALLOWED,
        "client_ip": "192.0.2.7",
        "user_agent": "curl/8.5.0",
        "device": Device(type=DeviceType.CLIENT, browser="curl 8"),
        "subject": "backup:bk-1",
        "status": 200,
        "latency_us": 1500,
    }
    values.update(changes)
    return AccessEntry(**values)  # type: ignore[arg-type]


def test_the_canonical_bytes_are_rfc8785_and_parse_back() -> None:
    entry = _entry()
    data = entry.canonical()
    assert data == bytes(rfc8785.dumps(entry.to_json()))
    assert data.startswith(b'{"auth_method":"session","client_ip":"192.0.2.7","device":{')
    assert AccessEntry.from_canonical(data) == entry
    assert entry.action == "GET /api/v1/backups/{backup_id}"


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(min_size=1, max_size=60),
    agent=st.one_of(st.none(), st.text(max_size=80)),
    latency=st.integers(min_value=0, max_value=2**53 - 1),
)
def test_the_fast_encoder_prints_what_rfc8785_prints(
    text: str, agent: str | None, latency: int
) -> None:
    """Hostile text (quotes, backslashes, control characters, U+2028, non-BMP) prints the same
    through the C encoder as through the reference one."""
    try:
        text.encode("utf-8")
        if agent is not None:
            agent.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are refused by the value type itself
    entry = _entry(identity=text, subject=text, user_agent=agent, latency_us=latency)
    assert entry.canonical() == bytes(rfc8785.dumps(entry.to_json()))
    assert AccessEntry.from_canonical(entry.canonical()) == entry


@pytest.mark.parametrize(
    ("defect", "data"),
    [
        ("not JSON", b"{"),
        ("spaces", json.dumps(_entry().to_json(), sort_keys=True).encode()),
        ("extra member", _entry().canonical()[:-1] + b',"zz":1}'),
        ("missing member", json.dumps({"seq": 1}).encode()),
        ("a float", _entry().canonical().replace(b'"latency_us":1500', b'"latency_us":1.5')),
        ("bad outcome", _entry().canonical().replace(b'"allowed"', b'"maybe"')),
        ("nested deep", b"[" * 100_000 + b"]" * 100_000),
        ("seq null", _entry().canonical().replace(b'"seq":7', b'"seq":null')),
    ],
)
def test_an_untrusted_entry_that_is_not_canonical_is_refused(defect: str, data: bytes) -> None:
    with pytest.raises(FormatError):
        AccessEntry.from_canonical(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"time": "2026-12-01 12:00:00"},
        {"identity": ""},
        {"method": "get"},
        {"seq": -1},
        {"status": 42},
        {"latency_us": True},
        {"identity": "x" * 600},
        {"identity": "\ud800"},
        {"outcome": "maybe"},
    ],
)
def test_an_invalid_entry_cannot_exist(changes: dict[str, object]) -> None:
    with pytest.raises(FormatError):
        _entry(**changes)


def test_an_unnumbered_entry_has_no_canonical_form() -> None:
    with pytest.raises(FormatError, match="numbered"):
        _entry(seq=None).canonical()


@pytest.mark.parametrize(
    ("agent", "kind", "os_name", "browser"),
    [
        (IPHONE, DeviceType.MOBILE, "iOS 17", "Mobile Safari 17"),
        (IPAD, DeviceType.TABLET, "iOS 16", "Mobile Safari 16"),
        (WINDOWS, DeviceType.DESKTOP, "Windows 10", "Chrome 120"),
        (GOOGLEBOT, DeviceType.BOT, None, "Googlebot 2"),
        ("curl/8.5.0", DeviceType.CLIENT, None, "curl 8"),
        ("affidavit-cli/0.1.0", DeviceType.CLIENT, None, "affidavit-cli"),
        (None, DeviceType.UNKNOWN, None, None),
        ("", DeviceType.UNKNOWN, None, None),
        ("???", DeviceType.UNKNOWN, None, None),
    ],
)
def test_the_device_comes_from_the_user_agent_parser(
    agent: str | None, kind: DeviceType, os_name: str | None, browser: str | None
) -> None:
    assert svc.device_of(agent) == Device(type=kind, os=os_name, browser=browser)


def test_a_hostile_request_is_logged_not_refused() -> None:
    entry = svc.request_entry(
        started=datetime(2026, 12, 1, 13, 0, tzinfo=UTC),
        identity="x" * 10_000 + "\ud800",
        auth_method=None,
        method="get",
        route="/api/v1/login",
        outcome="failed",
        user_agent="A" * 100_000,
        client_ip="198.51.100.1",
        status=401,
        latency_us=-5,
    )
    assert len(entry.identity) == 512
    assert entry.user_agent is not None
    assert len(entry.user_agent) == 1024
    assert entry.auth_method == "none"
    assert entry.method == "GET"
    assert entry.latency_us == 0
    assert entry.outcome is Outcome.FAILED
    assert entry.time == "2026-12-01T13:00:00.000000Z"
    assert svc.request_entry(
        started=datetime(2026, 12, 1, tzinfo=UTC), identity=None, auth_method=None,
        method="BREW COFFEE", route="", outcome="allowed",
    ).identity == "anonymous"  # fmt: skip


@pytest.mark.parametrize(
    ("status", "login", "outcome"),
    [
        (200, False, Outcome.ALLOWED),
        (404, False, Outcome.ALLOWED),
        (401, False, Outcome.DENIED),
        (403, False, Outcome.DENIED),
        (401, True, Outcome.FAILED),
        (429, True, Outcome.FAILED),
        (500, False, Outcome.ERROR),
        (503, True, Outcome.ERROR),
    ],
)
def test_outcome_for_status(status: int, login: bool, outcome: Outcome) -> None:
    assert svc.outcome_for_status(status, login=login) is outcome


def test_subject_from_params() -> None:
    assert svc.subject_from_params({"backup_id": "bk-1"}) == "backup:bk-1"
    assert svc.subject_from_params({"request_id": "r1", "x": "y"}) == "request:r1"
    assert svc.subject_from_params({}) is None
