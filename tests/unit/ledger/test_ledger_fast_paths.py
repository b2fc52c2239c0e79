"""The append path's shortcuts give exactly what the reference code gives: the canonical
entry bytes (RFC 8785), the event time text, and a log resumed from a remembered state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.catalog.store import Catalog
from affidavit.ledger import merkle
from affidavit.ledger.log import LedgerLog, LogState, canonical_entry, utc_text
from affidavit.models.ledger import ClientInfo, Event, rfc3339_utc

# strings that stress escaping and encoding: controls, quotes, backslash, DEL, non-ASCII,
# characters beyond the BMP (UTF-16 surrogate pairs) and lone surrogates (not UTF-8)
_TRICKY = st.sampled_from(
    ["", '"', "\\", "/", "\x00", "\x1f", "\x7f", "\b\f\n\r\t", "\u2028", "é", "\ue000", "😀",
     "\ud800", "a\udfffb", "\u0085"]
)  # fmt: skip
_TEXT = st.one_of(st.text(), _TRICKY, st.lists(_TRICKY, max_size=4).map("".join))
_INTS = st.one_of(
    st.integers(min_value=-(2**53) - 3, max_value=-(2**53) + 3),
    st.integers(min_value=2**53 - 3, max_value=2**53 + 3),
    st.integers(),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, st.floats(allow_nan=False), _TEXT)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_TEXT, inner, max_size=4),
    ),
    max_leaves=20,
)


def _event(details: dict[str, Any], *, subject: str = "s", agent: str | None = "x") -> Event:
    return Event(
        seq=7,
        time="2026-01-01T00:00:00.000000Z",
        actor="a@example.com",
        action="test.fast",
        subject=subject,
        details=details,
        client=ClientInfo(agent=agent),
    )


def _outcome(fn: Any) -> bytes | type[BaseException]:
    try:
        return bytes(fn())
    except Exception as exc:  # the reference's error type is part of the contract
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(details=st.dictionaries(_TEXT, _JSON, max_size=5), subject=_TEXT)
def test_canonical_entry_is_byte_for_byte_the_reference(
    details: dict[str, Any], subject: str
) -> None:
    event = _event(details, subject=subject)
    assert _outcome(lambda: canonical_entry(event)) == _outcome(event.canonical)


_ASCII_KEYS = st.text(alphabet=st.characters(max_codepoint=127), max_size=6)
_FAST_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _INTS, _TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_ASCII_KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(details=st.dictionaries(_ASCII_KEYS, _FAST_JSON, max_size=6), subject=_TEXT)
def test_canonical_entry_with_ascii_keys_is_the_reference(
    details: dict[str, Any], subject: str
) -> None:
    event = _event(details, subject=subject)
    assert _outcome(lambda: canonical_entry(event)) == _outcome(event.canonical)


def test_canonical_entry_of_a_usual_event_skips_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = _event({"dataset": "orders", "bytes": 123, "tags": ["a", "é"], "x": {"y": None}})
    expected = event.canonical()

    def refuse(self: Event) -> bytes:
        raise AssertionError("the reference encoder was used")

    monkeypatch.setattr(Event, "canonical", refuse)
    assert canonical_entry(event) == expected


@pytest.mark.parametrize(
    "details",
    [
        {"n": 2**53 - 1, "m": -(2**53) + 1, "ok": True, "none": None, "list": [1, "x", []]},
        {"b": {"z": 1, "a": {"y": [{"k": '\x01\x1f"\\'}]}}, "a": ()},
        {"B": 1, "a": 2, "_": 3, "~": 4},
        {"é": 1, "z": 2},  # non-ASCII key: left to the reference
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order differs from code point order
        {"f": 1.5, "g": 1e21, "h": -0.0},  # floats: left to the reference
        {"big": 2**53},  # out of the safe range: the reference raises
        {"s": "\ud800"},  # a lone surrogate: the reference raises
    ],
)
def test_canonical_entry_matches_the_reference_on_the_edges(details: dict[str, Any]) -> None:
    event = _event(details, agent=None)
    assert _outcome(lambda: canonical_entry(event)) == _outcome(event.canonical)
    assert _outcome(lambda: canonical_entry(event)) == _outcome(
        lambda: rfc8785.dumps(event.to_json())
    )


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
    )
)
def test_utc_text_is_rfc3339_utc(moment: datetime) -> None:
    assert _outcome(lambda: utc_text(moment).encode()) == _outcome(
        lambda: rfc3339_utc(moment).encode()
    )


def test_utc_text_refuses_naive_time_like_the_reference() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_text(datetime(2026, 1, 1))


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    store = Catalog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.upgrade()
    yield store
    store.close()


def test_a_resumed_log_appends_and_proves_like_a_fresh_one(catalog: Catalog) -> None:
    state: LogState | None = None
    for i in range(37):
        with catalog.unit_of_work() as uow:
            log = LedgerLog(uow.ledger, state=state)
            log.append(actor="a", action="test.resume", subject=f"s:{i}", details={"i": i})
            if i % 3 == 0:
                log.append(actor="a", action="test.resume", subject=f"t:{i}")
            state = log.state()
        with catalog.reader() as uow:
            leaves = [merkle.leaf_hash(e.entry) for e in uow.ledger.entries()]
            fresh = LedgerLog(uow.ledger)
            assert fresh.state() == state
            assert state.root == merkle.root(leaves) == fresh.root()
    assert state is not None
    with catalog.reader() as uow:
        resumed = LedgerLog(uow.ledger, state=state)
        for index in range(0, state.size, 5):
            assert resumed.inclusion_proof(index) == merkle.inclusion_proof(leaves, index)
        for old in range(1, state.size + 1, 4):
            assert resumed.consistency_proof(old) == merkle.consistency_proof(leaves, old)


def test_a_log_refuses_a_size_that_contradicts_its_state(catalog: Catalog) -> None:
    with catalog.reader() as uow:
        state = LedgerLog(uow.ledger).state()
        assert state == LogState(size=0, frontier=())
        assert state.root == merkle.root([])
        with pytest.raises(ValueError, match="cannot resume"):
            LedgerLog(uow.ledger, size=1, state=state)
