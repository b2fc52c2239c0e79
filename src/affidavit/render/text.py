"""Recorded texts as HTML: a finding's message, written once by a policy check, shown later.

- Backticks mark code in messages (``backup `bk-1` is 3 days old``): they become ``<code>``
  instead of showing as raw Markdown. Nothing else is interpreted; everything is escaped.
- A message says how long ago something happened *as of the check that wrote it* ("passed 0
  min ago"). Shown later, "ago" would be wrong and frozen, so it is anchored to the moment the
  message was written: "passed 0 min before the check at 2026-12-05 09:00 UTC".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

__all__ = ["anchor_relative_times", "escape", "message_html", "utc_text"]

_AGO: Final = re.compile(r"\b(\d+(?:\.\d+)?)\s+(min|h|hours?|days?|d|s|seconds?)\s+ago\b")
_CODE: Final = re.compile(r"`([^`\n]+)`")
_ENTITIES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}
)


def escape(text: str) -> str:
    """``text`` escaped for HTML text and attributes (the entities Jinja2's autoescape
    writes, so that a page reads the same whichever of the two escaped a value)."""
    return text.translate(_ENTITIES)


def utc_text(moment: datetime) -> str:
    """``2026-12-05 09:00 UTC``."""
    at = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return f"{at:%Y-%m-%d %H:%M} UTC"


def anchor_relative_times(text: str, written_at: datetime | None) -> str:
    """``text`` with each "N unit ago" said against ``written_at`` (plain text, unescaped);
    unchanged without a time."""
    if written_at is None:
        return text
    when = utc_text(written_at)
    return _AGO.sub(lambda m: f"{m.group(1)} {m.group(2)} before the check at {when}", text)


def message_html(text: str, written_at: datetime | None = None) -> str:
    """``text`` as escaped HTML: backtick spans as ``<code>``, relative times anchored to
    ``written_at`` (the caller marks the result safe)."""
    anchored = anchor_relative_times(text, written_at)
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(anchored):
        out.append(escape(anchored[last : match.start()]))
        out.append(f"<code>{escape(match.group(1))}</code>")
        last = match.end()
    out.append(escape(anchored[last:]))
    return "".join(out)
