"""Group commit of the access log: ``record`` calls that arrive while another call of the
same App is writing go in together, one transaction and one checkpoint, and every call
returns only once its entries are signed and committed, or raises with all the others of its
transaction when that fails (then none of their entries is written). The calls are held back
here by taking the signer's lock, as a call that is writing holds it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from affidavit.errors import SigningRefused
from affidavit.models.access import AccessEntry, Outcome
from affidavit.services import access_log as svc
from affidavit.services.context import App

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CALLS = 8


def request(n: int) -> AccessEntry:
    return svc.request_entry(
        started=T0 + timedelta(seconds=n),
        identity=f"user-{n}",
        auth_method="session",
        method="GET",
        route="/api/v1/backups",
        outcome=Outcome.ALLOWED,
        client_ip="192.0.2.10",
        user_agent="affidavit-cli/0.1.0",
        status=200,
        latency_us=1000,
    )


def held_calls(app: App, calls: list[list[AccessEntry]]) -> list[svc.RecordResult | BaseException]:
    """Run one ``record`` call per item in threads of their own while the signer's lock is
    held, release it once they all wait, and return what each call returned or raised."""
    signer = svc._signer(app)  # the test holds the calls back at its lock
    outcomes: list[svc.RecordResult | BaseException | None] = [None] * len(calls)

    def call(index: int) -> Callable[[], None]:
        def run() -> None:
            try:
                outcomes[index] = svc.record(app, calls[index])
            except BaseException as exc:  # handed to the test
                outcomes[index] = exc

        return run

    threads = [threading.Thread(target=call(i)) for i in range(len(calls))]
    with signer.lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(signer.queue) < len(calls):
            assert time.monotonic() < deadline, "the calls never queued"
            time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=60)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def checkpoint_sizes(app: App) -> list[int]:
    with app.read() as uow:
        return [size for size, _ in uow.access_log.checkpoints()]


def test_calls_that_wait_are_written_together_under_one_checkpoint(app: App) -> None:
    svc.record(app, [request(0)])
    calls = [[request(10 * i + j) for j in range(i % 3 + 1)] for i in range(1, CALLS + 1)]
    outcomes = held_calls(app, calls)
    results = [o for o in outcomes if isinstance(o, svc.RecordResult)]
    assert len(results) == CALLS
    total = 1 + sum(len(c) for c in calls)
    assert checkpoint_sizes(app) == [1, total]  # one transaction, one signature for all
    seen: list[int] = []
    for entries, result in zip(calls, results, strict=True):
        seqs = [e.seq for e in result.entries]
        assert seqs == list(range(seqs[0], seqs[0] + len(entries)))  # a call's are together
        assert [e.identity for e in result.entries] == [e.identity for e in entries]
        assert (result.size, result.root) == (results[0].size, results[0].root)
        seen += seqs
    assert sorted(seen) == list(range(1, total))
    report = svc.verify(app)
    assert report.ok, report.findings
    assert (report.size, report.root) == (total, results[0].root)


def test_when_the_transaction_fails_every_call_in_it_raises_and_nothing_is_written(
    app: App,
) -> None:
    svc.record(app, [request(0), request(1)])
    with sqlite3.connect(app.settings.home / "catalog.sqlite") as con:
        con.execute("DELETE FROM access_log_checkpoints")  # the signer refuses to go on
    outcomes = held_calls(app, [[request(10 + i)] for i in range(CALLS)])
    assert all(isinstance(o, SigningRefused) for o in outcomes)
    with app.read() as uow:
        assert uow.access_log.head()[0] == 1  # the two entries of before, nothing more


def test_a_call_alone_is_written_at_once(app: App) -> None:
    first = svc.record(app, [request(0)])
    second = svc.record(app, [request(1), request(2)])
    assert [e.seq for e in second.entries] == [1, 2]
    assert checkpoint_sizes(app) == [first.size, second.size] == [1, 3]
    assert not svc._signer(app).queue  # nothing left waiting
