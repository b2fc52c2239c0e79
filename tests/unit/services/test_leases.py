"""``services.leases``: how a running backup's lease is judged (a live process of this host,
a dead or zombie one, a reused pid, another host's heartbeat, a run without a lease), the
heartbeat that refreshes it without ledger events, and the reclaiming of dead runs."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.models.backup import Backup, BackupStatus, Lease
from affidavit.models.inventory import Vault, VaultKind, VaultName
from affidavit.processes import ProcessState, process_state
from affidavit.services import leases
from affidavit.services.context import App
from affidavit.services.leases import LEASE_TIMEOUT, HostIdentity, dead_because

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
HERE = HostIdentity(host="db-host", boot_id="boot-1", pid_namespace="pid:[1]")


def _lease(**changes: Any) -> Lease:
    values: dict[str, Any] = {
        "backup_id": "bk-1",
        "host": HERE.host,
        "boot_id": HERE.boot_id,
        "pid_namespace": HERE.pid_namespace,
        "pid": 4242,
        "process_start": 1000,
        "started_at": NOW - timedelta(hours=1),
        "heartbeat_at": NOW - timedelta(seconds=20),
    }
    return Lease(**{**values, **changes})


def _judge(lease: Lease | None, found: ProcessState | None) -> str | None:
    return dead_because(
        lease, started_at=NOW - timedelta(hours=1), now=NOW, here=HERE, probe=lambda _: found
    )


def test_a_process_of_this_host_with_its_start_time_is_alive_however_old_its_heartbeat() -> None:
    stale = _lease(heartbeat_at=NOW - timedelta(days=2))
    assert _judge(stale, ProcessState(start=1000)) is None


def test_a_process_of_this_host_that_is_gone_exited_or_replaced_is_dead_at_once() -> None:
    fresh = _lease(heartbeat_at=NOW)
    assert _judge(fresh, None) == "process 4242 on db-host is gone"
    assert (
        _judge(fresh, ProcessState(start=1000, exited=True)) == "process 4242 on db-host has exited"
    )
    assert _judge(fresh, ProcessState(start=1001)) == (
        "process 4242 on db-host is gone (its pid now belongs to another process)"
    )


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"host": "other-host"},
        {"boot_id": "boot-0"},  # this host before a reboot, or a namesake: not our pid table
        {"pid_namespace": "pid:[2]"},  # another container on this host
    ],
)
def test_a_run_whose_pid_cannot_be_looked_up_is_judged_by_its_heartbeat(
    elsewhere: dict[str, str],
) -> None:
    never = ProcessState(start=1000)  # would say "alive": it must not be asked
    assert _judge(_lease(**elsewhere, heartbeat_at=NOW - LEASE_TIMEOUT), never) is None
    why = _judge(_lease(**elsewhere, heartbeat_at=NOW - LEASE_TIMEOUT - timedelta(seconds=1)), None)
    assert why is not None and why.startswith("no heartbeat from process 4242 on ")
    assert why.endswith("for 15 min (the limit is 15 min)")


def test_a_heartbeat_dated_far_in_the_future_keeps_nothing_alive() -> None:
    forged = _lease(host="other-host", heartbeat_at=NOW + timedelta(days=3650))
    assert _judge(forged, None) == (
        "the heartbeat of process 4242 on other-host is dated 87600.0 h in the future"
    )
    skewed = _lease(host="other-host", heartbeat_at=NOW + timedelta(minutes=2))
    assert _judge(skewed, None) is None  # a clock a little ahead is no forgery


def test_without_a_start_time_a_live_pid_counts_only_with_a_fresh_heartbeat() -> None:
    unknown = ProcessState(start=None)  # a system without /proc/PID/stat
    assert _judge(_lease(heartbeat_at=NOW - timedelta(minutes=1)), unknown) is None
    assert _judge(_lease(heartbeat_at=NOW - timedelta(hours=1)), unknown) is not None


def test_a_run_recorded_before_leases_is_dead_once_it_is_older_than_the_timeout() -> None:
    assert dead_because(None, started_at=NOW - timedelta(minutes=5), now=NOW, here=HERE) is None
    why = dead_because(None, started_at=NOW - timedelta(hours=3), now=NOW, here=HERE)
    assert why == "it has no lease (recorded before leases existed) and started 3.0 h ago"


def test_process_state_reads_the_start_time_and_sees_zombies() -> None:
    own = process_state(os.getpid())
    assert own is not None and own.start is not None and not own.exited
    child = subprocess.Popen(["sleep", "60"])
    try:
        alive = process_state(child.pid)
        assert alive is not None and not alive.exited and alive.start != own.start
        child.kill()
        deadline = time.monotonic() + 10
        while not (state := process_state(child.pid)) or not state.exited:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert state.start == alive.start  # the same process, now a zombie
    finally:
        child.kill()
        child.wait()
    assert process_state(child.pid) is None  # reaped


def test_the_new_lease_names_this_process() -> None:
    lease = leases.new_lease("bk-1", NOW)
    here = leases.this_host()
    assert (lease.pid, lease.host) == (os.getpid(), here.host)
    assert here.can_look_up(lease)
    assert dead_because(lease, started_at=NOW, now=NOW + timedelta(days=1), here=here) is None


# -- with a catalog -----------------------------------------------------------------------------


def _running(app: App, backup_id: str, lease: Lease | None, vault: Path) -> None:
    with app.change() as change:
        if not change.uow.vaults.list():
            change.uow.vaults.add(
                Vault(name=VaultName("v1"), kind=VaultKind.FILE, url=f"file://{vault}",
                      region=None, immutable_days=None, created_at=NOW)
            )  # fmt: skip
        change.uow.backups.add(
            Backup(id=backup_id, source="cache", vault="v1", kind="run", format="rdb",
                   status=BackupStatus.RUNNING, started_at=datetime.now(UTC) - timedelta(hours=2),
                   finished_at=None, retain_until=datetime.now(UTC) + timedelta(days=30))
        )  # fmt: skip
        if lease is not None:
            change.uow.backups.add_lease(lease)
        # as services.backup starts a run: only a run the ledger records started is abandoned
        change.record("backup.started", f"backup:{backup_id}", {"source": "cache", "vault": "v1"})


def _ledger_size(app: App) -> int:
    with app.read() as uow:
        return uow.ledger.size()


def test_the_heartbeat_refreshes_the_lease_without_ledger_events(app: App, tmp_path: Path) -> None:
    then = datetime.now(UTC) - timedelta(minutes=10)
    lease = leases.new_lease("bk-beat", then)
    _running(app, "bk-beat", lease, tmp_path / "vault")
    size = _ledger_size(app)
    beat = leases.Heartbeat(app, "bk-beat", every=0.02)
    beat.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with app.read() as uow:
                current = uow.backups.lease("bk-beat")
            assert current is not None
            if current.heartbeat_at > then:
                break
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
    finally:
        beat.stop()
    assert _ledger_size(app) == size
    with app.change() as change:
        change.uow.backups.fail("bk-beat", finished_at=datetime.now(UTC), error="x")
    assert beat.beat() is False  # a run that is over has no lease to refresh


def test_reclaim_records_the_dead_and_leaves_the_living(app: App, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    now = datetime.now(UTC)
    here = leases.this_host()
    mine = leases.new_lease("bk-live", now - timedelta(hours=2))  # this very process: alive

    def far(backup_id: str, heartbeat_age: timedelta) -> Lease:  # another host's run
        return _lease(backup_id=backup_id, host="elsewhere", pid=7, started_at=now,
                      heartbeat_at=now - heartbeat_age)  # fmt: skip

    _running(app, "bk-live", mine, vault)
    _running(app, "bk-far-fresh", far("bk-far-fresh", timedelta(minutes=1)), vault)
    _running(app, "bk-far-stale", far("bk-far-stale", timedelta(hours=1)), vault)
    _running(app, "bk-old", None, vault)  # recorded before leases, started 2 h ago
    unfinished = vault / "cache" / "bk-far-stale" / ".dump.rdb.age.x1y2.partial"
    unfinished.parent.mkdir(parents=True)
    unfinished.write_bytes(b"age")
    kept = vault / "cache" / "bk-live" / ".dump.rdb.age.a1b2.partial"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"age")

    done = leases.reclaim_abandoned(app, here=here)
    assert sorted(a.backup_id for a in done) == ["bk-far-stale", "bk-old"]
    (stale,) = [a for a in done if a.backup_id == "bk-far-stale"]
    assert stale.partials_removed == ("cache/bk-far-stale/.dump.rdb.age.x1y2.partial",)
    assert not unfinished.exists() and kept.exists()
    with app.read() as uow:
        status = {b.id: (b.status, b.error) for b in uow.backups.list()}
    assert status["bk-live"] == (BackupStatus.RUNNING, None)
    assert status["bk-far-fresh"] == (BackupStatus.RUNNING, None)
    assert status["bk-far-stale"][0] is BackupStatus.FAILED
    assert str(status["bk-far-stale"][1]).startswith("abandoned: no heartbeat from process 7")
    assert str(status["bk-old"][1]).startswith("abandoned: it has no lease")
    facts = leases.abandoned_run_facts(app)
    assert [(f.backup_id, f.source, f.leftovers) for f in facts] == [
        ("bk-far-stale", "cache", ()),
        ("bk-old", "cache", ()),
    ]
    assert leases.reclaim_abandoned(app, here=here) == []  # recorded once
