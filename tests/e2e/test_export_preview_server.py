"""The export preview through the REST API (issue 17): ``GET /api/v1/requests/{id}`` of an
export run shows the counts to everyone who may read requests and the sample only to the
requester and the people who may judge it. A real ``affidavit serve`` with real accounts
(TOTP), real SecantusDB and backups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from server_harness import make_world, serving
from tests.e2e.test_export_cli import _customers, prepare

from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def test_the_api_shows_the_sample_only_to_the_requester_and_its_judges(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    world = make_world(home)
    with serving(home) as served, served.client() as http:

        def get(name: str, request_id: str) -> Any:
            login = world.session(http, name)
            return http.get(f"/requests/{request_id}", headers=login.bearer)

        operator = world.session(http, "operator")
        asked = http.post(
            "/exports",
            json={"spec": "customers-to-acme", "reason": "churn study"},
            headers={**operator.bearer, "X-CSRF-Token": operator.csrf},
        )
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["request"]["id"]
        assert list(s.dest.iterdir()) == []

        as_approver = get("approver", request_id)
        assert as_approver.status_code == 200, as_approver.text
        preview = as_approver.json()["preview"]
        assert preview["counts"]["in"] == 40 and preview["counts"]["out"] == 40
        assert len(preview["sample"]) == 5 and preview["sample_withheld"] is None
        assert all(r["email"].startswith("*") for r in preview["sample"])

        mine = get("operator", request_id).json()["preview"]
        assert mine["sample"] == preview["sample"]

        # a security officer reads requests but may not judge this one: counts only
        officer = get("security_officer", request_id)
        assert officer.status_code == 200, officer.text
        seen = officer.json()["preview"]
        assert seen["counts"] == preview["counts"]
        assert seen["sample"] is None and seen["sample_withheld"]
        assert not any(r["_id"] in officer.text for r in preview["sample"])

        # an auditor and a viewer may not read requests at all
        for name in ("auditor", "viewer"):
            refused = get(name, request_id)
            assert refused.status_code in (403, 404), (name, refused.text)
            assert "sample" not in refused.text
            assert not any(r["_id"] in refused.text for r in preview["sample"])
