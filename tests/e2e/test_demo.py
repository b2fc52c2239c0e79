"""`affidavit demo` as a user runs it: a real process, real servers, an inventory of both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

AFFIDAVIT = [sys.executable, "-m", "affidavit"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AFFIDAVIT, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def test_demo_inventories_two_real_servers(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    proc = run("--home", str(home), "demo", "--scale", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    sources = {s["name"]: s for s in out["inventory"]["sources"]}
    assert set(sources) == {"orders-db", "session-cache"}
    assert all(s["reachable"] for s in sources.values())
    assert sources["orders-db"]["server"]["engine"] == "mongodb"
    assert sources["session-cache"]["server"]["engine"] == "redis"
    records = {d["name"]: d["records"] for s in sources.values() for d in s["datasets"]}
    assert records == {"shop.customers": 20, "shop.orders": 60, "db0": 160, "db1": 160}
    fingerprinted = {r["name"]: r["records"] for rs in out["fingerprints"].values() for r in rs}
    assert fingerprinted == records
    assert all(
        r["fingerprint"].startswith("afp1:exact:")
        for rs in out["fingerprints"].values()
        for r in rs
    )
    assert out["ledger"]["ok"] is True
    assert [b["status"] for b in out["backups"]] == ["complete", "complete"]
    live = {r["name"]: r["fingerprint"] for rs in out["fingerprints"].values() for r in rs}
    backed_up = {name: fp for b in out["backups"] for name, fp in b["datasets"].items()}
    assert backed_up == live
    assert [v["ok"] for v in out["verifications"]] == [True, True]
    assert all(d["ok"] and d["fingerprint_match"] for d in out["drills"])
    assert out["tampered"]["caught"] is True
    assert "artifact-hash-mismatch" in out["tampered"]["findings"]
    assert out["ledger"]["findings"] == []
    # certification: a policy check with findings, an exception, a verified evidence package
    check = out["policy_check"]
    assert check["ok"] is False and check["findings"]
    controls = {f["control"] for f in check["findings"]}
    assert {"backup.immutable", "verify.recent"} <= controls
    assert check["excepted"] == [
        {"control": "dataset.classified", "subject": "dataset:session-cache/db0"}
    ]
    assert out["evidence_verify"]["ok"] is True and out["evidence_verify"]["findings"] == []
    assert Path(out["evidence"]["path"]).is_file()
    report = Path(out["report_html"]).read_text(encoding="utf-8")
    assert "<svg" in report and "<script" not in report.lower()
    verified = run("evidence", "verify", out["evidence"]["path"], "--public-key", out["vkey"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the home is left for a look around, offline
    shown = run("--home", str(home), "source", "show", "orders-db", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {d["name"] for d in json.loads(shown.stdout)["datasets"]} == {
        "shop.customers",
        "shop.orders",
    }


def test_demo_refuses_a_home_that_has_a_catalog(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run("--home", str(home), "init").returncode == 0
    proc = run("--home", str(home), "demo")
    assert proc.returncode == 2
    assert "fresh home" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_and_help_work_without_a_home(tmp_path: Path) -> None:
    env = {**os.environ, "AFFIDAVIT_HOME": str(tmp_path / "none")}
    assert run("--version", env=env).stdout.startswith("affidavit ")
    helped = run("--help", env=env)
    assert helped.returncode == 0
    assert "inventory" in helped.stdout
    assert not (tmp_path / "none").exists()
