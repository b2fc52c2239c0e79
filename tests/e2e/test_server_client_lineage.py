"""Lineage through a real ``affidavit serve`` in client mode (issue 17): over a real story
(a SecantusDB source backed up, verified and exported), ``lineage show|verify|export|emit``
print through the server exactly what they print on the host, with the same exit codes; a
role without ``ledger.read`` / ``ledger.export`` is refused (exit 2, nothing written, nothing
sent, the denial in the access log); a download changed on the way is removed (exit 1); a
subject nobody names is one line and a hint; ``verify --events`` and ``emit --url`` are
refused in client mode, and ``emit`` reaches the server's own endpoint (a real HTTP server)."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from server_harness import Served, World, free_port, make_world, password_file, serving
from tests.e2e.test_export_cli import _customers, prepare, run_export
from tests.e2e.test_lineage_cli import _Collector

from affidavit.cli.client import Client
from affidavit.config import load_settings
from affidavit.models.permissions import ROLES, Permission, Role
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import access_log
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client["shop"]["orders"].insert_many([{"_id": i, "total": i * 3} for i in range(5)])
        client.close()
        yield server.uri


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_Collector]]]:
    """A real OpenLineage-like HTTP endpoint that keeps what it is sent."""
    handler = type("Handler", (_Collector,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/lineage", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Remote:
    cli: Any
    served: Served
    world: World
    password: Path

    def login(self, name: str) -> None:
        done = self.cli("login", self.served.url, "--name", name, "--password-file",
                        str(self.password), "--code", self.world.code(name))  # fmt: skip
        assert done.code == 0, done.err

    def through(self, *args: str) -> Any:
        return self.cli("--server", self.served.url, *args)

    def refused(self, *args: str, text: str, code: int = 2) -> Any:
        result = self.through(*args)
        assert result.code == code, (args, result.out, result.err)
        assert text in result.err, result.err
        assert "Traceback" not in result.err
        assert len([line for line in result.err.splitlines() if line.strip()]) <= 2, result.err
        return result


PEOPLE_ROLES = {"viewer": Role.VIEWER, "auditor": Role.AUDITOR, "operator": Role.OPERATOR}


def _same(local: Any, remote: Any) -> None:
    assert (remote.code, remote.out, remote.err) == (local.code, local.out, local.err)


def _access(home: Path) -> list[dict[str, Any]]:
    with open_app(load_settings(home=home)) as app:
        return [e.to_json() for e in access_log.show(app)]


def _exports(home: Path) -> list[str]:
    folder = home / "exports"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_lineage_through_the_server(
    cli: Any,
    home: Path,
    tmp_path: Path,
    mongo: str,
    endpoint: tuple[str, type[_Collector]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the story, on the host: a backup, its verification and an export
    s = prepare(cli, home, tmp_path, mongo)
    assert cli("verify", s.backup_id, "--json").code == 0
    exported = run_export(cli)
    export_id = exported["predicate"]["export_id"]
    url, handler = endpoint
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    out = tmp_path / "out"
    out.mkdir()
    local_events = cli("lineage", "export")
    assert local_events.code == 0 and local_events.out.count("\n") >= 6
    port = free_port()

    with serving(home, port=port) as served:
        r = Remote(cli=cli, served=served, world=world, password=password_file(tmp_path))

        # who may not: refused before anything runs; nothing written, nothing sent
        for name in ("viewer", "auditor", "operator"):
            held = ROLES[PEOPLE_ROLES[name]]
            r.login(name)
            for args, permission in (
                (("lineage", "show", s.backup_id), Permission.LEDGER_READ),
                (("lineage", "verify"), Permission.LEDGER_READ),
                (("lineage", "export", "--out", str(out / f"{name}.jsonl")), Permission.LEDGER_EXPORT),
                (("lineage", "export"), Permission.LEDGER_EXPORT),
                (("lineage", "emit"), Permission.LEDGER_EXPORT),
            ):  # fmt: skip
                if permission in held:
                    continue
                done = r.refused(*args, text=f"may not {permission.value}")
                assert done.out == ""
        assert Permission.LEDGER_READ not in ROLES[Role.VIEWER]  # (the loop refused them)
        assert Permission.LEDGER_EXPORT not in ROLES[Role.OPERATOR]
        assert list(out.iterdir()) == [] and _exports(home) == []
        assert handler.received == []
        denied = {(e["identity"], e["method"], e["route"])
                  for e in _access(home) if e["outcome"] == "denied"}  # fmt: skip
        assert ("viewer", "GET", "/api/v1/lineage") in denied
        assert ("viewer", "POST", "/api/v1/lineage/verify") in denied
        assert ("operator", "POST", "/api/v1/lineage/exports") in denied
        assert ("operator", "POST", "/api/v1/lineage/emit") in denied
        assert not (home / "lineage-emitted.json").exists()

        # a server without an OpenLineage endpoint says so, and sends nothing
        r.login("security_officer")
        r.refused("lineage", "emit", text="the server has no OpenLineage endpoint set")
        assert not (home / "lineage-emitted.json").exists()

    config = home / "affidavit.toml"
    config.write_text(config.read_text() + f'\nopenlineage_url = "{url}"\n')
    with serving(home, port=port) as served:  # the same URL: the session goes on
        r = Remote(cli=cli, served=served, world=world, password=password_file(tmp_path))

        # an operator reads lineage (ledger.read) as on the host
        r.login("operator")
        _same(cli("lineage", "show", s.backup_id), r.through("lineage", "show", s.backup_id))

        # the security officer holds both: every command prints what it prints on the host
        r.login("security_officer")
        for subject in (s.backup_id, export_id, "shop/shop.customers", "shop.orders"):
            for flags in ((), ("--json",), ("--dot",)):
                args = ("lineage", "show", subject, *flags)
                local, remote = cli(*args), r.through(*args)
                assert local.code == 0, local.err
                _same(local, remote)
        graph = json.loads(r.through("lineage", "show", export_id, "--json").out)
        assert {run["kind"] for run in graph["runs"]} == {"backup", "export"}
        # a subject nobody names, and options that exclude each other: exit 2, one line
        for args in (("show", "bk-nope"), ("show", "nosuch.collection")):
            local = cli("lineage", *args)
            remote = r.refused("lineage", *args, text="no lineage for")
            _same(local, remote)
        r.refused("lineage", "show", s.backup_id, "--json", "--dot", text="exclude each other")
        r.refused("lineage", "show", "x" * 1001, text="")  # over the route's bound: refused

        for flags in ((), ("--json",)):
            local, remote = cli("lineage", "verify", *flags), r.through("lineage", "verify", *flags)
            assert local.code == 0, local.out
            _same(local, remote)
        # an artifact changed in the vault: exit 1 with the same finding, both ways
        data = sorted(p for p in (tmp_path / "vault").rglob("*.age") if p.is_file())[0]
        original = data.read_bytes()
        os.chmod(data, 0o600)
        data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        for flags in ((), ("--json",)):
            local, remote = cli("lineage", "verify", *flags), r.through("lineage", "verify", *flags)
            assert local.code == 1 and "artifact-changed" in local.out
            _same(local, remote)
        data.write_bytes(original)
        # --events names a file of this host: refused, nothing sent
        events_file = out / "events.jsonl"
        events_file.write_text(local_events.out)
        before = len(_access(home))
        r.refused("lineage", "verify", "--events", str(events_file), text="not uploaded")
        assert len(_access(home)) == before

        # export: printed, and downloaded to --out, byte for byte the host's
        _same(local_events, r.through("lineage", "export"))
        _same(
            cli("lineage", "export", "--since", "5"), r.through("lineage", "export", "--since", "5")
        )
        target = out / "remote.jsonl"
        done = r.through("lineage", "export", "--out", str(target))
        local = cli("lineage", "export", "--out", str(out / "local.jsonl"))
        assert done.code == 0 and local.code == 0, done.err
        assert (
            target.read_bytes() == (out / "local.jsonl").read_bytes() == local_events.out.encode()
        )
        assert done.out.replace(str(target), "F") == local.out.replace(
            str(out / "local.jsonl"), "F"
        )
        assert oct(target.stat().st_mode & 0o777) == "0o600"
        written = _exports(home)
        assert written and all(re.fullmatch(r"ox-[0-9a-f]{16}\.jsonl", n) for n in written)
        assert target.read_bytes() in {(home / "exports" / n).read_bytes() for n in written}
        downloads = [e for e in _access(home)
                     if e.get("route") == "/api/v1/lineage/exports/{lineage_export_id}"]  # fmt: skip
        assert downloads and all(e["subject"].startswith("lineage-export:ox-") for e in downloads)
        assert all(e["identity"] == "security_officer" for e in downloads)
        # an id names only a lineage export of the home's exports folder, for ledger.export
        with served.client() as http:
            officer = world.session(http, "security_officer").bearer
            ledger_id = http.post("/ledger/exports", headers=officer).json()["export"]
            assert ledger_id.startswith("lx-")
            for bad in (ledger_id, "ox-" + "0" * 16, "..%2F..%2Fcatalog.sqlite", written[0][:-6]):
                answer = http.get(f"/lineage/exports/{bad}", headers=officer)
                assert answer.status_code == (200 if bad == written[0][:-6] else 404), bad
            reader = world.session(http, "operator").bearer
            answer = http.get(f"/lineage/exports/{written[0][:-6]}", headers=reader)
            assert answer.status_code == 403 and "may not ledger.export" in answer.text
        # an existing --out: refused before the server is asked (no new file in its home)
        files = _exports(home)
        r.refused("lineage", "export", "--out", str(target), text="already exists")
        assert _exports(home) == files and target.read_bytes() == local_events.out.encode()

        # a download changed on the way is removed, and nothing is printed (exit 1)
        real = Client.download

        def tampered(self: Client, path: str, into: Path) -> None:
            real(self, path, into)
            into.write_bytes(into.read_bytes().replace(b"COMPLETE", b"COMPLETF", 1))

        monkeypatch.setattr(Client, "download", tampered)
        bad = r.refused("lineage", "export", "--out", str(out / "bad.jsonl"),
                        text="changed on the way", code=1)  # fmt: skip
        assert not (out / "bad.jsonl").exists() and bad.out == ""
        printed = r.refused("lineage", "export", text="changed on the way", code=1)
        assert printed.out == ""
        monkeypatch.setattr(Client, "download", real)

        # emit: the server posts to its own endpoint exactly the events, once
        events = [json.loads(line) for line in local_events.out.splitlines()]
        r.refused("lineage", "emit", "--url", url, text="never to a URL the client names")
        assert handler.received == []
        sent = r.through("lineage", "emit", "--json")
        assert sent.code == 0, sent.err
        answer = json.loads(sent.out)
        assert answer["sent"] == len(events) and handler.received == events
        assert answer["through_seq"] == events[-1]["run"]["facets"]["affidavit_ledger"]["seq"]
        again = r.through("lineage", "emit")
        assert again.code == 0 and again.out.startswith("sent 0 event(s) to http://127.0.0.1:")
        # from the start again: the host and the server print the same
        _same(
            cli("lineage", "emit", "--since", "-1"), r.through("lineage", "emit", "--since", "-1")
        )
        assert handler.received == events * 3
        # an endpoint that refuses: exit 3 through the server too, nothing more marked sent
        handler.status = 500
        state = (home / "lineage-emitted.json").read_bytes()
        down = r.refused("lineage", "emit", "--since", "-1", text="500", code=3)
        _same(cli("lineage", "emit", "--since", "-1"), down)
        assert down.out == "" and (home / "lineage-emitted.json").read_bytes() == state

        reads = [e for e in _access(home) if e["route"] == "/api/v1/lineage"]
        assert {e["identity"] for e in reads if e["outcome"] == "allowed"} == {
            "operator",
            "security_officer",
        }


def test_lineage_is_refused_without_a_session(cli: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Client mode without a login: refused (exit 3, as every command: no identity), and
    nothing runs on the local home instead."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for args in (("show", "x"), ("verify",), ("export",), ("emit",)):
        done = cli("--server", "http://127.0.0.1:9", "lineage", *args)
        assert done.code == 3, (args, done.out, done.err)
        assert "not logged in" in done.err and done.out == ""
