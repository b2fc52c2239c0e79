"""Control adherence over time: per control and per UTC day, how its subjects stood in the
day's last policy check that the ledger vouches for (the dashboard's grid, docs/web.md).

A day's cell comes from the newest ``policy.checked`` event of that day whose
``results_sha256`` is the digest (RFC 8785) of the catalog's stored results of that run: a
run whose row was edited, or is gone, does not count (the day falls back to its previous
vouched run; ``unvouched`` says how many were passed over). Its state is ``fail`` when any
subject failed, else ``excepted`` when an exception covered one, else ``pass``, else what it
was (``not-applicable``, ``not-evaluated``) — the definition of published progress.

Cost, whatever the size of the catalog: one query for the window's ``policy.checked``
events, one for the stored results of the day's last runs (one run per day). A run's summary
(counts per control and status) is a function of its results: it is kept in a bounded
in-process memo under the event's digest and the SHA-256 of the stored text it came from.
Each view hashes the stored text again (fast: no parsing), so an edited row is noticed at
the next view, and parses and canonicalises a run only the first time its text is seen.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError, NotFound
from affidavit.models.governance import CheckRun
from affidavit.models.ledger import Event
from affidavit.services.context import App
from affidavit.services.policy import list_controls
from affidavit.services.policy_vouch import event_time, parse_entry

ORDER: Final = ("fail", "excepted", "pass", "not-applicable", "not-evaluated")
"""States from worst to least telling: a cell shows the first its subjects reached."""
DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 400
_MEMO_SIZE: Final = 2048
_PASSES: Final = 4  # fallbacks to an earlier run of a day (each one query), at most

Counts = Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One control on one day: the worst state, the counts of subjects per state, and the
    run (and its ledger event) behind it."""

    control: str
    day: date
    state: str
    counts: Counts
    run_id: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Adherence:
    """The grid: ``days`` oldest first, ``controls`` (id, title) by id, the cells that
    exist (a day without a vouched check has none)."""

    days: tuple[date, ...]
    controls: tuple[tuple[str, str], ...]
    cells: Mapping[tuple[str, date], Cell]
    vouched: int  # days with a vouched run
    unvouched: int  # runs passed over: their stored results do not match their event

    def totals(self, control: str) -> dict[str, int]:
        """Days per state of ``control``."""
        out: dict[str, int] = {}
        for day in self.days:
            cell = self.cells.get((control, day))
            if cell is not None:
                out[cell.state] = out.get(cell.state, 0) + 1
        return out


_memo: OrderedDict[str, tuple[str, dict[str, dict[str, int]]]] = OrderedDict()
_memo_lock = threading.Lock()


def _summary(results: Sequence[Mapping[str, object]]) -> dict[str, dict[str, int]]:
    """Per control, subjects per state."""
    out: dict[str, dict[str, int]] = {}
    for result in results:
        control, state = str(result.get("control", "")), str(result.get("status", ""))
        if control and state in ORDER:
            counts = out.setdefault(control, {})
            counts[state] = counts.get(state, 0) + 1
    return out


def _vouched_summary(event: Event, text: str | None) -> dict[str, dict[str, int]] | None:
    """The summary of the run ``event`` recorded, from its stored results ``text``; None
    when the row is gone or its results are not the ones the event's digest names. The
    stored text is hashed at every call (fast); it is parsed and canonicalised only when
    that text was not seen before with this event's digest."""
    if text is None:
        return None
    digest = str(event.details.get("results_sha256"))
    raw = sha256_hex(text.encode("utf-8", "surrogatepass"))
    with _memo_lock:
        known = _memo.get(digest)
        if known is not None and known[0] == raw:
            _memo.move_to_end(digest)
            return known[1]
    try:
        results = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    try:
        canonical = canonical_results(results)
    except (TypeError, ValueError, rfc8785.CanonicalizationError):
        return None
    if sha256_hex(canonical) != digest:
        return None
    summary = _summary(results)
    with _memo_lock:
        _memo[digest] = (raw, summary)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return summary


_MAX_SAFE_INT: Final = 2**53 - 1
_encode_sorted = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, sort_keys=True, separators=(",", ":")
).encode


def _same_in_both(value: object) -> bool:
    """Whether the C ``json`` encoder (sorted keys, no spaces, UTF-8 as is) prints ``value``
    exactly as RFC 8785 does (the rule of ``affidavit.ledger.log``, which appends events the
    same way): strings, booleans, None, safe integers, lists, and dicts with ASCII keys."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT  # type: ignore[operator]
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii() or not _same_in_both(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_same_in_both(item) for item in value)  # type: ignore[attr-defined]
    return False


def canonical_results(results: Sequence[object]) -> bytes:
    """The RFC 8785 bytes of a run's results: through the C encoder where it prints the same
    (a results list of strings and small integers: every one affidavit writes), else through
    the reference encoder (ten times slower)."""
    value: list[Any] = list(results)
    if _same_in_both(value):
        try:
            return str(_encode_sorted(value)).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the reference encoder decides
            pass
    return rfc8785.dumps(value)


def results_digest(run: CheckRun) -> str:
    """The digest ``policy.checked`` records of a run's results."""
    return sha256_hex(canonical_results(run.results))


def worst(counts: Counts) -> str:
    """The state a cell shows for these counts."""
    return next(s for s in ORDER if counts.get(s)) if any(counts.values()) else ORDER[-1]


def control_adherence(
    app: App, *, days: int = DEFAULT_DAYS, now: datetime | None = None
) -> Adherence:
    """The last ``days`` UTC days up to ``now`` (see the module docstring)."""
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"{days} days is out of range", hint=f"1..{MAX_DAYS}")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    window = tuple(today - timedelta(days=n) for n in range(days - 1, -1, -1))
    start = datetime.combine(window[0], datetime.min.time(), UTC)
    with app.read() as uow:
        # an event is written a moment after its run's time is taken: a day's margin
        since = (start - timedelta(days=1)).isoformat()
        events = [
            e
            for stored in uow.ledger.find(action="policy.checked", since=since)
            if (e := parse_entry(stored.entry)) is not None and e.action == "policy.checked"
        ]
        by_day: dict[date, list[Event]] = {}
        for event in events:  # seq order
            day = event_time(event).astimezone(UTC).date()
            if window[0] <= day <= today and isinstance(event.details.get("run_id"), str):
                by_day.setdefault(day, []).append(event)
        chosen: dict[date, tuple[Event, dict[str, dict[str, int]]]] = {}
        unvouched = 0
        for _ in range(_PASSES):
            wanted = {day: runs[-1] for day, runs in by_day.items() if runs and day not in chosen}
            if not wanted:
                break
            texts = uow.governance.check_run_texts(
                sorted({str(e.details["run_id"]) for e in wanted.values()})
            )
            for day, event in wanted.items():
                summary = _vouched_summary(event, texts.get(str(event.details["run_id"])))
                if summary is None:
                    unvouched += 1
                    by_day[day].pop()
                else:
                    chosen[day] = (event, summary)
    titles = {c.id: c.title for c in list_controls()}
    cells: dict[tuple[str, date], Cell] = {}
    for day, (event, summary) in chosen.items():
        for control, counts in summary.items():
            cells[(control, day)] = Cell(
                control=control,
                day=day,
                state=worst(counts),
                counts=dict(counts),
                run_id=str(event.details["run_id"]),
                seq=event.seq,
            )
    seen = sorted({control for control, _ in cells})
    return Adherence(
        days=window,
        controls=tuple((c, titles.get(c, "")) for c in seen),
        cells=cells,
        vouched=len(chosen),
        unvouched=unvouched,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResults:
    """One policy check's stored results and whether the ledger vouches for them."""

    run: CheckRun
    event: Event | None
    vouched: bool


def check_results(app: App, run_id: str) -> CheckResults:
    """The run ``run_id`` (:class:`NotFound` when there is none) and its ``policy.checked``
    event."""
    with app.read() as uow:
        found = uow.governance.check_runs_by_id([run_id])
        if not found:
            raise NotFound(f"no policy check {run_id!r}", hint="the dashboard links its checks")
        run = found[0]
        event = None
        if run.seq is not None:
            stored = next(iter(uow.ledger.entries(run.seq, run.seq + 1)), None)
            event = parse_entry(stored.entry) if stored is not None else None
    vouched = (
        event is not None
        and event.action == "policy.checked"
        and event.details.get("run_id") == run.id
        and event.details.get("results_sha256") == results_digest(run)
    )
    return CheckResults(run=run, event=event, vouched=vouched)
