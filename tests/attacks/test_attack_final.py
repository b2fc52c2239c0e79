"""Final adversarial pass on recent "who may do what" decisions, through a real
``affidavit serve`` (tests/e2e/server_harness.py) and the services with a real home:
audit scoping and the PBC workflow (docs/audit.md), the credentials routes, ``source add``
secret references through the server, export spec approval/run, calendar management."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519
from server_harness import CLIENT, PASSWORD, Served, World, make_world, serving

from affidavit.config import load_settings
from affidavit.crypto.dsse import Envelope, Signature, sign_envelope
from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import Error as AffidavitError
from affidavit.models.permissions import Role
from affidavit.services import audit, roles
from affidavit.services import identity as idn
from affidavit.services.context import open_app
from affidavit.services.exports.verify import verify_export
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

TODAY = datetime.now(UTC).date()
IN_TOTO = "application/vnd.in-toto+json"


def count(home: Path, action: str) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        row = db.execute("select count(*) from ledger_entries where action = ?", (action,))
        return int(row.fetchone()[0])


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Stage:
    served: Served
    world: World
    a: str  # auditor's engagement, covering now
    b: str  # outsider's engagement, 2025's first half
    expired: str  # auditor's, expired yesterday
    req_a: str  # a request of A raised by auditor
    req_b: str  # a request of B raised by outsider


def _password_login(http: object, name: str) -> dict[str, str]:
    answer = http.post("/auth/login", json={"name": name, "password": PASSWORD})  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    return bearer(answer.json()["secret"])


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    with pytest.MonkeyPatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("AFFIDAVIT_"):
                patch.delenv(var)
        patch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
        root = tmp_path_factory.mktemp("final")
        home = root / "home"
        initialise(load_settings(home=home))
        world = make_world(home)
        with open_app(load_settings(home=home)) as app:
            admin = world.admin(app)
            idn.create_account(app, admin, "outsider", password=PASSWORD)
            roles.grant_role(app, admin, "outsider", Role.AUDITOR)
            # an administrator without TOTP: logs in with a password only
            idn.create_account(app, admin, "admin2", password=PASSWORD)
            roles.grant_role(app, admin, "admin2", Role.ADMIN)
            a = audit.open_engagement(
                app, admin, start=str(TODAY - timedelta(days=30)),
                end=str(TODAY + timedelta(days=30)), framework="soc2", auditor="auditor",
                expires=str(TODAY + timedelta(days=60)),
            ).id  # fmt: skip
            b = audit.open_engagement(
                app, admin, start="2025-01-01", end="2025-06-30", framework="soc2",
                auditor="outsider", expires=str(TODAY + timedelta(days=60)),
            ).id  # fmt: skip
            expired = audit.open_engagement(
                app, admin, start=str(TODAY - timedelta(days=30)), end=str(TODAY),
                framework="soc2", auditor="auditor", expires=str(TODAY - timedelta(days=1)),
                now=datetime.now(UTC) - timedelta(days=3),
            ).id  # fmt: skip
            auditor = idn.login(
                app, "auditor", PASSWORD, world.code("auditor"), client=CLIENT
            ).principal
            outsider = idn.login(app, "outsider", PASSWORD, client=CLIENT).principal
            due = str(TODAY + timedelta(days=10))
            req_a = audit.open_request(app, auditor, a, title="Access list", due=due).id
            req_b = audit.open_request(app, outsider, b, title="Backups", due=due).id
        with serving(home) as served:
            yield Stage(served, world, a, b, expired, req_a, req_b)


# -- 1. audit scoping --------------------------------------------------------------------------


def test_auditor_of_a_sees_nothing_of_b(stage: Stage) -> None:
    with stage.served.client() as http:
        mine = stage.world.session(http, "auditor").bearer
        for path in (
            f"/audit/engagements/{stage.b}",
            f"/audit/engagements/{stage.b}/controls",
            f"/audit/engagements/{stage.b}/verifications",
            f"/audit/engagements/{stage.b}/checkpoints",
            f"/audit/engagements/{stage.b}/proofs/1",
            f"/audit/engagements/{stage.b}/evidence-package",
            f"/audit/requests/{stage.req_b}",
            f"/audit/requests/{stage.req_b}/files/f-1",
            f"/audit/requests?engagement={stage.b}",
            f"/audit/engagements/{stage.expired}",
            f"/audit/engagements/{stage.expired}/evidence-package",
        ):
            answer = http.get(path, headers=mine)
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
        listed = http.get("/audit/requests", headers=mine).json()["requests"]
        assert {r["id"] for r in listed} == {stage.req_a}


def test_proof_and_package_outside_the_window_refused(stage: Stage) -> None:
    built = count(stage.world.home, "evidence.built")
    with stage.served.client() as http:
        theirs = _password_login(http, "outsider")  # B's window is 2025: no event in it
        for seq in (0, 1, 2, 5, -1, 10**9):
            answer = http.get(f"/audit/engagements/{stage.b}/proofs/{seq}", headers=theirs)
            assert answer.status_code in (404, 422), (seq, answer.text)
        # A's engagement by B's auditor
        answer = http.get(f"/audit/engagements/{stage.a}/evidence-package", headers=theirs)
        assert answer.status_code == 404
    assert count(stage.world.home, "evidence.built") == built


def test_auditor_cannot_step_another_auditors_request(stage: Stage) -> None:
    before = count(stage.world.home, "audit.request_accepted")
    with stage.served.client() as http:
        mine = stage.world.session(http, "auditor").bearer
        for step, body in (("accept", {}), ("close", {}), ("return", {"reason": "x"}),
                           ("messages", {"text": "hi"})):  # fmt: skip
            answer = http.post(f"/audit/requests/{stage.req_b}/{step}", json=body, headers=mine)
            assert answer.status_code == 404, (step, answer.text)
        # opening a request in B
        answer = http.post(
            "/audit/requests",
            json={"engagement": stage.b, "title": "x", "due": str(TODAY + timedelta(days=3))},
            headers=mine,
        )
        assert answer.status_code == 404, answer.text
    assert count(stage.world.home, "audit.request_accepted") == before


def test_responders_and_admins_cannot_take_the_auditors_steps(stage: Stage) -> None:
    with stage.served.client() as http:
        for who in ("operator", "admin"):
            headers = stage.world.session(http, who).bearer
            for step in ("accept", "close"):
                answer = http.post(f"/audit/requests/{stage.req_a}/{step}", json={},
                                   headers=headers)  # fmt: skip
                assert answer.status_code in (403, 404), (who, step, answer.text)
        token = bearer(stage.world.token)  # operator token: audit.respond
        answer = http.post(f"/audit/requests/{stage.req_a}/accept", json={}, headers=token)
        assert answer.status_code in (403, 404), answer.text


def test_pbc_replayed_steps_are_refused(stage: Stage) -> None:
    home = stage.world.home
    with stage.served.client() as http:
        operator = stage.world.session(http, "operator").bearer
        mine = stage.world.session(http, "auditor").bearer
        submitted = http.post(f"/audit/requests/{stage.req_a}/answers",
                              json={"note": "see the access review"}, headers=operator)  # fmt: skip
        assert submitted.status_code == 200, submitted.text
        # the auditor answering its own request
        own = http.post(f"/audit/requests/{stage.req_a}/answers", json={"note": "x"},
                        headers=mine)  # fmt: skip
        assert own.status_code == 403, own.text
        accepted = http.post(f"/audit/requests/{stage.req_a}/accept", json={}, headers=mine)
        assert accepted.status_code == 200, accepted.text
        n = count(home, "audit.request_accepted")
        again = http.post(f"/audit/requests/{stage.req_a}/accept", json={}, headers=mine)
        assert again.status_code == 409, again.text
        assert count(home, "audit.request_accepted") == n
        closed = http.post(f"/audit/requests/{stage.req_a}/close", json={}, headers=mine)
        assert closed.status_code == 200, closed.text
        n = count(home, "audit.request_closed")
        for step, body in (("close", {}), ("accept", {}), ("return", {"reason": "r"})):
            replay = http.post(f"/audit/requests/{stage.req_a}/{step}", json=body, headers=mine)
            assert replay.status_code == 409, (step, replay.text)
        late = http.post(f"/audit/requests/{stage.req_a}/answers", json={"note": "late"},
                         headers=operator)  # fmt: skip
        assert late.status_code == 409, late.text
        assert count(home, "audit.request_closed") == n


def test_after_expiry_the_auditor_takes_no_step(stage: Stage) -> None:
    later = datetime.now(UTC) + timedelta(days=61)
    with open_app(load_settings(home=stage.world.home)) as app:
        outsider = idn.login(app, "outsider", PASSWORD, client=CLIENT).principal
        for act in (
            lambda: audit.get_request(app, outsider, stage.req_b, now=later),
            lambda: audit.accept(app, outsider, stage.req_b, now=later),
            lambda: audit.message(app, outsider, stage.req_b, text="hi", now=later),
            lambda: audit.engagement_proof(app, outsider, stage.b, 1, now=later),
            lambda: audit.engagement_package(app, outsider, stage.b, now=later),
        ):
            with pytest.raises(AffidavitError):
                act()


# -- 2. credentials ----------------------------------------------------------------------------


def test_me_routes_refuse_another_accounts_name(stage: Stage) -> None:
    with stage.served.client() as http:
        op = stage.world.session(http, "operator").bearer
        for method, path, body in (
            ("POST", "/me/password", {"account": "viewer", "current_password": PASSWORD,
                                      "password": "pwned pwned pwned 1"}),
            ("POST", "/me/password", {"account": "VIEWER ", "current_password": PASSWORD,
                                      "password": "pwned pwned pwned 1"}),
            ("POST", "/me/totp", {"account": "viewer"}),
            ("POST", "/me/totp/confirm", {"account": "viewer", "code": "123456"}),
            ("DELETE", "/me/totp", {"account": "viewer"}),
        ):  # fmt: skip
            answer = http.request(method, path, json=body, headers=op)
            assert answer.status_code in (400, 403, 422), (path, body, answer.text)
        # viewer still logs in with the old password and TOTP
        stage.world.forget("viewer")
        assert stage.world.session(http, "viewer").name == "viewer"


def test_api_token_changes_no_credentials(stage: Stage) -> None:
    token = bearer(stage.world.token)
    with stage.served.client() as http:
        for method, path, body in (
            ("POST", "/me/password", {"account": "ci-bot", "current_password": "",
                                      "password": "pwned pwned pwned 1"}),
            ("POST", "/me/totp", {"account": "ci-bot"}),
            ("DELETE", "/me/totp", {"account": "ci-bot"}),
            ("POST", "/accounts/viewer/password", {"password": "pwned pwned pwned 1"}),
            ("DELETE", "/accounts/viewer/totp", None),
            ("POST", "/accounts/viewer/unlock", None),
        ):  # fmt: skip
            answer = http.request(method, path, json=body, headers=token)
            assert answer.status_code in (401, 403), (path, answer.text)


def test_operator_cannot_reset_someone_elses_credentials(stage: Stage) -> None:
    with stage.served.client() as http:
        op = stage.world.session(http, "operator").bearer
        for method, path, body in (
            ("POST", "/accounts/viewer/password", {"password": "pwned pwned pwned 1"}),
            ("DELETE", "/accounts/viewer/totp", None),
            ("POST", "/accounts/viewer/unlock", None),
            ("POST", "/accounts/viewer/oidc", {"issuer": "https://evil", "subject": "x"}),
        ):
            answer = http.request(method, path, json=body, headers=op)
            assert answer.status_code == 403, (path, answer.text)


def test_admin_without_step_up_cannot_reset_a_password(stage: Stage) -> None:
    with stage.served.client() as http:
        weak = _password_login(http, "admin2")  # no MFA at all
        for method, path, body in (
            ("POST", "/accounts/viewer/password", {"password": "pwned pwned pwned 1"}),
            ("DELETE", "/accounts/viewer/totp", None),
            ("POST", "/accounts/viewer/oidc", {"issuer": "https://evil", "subject": "x"}),
        ):
            answer = http.request(method, path, json=body, headers=weak)
            assert answer.status_code in (401, 403), (path, answer.text)
        stage.world.forget("viewer")
        assert stage.world.session(http, "viewer").name == "viewer"


# -- 3. source secrets through the server ------------------------------------------------------


def _add_source(http: object, headers: dict[str, str], name: str, **ref: str) -> object:
    body = {"name": name, "engine": "redis", "uri": "redis://127.0.0.1:9",
            "classification": "internal", **ref}  # fmt: skip
    return http.post("/sources", json=body, headers=headers)  # type: ignore[attr-defined]


def test_source_add_refuses_the_servers_own_secrets(stage: Stage, tmp_path: Path) -> None:
    home = stage.world.home.resolve()
    link = tmp_path / "innocent"
    link.symlink_to(home / "catalog.sqlite")
    folder_link = tmp_path / "dir"
    folder_link.symlink_to(home)
    with stage.served.client() as http:
        admin = stage.world.session(http, "admin").bearer
        refs = [
            {"secret_env": "AFFIDAVIT_KEY_PASSPHRASE"},
            {"secret_env": "affidavit_anything"},
            {"secret_file": str(home / "catalog.sqlite")},
            {"secret_file": str(home)},
            {"secret_file": f"{home}/../{home.name}/catalog.sqlite"},
            {"secret_file": f"/tmp/../{str(home).lstrip('/')}/catalog.sqlite"},
            {"secret_file": str(link)},
            {"secret_file": f"{folder_link}/catalog.sqlite"},
            {"secret_file": "catalog.sqlite"},
            {"secret_file": "../home/catalog.sqlite"},
            {"secret_file": "~/x"},
        ]
        for i, ref in enumerate(refs):
            answer = _add_source(http, admin, f"evil{i}", **ref)
            assert answer.status_code == 400, (ref, answer.text)  # type: ignore[attr-defined]
        # a file outside the home is fine (the defence is not refusing everything)
        outside = tmp_path / "pw"
        outside.write_text("s3cret")
        outside.chmod(0o600)
        ok = _add_source(http, admin, "fine", secret_file=str(outside))
        assert ok.status_code == 201, ok.text  # type: ignore[attr-defined]
        listed = http.get("/sources", headers=admin).json()["sources"]
        names = {s["name"] for s in listed}
        assert "fine" in names
        assert not {n for n in names if n.startswith("evil")}


def test_source_add_refuses_proc_self_environ(stage: Stage) -> None:
    with stage.served.client() as http:
        admin = stage.world.session(http, "admin").bearer
        for i, path in enumerate(("/proc/self/environ", "/proc/thread-self/environ")):
            answer = _add_source(http, admin, f"environ{i}", secret_file=path)
            assert answer.status_code == 400, (path, answer.text)  # type: ignore[attr-defined]


class Catcher:
    """A TCP listener on loopback that answers ``+OK`` to anything and keeps the bytes a
    client sent (a Redis client's ``AUTH`` carries the source's password)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.got = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                conn, _ = self.sock.accept()
                conn.settimeout(3)
                with conn:
                    try:
                        while data := conn.recv(65536):
                            self.got += data
                            conn.sendall(b"+OK\r\n")
                    except OSError:
                        pass
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def _probe(stage: Stage, name: str, secret_file: str, before_test: object = None) -> bytes:
    catcher = Catcher()
    try:
        with stage.served.client() as http:
            admin = stage.world.session(http, "admin").bearer
            body = {"name": name, "engine": "redis", "uri": f"redis://127.0.0.1:{catcher.port}",
                    "classification": "internal", "secret_file": secret_file}  # fmt: skip
            added = http.post("/sources", json=body, headers=admin)
            if added.status_code != 201:
                return b""
            if callable(before_test):
                before_test()
            operator = stage.world.session(http, "operator").bearer
            http.post(f"/sources/{name}/test", headers=operator)
    finally:
        catcher.close()
    return bytes(catcher.got)


def test_proc_environ_does_not_reach_the_source(stage: Stage) -> None:
    got = _probe(stage, "environ-probe", "/proc/self/environ")
    assert b"AFFIDAVIT_" not in got, got[:200]


def test_secret_file_retargeted_into_the_home_is_not_sent(stage: Stage, tmp_path: Path) -> None:
    outside = tmp_path / "pw"
    outside.write_text("harmless")
    outside.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(outside)
    target = stage.world.home.resolve() / "affidavit.toml"
    marker = target.read_bytes().splitlines()[0][:20]

    def retarget() -> None:
        link.unlink()
        link.symlink_to(target)

    got = _probe(stage, "toctou-probe", str(link), retarget)
    assert b"harmless" not in got  # the probe did connect with something
    assert marker not in got, got[:200]


def test_source_add_needs_source_manage(stage: Stage) -> None:
    with stage.served.client() as http:
        for headers in (stage.world.session(http, "operator").bearer,
                        bearer(stage.world.token)):  # fmt: skip
            answer = _add_source(http, headers, "nope", secret_env="X")
            assert answer.status_code == 403, answer.text  # type: ignore[attr-defined]


# -- 4. exports --------------------------------------------------------------------------------


def test_export_approval_and_run_gates(stage: Stage) -> None:
    home = stage.world.home
    with stage.served.client() as http:
        op = stage.world.session(http, "operator").bearer
        token = bearer(stage.world.token)
        for headers in (op, token):
            answer = http.post("/export-specs/any/versions/1/approve", headers=headers)
            assert answer.status_code == 403, answer.text
        # an approver by API token (no MFA): an approval is never by token
        answer = http.post("/export-specs/any/versions/1/approve", headers=token)
        assert answer.status_code == 403
        # a run of a spec that was never approved (nor exists)
        for headers in (op, token):
            answer = http.post("/exports", json={"spec": "ghost"}, headers=headers)
            assert answer.status_code in (404, 409), answer.text
        # the approver cannot run, the viewer cannot propose
        answer = http.post("/exports", json={"spec": "ghost"},
                           headers=stage.world.session(http, "approver").bearer)  # fmt: skip
        assert answer.status_code == 403
        answer = http.post("/export-specs", json={"name": "x.toml", "text": ""},
                           headers=stage.world.session(http, "viewer").bearer)  # fmt: skip
        assert answer.status_code == 403
    assert count(home, "export.requested") == 0
    assert count(home, "export.spec_approved") == 0


SPEC = """
name = "to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "/tmp"

[input]
source = "exp-src"
dataset = "shop.customers"

[fields]
_id = "pseudonymise"
country = "keep"
"""


def test_proposer_cannot_approve_or_run_an_unapproved_spec(stage: Stage) -> None:
    with stage.served.client() as http:
        dual = stage.world.session(http, "operator").bearer
        admin = stage.world.session(http, "admin").bearer
        body = {"name": "exp-src", "engine": "mongodb", "uri": "mongodb://127.0.0.1:9/shop",
                "classification": "internal"}  # fmt: skip
        assert http.post("/sources", json=body, headers=admin).status_code == 201
        key = str(x25519.Identity.generate().to_public())
        added = http.post("/recipients", json={"name": "acme", "org": "Acme", "contact": "d@a.t",
                                               "public_key": key}, headers=admin)  # fmt: skip
        assert added.status_code == 201, added.text
        proposed = http.post("/export-specs", json={"name": "to-acme.toml", "text": SPEC},
                             headers=dual)  # fmt: skip
        approved = http.post("/export-specs/to-acme/versions/1/approve", headers=dual)
        assert approved.status_code in (401, 403, 404), approved.text
        assert proposed.status_code == 201, proposed.text
        token = bearer(stage.world.token)
        for headers in (dual, token):
            for body in ({"spec": "to-acme"}, {"spec": "to-acme", "version": 1}):
                ran = http.post("/exports", json=body, headers=headers)
                assert ran.status_code in (400, 403, 404, 409), ran.text
        # an approval by API token (approver permissions are never a token's) is refused too
        answer = http.post("/export-specs/to-acme/versions/1/approve", headers=token)
        assert answer.status_code == 403, answer.text
    assert count(stage.world.home, "export.spec_approved") == 0
    assert count(stage.world.home, "export.requested") == 0


def _statement(predicate_type: str, sha: str) -> bytes:
    return json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "out.jsonl.age", "digest": {"sha256": sha}}],
        "predicateType": predicate_type,
        "predicate": {"output": {"sha256": sha}, "recipient": {}, "contract": {},
                      "fields": []},
    }).encode()  # fmt: skip


def test_export_verify_refuses_a_manifest_not_signed_by_the_ledger_key(tmp_path: Path) -> None:
    ledger = NoteSigner("ledger.example", SigningKey.generate())
    forger = NoteSigner("ledger.example", SigningKey.generate())
    vkey = ledger.verifier().vkey()
    own_id = f"{ledger.key_id:08x}"
    identity = x25519.Identity.generate()
    ident_file = tmp_path / "id.key"
    ident_file.write_text(f"{identity}\n")
    ident_file.chmod(0o600)
    data = pyrage.encrypt(b"{}\n", [identity.to_public()])
    out = tmp_path / "out.jsonl.age"
    out.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    export_type = "https://affidavit.dev/attestations/export/v1"
    forged = [
        # another key, claiming the ledger key's id
        sign_envelope(_statement(export_type, sha), IN_TOTO, forger.key, own_id),
        # another key under its own id
        sign_envelope(_statement(export_type, sha), IN_TOTO, forger.key, f"{forger.key_id:08x}"),
        # the ledger key, but another predicate type (a backup attestation)
        sign_envelope(
            _statement("https://affidavit.dev/attestations/backup/v1", sha),
            IN_TOTO,
            ledger.key,
            own_id,
        ),
        # the ledger key, but not an in-toto payload
        sign_envelope(_statement(export_type, sha), "text/plain", ledger.key, own_id),
    ]
    for i, envelope in enumerate(forged):
        manifest = tmp_path / f"m{i}.dsse.json"
        manifest.write_text(envelope.to_json())
        result = verify_export(out, manifest=manifest, vkey=vkey, identity_file=ident_file)
        assert not result.ok, i
        assert [d.check for d in result.discrepancies] == ["signature"], (i, result.to_json())
        assert result.statement is None
    # two signatures: the forger's first under the ledger's id, then a garbage one
    genuine_type = sign_envelope(_statement(export_type, sha), IN_TOTO, forger.key, own_id)
    doubled = Envelope(payload=genuine_type.payload, payload_type=IN_TOTO,
                       signatures=(*genuine_type.signatures, Signature(own_id, b"\0" * 64)))  # fmt: skip
    manifest = tmp_path / "double.dsse.json"
    manifest.write_text(doubled.to_json())
    result = verify_export(out, manifest=manifest, vkey=vkey, identity_file=ident_file)
    assert [d.check for d in result.discrepancies] == ["signature"]


# -- 5. calendar -------------------------------------------------------------------------------


def test_calendar_manage_is_the_administrators(stage: Stage) -> None:
    body = {"title": "DORA register", "due": str(TODAY + timedelta(days=30))}
    with stage.served.client() as http:
        admin = stage.world.session(http, "admin").bearer
        made = http.post("/calendar/deadlines", json=body, headers=admin)
        assert made.status_code == 201, made.text
        deadline = made.json().get("id")
        others = [
            stage.world.session(http, n).bearer
            for n in ("operator", "approver", "security_officer", "auditor", "viewer")
        ]
        others.append(bearer(stage.world.token))
        others.append(_password_login(http, "outsider"))
        for headers in others:
            added = http.post("/calendar/deadlines", json=body, headers=headers)
            assert added.status_code == 403, added.text
            removed = http.delete(f"/calendar/deadlines/{deadline}", headers=headers)
            assert removed.status_code == 403, removed.text
    assert count(stage.world.home, "calendar.deadline_added") == 1
    assert count(stage.world.home, "calendar.deadline_removed") == 0
