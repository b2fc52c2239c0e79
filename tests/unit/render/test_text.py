"""Recorded messages shown later: backticks become code, "N min ago" is said against the
check that wrote it, everything is escaped."""

from __future__ import annotations

from datetime import UTC, datetime

from affidavit.render.text import anchor_relative_times, message_html

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_backticks_become_code_and_the_rest_is_escaped() -> None:
    html = message_html("inherits <b>internal</b>; classify it (`affidavit dataset classify`)")
    assert html == (
        "inherits &lt;b&gt;internal&lt;/b&gt;; classify it "
        "(<code>affidavit dataset classify</code>)"
    )
    assert message_html("`<script>`") == "<code>&lt;script&gt;</code>"
    assert message_html("one ` alone") == "one ` alone"  # an unpaired backtick stays text


def test_relative_times_are_anchored_to_the_check_that_wrote_them() -> None:
    text = "vf-1 passed 0 min ago; last 3.5 days ago; 2.0 h ago"
    assert anchor_relative_times(text, AT) == (
        "vf-1 passed 0 min before the check at 2026-12-05 09:00 UTC; last 3.5 days before "
        "the check at 2026-12-05 09:00 UTC; 2.0 h before the check at 2026-12-05 09:00 UTC"
    )
    assert anchor_relative_times(text, None) == text
    assert "ago" not in message_html(text, AT)
    assert anchor_relative_times("a chicago ago-go", AT) == "a chicago ago-go"
