"""Points in time and periods given on the command line (``2026-10-01`` or RFC 3339)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from affidavit.errors import InputError

MIN_YEAR = 1970
MAX_YEAR = 9998  # a day can still be added (an inclusive --to), and RFC 3339 strings of years
# 1000..9999 compare in time order; earlier years would not (strftime does not pad them)


def parse_moment(text: str, *, flag: str, end_of_day: bool = False) -> datetime:
    """``YYYY-MM-DD`` (UTC midnight; the next midnight with ``end_of_day``) or an RFC 3339
    time with an offset. Raises :class:`InputError` naming the flag."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1) if end_of_day else day
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except OverflowError:
        raise InputError(
            f"{flag} {text!r} is out of range",
            hint=f"use a time between {MIN_YEAR} and {MAX_YEAR}",
        ) from None
    except ValueError:
        raise InputError(
            f"{flag} {text!r} is not a date", hint="use YYYY-MM-DD or 2026-01-31T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InputError(f"{flag} {text!r} has no UTC offset", hint="add Z or +HH:MM")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InputError(
            f"{flag} {text!r} is out of range",
            hint=f"use a time between {MIN_YEAR} and {MAX_YEAR}",
        ) from None


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval ``[start, end)``, both ends in the years
    :data:`MIN_YEAR`..:data:`MAX_YEAR` (UTC)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InputError("a period needs times with a UTC offset")
        for moment in (self.start, self.end):
            try:
                year = moment.astimezone(UTC).year
            except OverflowError:
                year = moment.year
            if not MIN_YEAR <= year <= MAX_YEAR:
                raise InputError(
                    f"the period must lie between the years {MIN_YEAR} and {MAX_YEAR} "
                    f"(not {moment.isoformat()})",
                    hint="give --from and --to as YYYY-MM-DD",
                )
        if self.end <= self.start:
            raise InputError(
                f"the period ends ({self.end:%Y-%m-%d %H:%M}) before it starts "
                f"({self.start:%Y-%m-%d %H:%M})",
                hint="--to is exclusive and must come after --from",
            )

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        """From ``--from`` and ``--to``; a bare date in ``--to`` includes that whole day."""
        return cls(
            parse_moment(start, flag="--from"), parse_moment(end, flag="--to", end_of_day=True)
        )

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end
