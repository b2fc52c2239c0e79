"""The pieces of the audit and calendar pages that decide something without a server: the
upload form's anti-CSRF field read from a multipart body (only a plain field part counts,
never a file part or a lookalike), the month a URL names, the month grid, and where a
calendar item may lead its viewer (docs/web.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from affidavit.errors import InputError
from affidavit.models.calendar import CalendarItem, ItemKind, ItemState
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.models.permissions import ROLES, Role
from affidavit.server.web.calendar_page import link_of, month_grid, parse_month
from affidavit.server.web.security import multipart_field

TYPE = b"multipart/form-data; boundary=----WebKitFormBoundaryAbC123"
DELIMITER = b"------WebKitFormBoundaryAbC123"


def _body(*parts: bytes) -> bytes:
    return b"".join(DELIMITER + b"\r\n" + p + b"\r\n" for p in parts) + DELIMITER + b"--\r\n"


def test_the_token_is_the_plain_field_part() -> None:
    body = _body(
        b'Content-Disposition: form-data; name="csrf_token"\r\n\r\ntok-123',
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello",
    )
    assert multipart_field(body, TYPE, "csrf_token") == "tok-123"
    assert multipart_field(body, TYPE.replace(b"=----", b'="----') + b'"', "csrf_token") == (
        "tok-123"
    )


@pytest.mark.parametrize(
    "body",
    [
        # the token smuggled in a file part's content or name: never taken
        _body(
            b'Content-Disposition: form-data; name="csrf_token"; filename="x"\r\n'
            b"Content-Type: text/plain\r\n\r\ntok-123"
        ),
        _body(b'Content-Disposition: form-data; name="file"\r\n\r\ncsrf_token=tok-123'),
        _body(b'Content-Disposition: form-data; name="csrf_token_x"\r\n\r\ntok-123'),
        _body(b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n' + b"x" * 201),
        _body(b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n\xff\xfe'),
        b"csrf_token=tok-123",  # not multipart at all
        b"",
    ],
)
def test_anything_else_gives_no_token(body: bytes) -> None:
    assert multipart_field(body, TYPE, "csrf_token") == ""


def test_a_body_without_its_boundary_gives_no_token() -> None:
    body = _body(b'Content-Disposition: form-data; name="csrf_token"\r\n\r\ntok-123')
    assert multipart_field(body, b"multipart/form-data", "csrf_token") == ""
    assert multipart_field(body, b"multipart/form-data; boundary=other", "csrf_token") == ""


def test_the_month_of_a_url() -> None:
    today = date(2026, 12, 5)
    assert parse_month(None, today) == date(2026, 12, 1)
    assert parse_month("2027-02", today) == date(2027, 2, 1)
    for bad in ("2026-13", "2026", "x-y", "99999-01", "0-01", "2026-00", "-1-01"):
        with pytest.raises(InputError, match="YYYY-MM"):
            parse_month(bad, today)


def _item(day: int, state: ItemState, subject: str, link: str | None) -> CalendarItem:
    return CalendarItem(
        id=f"i-{day}-{subject}",
        title=f"item {day}",
        kind=ItemKind.AUDIT,
        subject=subject,
        due=datetime(2026, 12, day, 9, tzinfo=UTC),
        state=state,
        link=link,
    )


def _who(role: Role) -> Principal:
    return Principal(
        name="p",
        kind=AccountKind.HUMAN,
        method=AuthMethod.SESSION,
        roles=frozenset({role}),
        permissions=ROLES[role],
    )


def test_the_month_grid_puts_each_item_on_its_day() -> None:
    items = (
        _item(2, ItemState.OVERDUE, "audit-request:pbc-1", "ledger:7"),
        _item(2, ItemState.UPCOMING, "backup:bk-1", "backup:bk-1"),
        _item(31, ItemState.DUE, "audit:ae-1", "ledger:3"),
    )
    weeks = month_grid(date(2026, 12, 1), items, _who(Role.OPERATOR), date(2026, 12, 5))
    assert all(len(w) == 7 for w in weeks) and 4 <= len(weeks) <= 6
    assert weeks[0][0].day == date(2026, 11, 30) and not weeks[0][0].in_month  # a Monday
    days = {d.day: d for w in weeks for d in w}
    assert [s.item.title for s in days[date(2026, 12, 2)].items] == ["item 2", "item 2"]
    assert days[date(2026, 12, 2)].overdue == 1
    assert days[date(2026, 12, 5)].today and not days[date(2026, 12, 4)].today
    assert len(days[date(2026, 12, 31)].items) == 1


def test_an_item_leads_only_where_its_viewer_may_go() -> None:
    request = _item(2, ItemState.OVERDUE, "audit-request:pbc-1", "ledger:7")
    backup = _item(3, ItemState.DUE, "backup:bk-1", "backup:bk-1")
    deadline = _item(4, ItemState.DUE, "deadline:dl-1", "ledger:9")
    operator, viewer = _who(Role.OPERATOR), _who(Role.VIEWER)
    assert link_of(request, operator) == "/audit/requests/pbc-1"
    assert link_of(backup, operator) == "/backups/bk-1"
    assert link_of(deadline, operator) == "/ledger#seq-9"
    assert link_of(request, viewer) is None  # no audit.read
    assert link_of(backup, viewer) == "/backups/bk-1"
    assert link_of(deadline, viewer) is None  # no ledger.read
    assert link_of(backup, _who(Role.AUDITOR)) is None


def test_a_login_lands_where_the_person_may_look() -> None:
    """The password form and single sign-on (its continue page) share one rule: the
    dashboard, except for a person who may not read it (an auditor: its engagements)."""
    from affidavit.server.web.pages import landing

    assert landing(_who(Role.OPERATOR)) == "/"
    assert landing(_who(Role.AUDITOR)) == "/audit"
    assert landing(_who(Role.AUDITOR), "/audit/requests") == "/audit/requests"
    assert landing(_who(Role.OPERATOR), "/backups") == "/backups"
