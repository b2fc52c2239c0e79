"""Attack pass on session 10's verification work: fast verification after a deep one, the
pipeline of every artifact's segments on one pool, and the lazy start-up of commands.

Findings (each test below failed on the code as found, then the fix):

- a Ctrl-C that lands while the pipeline's feeder thread starts left the feeder (and the
  segment threads) running behind the command: nobody held the pipeline to close it
  (``Pipeline`` started its thread in its constructor; now ``start`` after the reader
  holds it, and a feeder stops waiting for a permit once the pipeline is closed);
- a Ctrl-C during a command exited 130 with nothing said (typer turns the
  ``KeyboardInterrupt`` into ``Exit(130)``, which bypassed ``error: interrupted``);
- a Ctrl-C while ``affidavit.cli.main`` itself loads (~40 ms) printed a traceback;
- a setting that does not exist in ``affidavit.toml`` was an internal error (exit 4) when
  read from the real ``os.environ`` (``None in os.environ`` raises ``TypeError``);
- a file grown while its segments were read passed (the segments read the signed ranges
  only; the size was checked at the open): now checked again once they are in;
- an error of a run whose stderr is not a terminal loaded rich to print one line (and
  passed ESC through): now written plainly, control characters escaped.

What held is tested too: a rolled-back or deleted ``HOME/keys/ledger.signed`` never makes a
run fast, another backup's deep pass does not vouch, a planted symlink or FIFO is refused in
fast mode, a flipped byte in one of hundreds of tiny artifacts is found alike fast and deep on
1 and 2 workers, a file cut while read fails, ``--workers`` out of range is bad input (now
with a hint), a closed stderr keeps the exit code."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import bson
import pytest
from test_verify_segments import _data, _manifest, _verify, _writable, ingested, small_segments

from affidavit.config import load_settings
from affidavit.services.context import open_app
from affidavit.services.verify import segments as segments_module
from affidavit.services.verify.vouch import deep_vouch

__all__ = ["ingested", "small_segments"]  # fixtures, used by name

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("first_run_deep"),
]  # the deep run is their subject

_AFFIDAVIT = str(Path(sys.executable).with_name("affidavit"))


def _run(*args: str, home: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``affidavit --home HOME ARGS`` as its own process (or ``python -c CODE``)."""
    command = [sys.executable, "-c", code] if code else [_AFFIDAVIT, "--home", str(home), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, check=False
    )


def _manifest_sha256(home: Path, backup_id: str) -> str:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (digest,) = db.execute(
            "select manifest_sha256 from backups where id = ?", (backup_id,)
        ).fetchone()
    return str(digest)


def _vouch(home: Path, backup_id: str, manifest_sha256: str | None = None) -> int | None:
    with open_app(load_settings(home=home)) as app:
        return deep_vouch(app, backup_id, manifest_sha256 or _manifest_sha256(home, backup_id))


def _codes(out: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["code"], f["subject"]) for f in out["findings"])


def _affidavit_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("affidavit-")]


# -- findings --------------------------------------------------------------------------------


def test_ctrl_c_while_the_pipeline_starts_leaves_no_thread_running(
    cli: Any, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``KeyboardInterrupt`` of a Ctrl-C can land in ``Thread.start`` (it waits for the
    new thread): the feeder is then running but the pipeline was never handed to the reader,
    so nothing closed it: it stayed blocked on a permit, its segment threads alive, its
    files open. Now the reader holds the pipeline before its thread starts."""
    assert not _affidavit_threads()
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        real_start(self)
        if self.name == "affidavit-pipeline":
            raise KeyboardInterrupt  # as the signal would, once the thread runs

    monkeypatch.setattr(threading.Thread, "start", start)
    r = cli("verify", ingested["backup_id"], "--workers", "2", "--json")
    assert r.code == 130 and "Traceback" not in r.err
    deadline = time.monotonic() + 5
    while _affidavit_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _affidavit_threads()
    assert r.err.strip() == "error: interrupted"


def test_ctrl_c_during_a_command_says_interrupted(home: Path) -> None:
    """typer turns a command's ``KeyboardInterrupt`` into ``Exit(130)``: the run ended with
    130 and an empty stderr. Injected the way a signal arrives (a ``KeyboardInterrupt`` out of
    the command's own lazy import of the settings), in a process of its own."""
    code = f"""
import builtins, sys
real = builtins.__import__
def hooked(name, globals=None, *args, **kwargs):
    if name == "affidavit.config" and (globals or dict()).get("__name__") == "affidavit.cli.state":
        raise KeyboardInterrupt  # the command reading its settings: inside typer's run
    return real(name, globals, *args, **kwargs)
builtins.__import__ = hooked
sys.argv = ["affidavit", "--home", {str(home)!r}, "verify", "bk-x", "--json"]
from affidavit.cli.main import run
run()
"""
    r = _run(home=home, code=code)
    assert r.returncode == 130, r.stderr
    assert r.stderr == "error: interrupted\n" and r.stdout == ""


def test_ctrl_c_while_the_cli_module_loads_is_one_line(home: Path) -> None:
    """A Ctrl-C in the first ~40 ms (``affidavit.cli.main`` importing typer) printed a
    traceback of the import machinery; now it is the one line any Ctrl-C gives."""
    code = """
import builtins, sys
real = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == "typer":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = hooked
sys.argv = ["affidavit", "verify", "bk-x"]
from affidavit.cli.main import run
run()
"""
    r = _run(home=home, code=code)
    assert r.returncode == 130, r.stderr
    assert r.stderr == "error: interrupted\n" and "Traceback" not in r.stderr


def test_an_unknown_setting_in_the_config_file_is_bad_input(home: Path) -> None:
    """Naming where a bad setting came from asked ``None in os.environ`` for a key that is
    no setting (no environment variable): ``TypeError``, exit 4 "internal error"."""
    (home / "affidavit.toml").write_text('workers = "x"\n')
    for args in (["verify", "bk-x", "--json"], ["run-due", "--json"], ["backup", "list"]):
        r = _run(*args, home=home)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.splitlines()
        assert lines[0].startswith("error: invalid setting 'workers'"), r.stderr
        assert "affidavit.toml" in lines[0] and lines[1].startswith("hint:")
        assert len(lines) == 2 and "Traceback" not in r.stderr


# -- what held -------------------------------------------------------------------------------


def test_a_rolled_back_signer_memory_never_makes_a_run_fast(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    """``HOME/keys/ledger.signed`` put back to a note from before the deep pass (a restore of
    an old HOME/keys): its tree lacks the deep entry, so nothing vouches; the run is deep or
    refused, never fast on a root that does not hold what vouches."""
    backup_id = ingested["backup_id"]
    memory = home / "keys" / "ledger.signed"
    old = memory.read_bytes()
    code, deep = _verify(cli, backup_id)
    assert code == 0 and deep["mode"] == "deep"
    assert _vouch(home, backup_id) is not None
    memory.write_bytes(old)
    assert _vouch(home, backup_id) is None
    r = cli("verify", backup_id, "--json")
    assert "Traceback" not in r.err
    if r.code == 0:
        assert json.loads(r.out)["mode"] == "deep"
    else:
        assert r.code == 3 and len(r.err.strip().splitlines()) <= 2


def test_a_deleted_or_foreign_signer_memory_never_makes_a_run_fast(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    backup_id = ingested["backup_id"]
    assert _verify(cli, backup_id)[1]["mode"] == "deep"
    memory = home / "keys" / "ledger.signed"
    genuine = memory.read_bytes()
    memory.unlink()
    assert _vouch(home, backup_id) is None
    code, out = _verify(cli, backup_id)
    assert code == 0 and out["mode"] == "deep"
    # a note of another home's key in its place: refused, nothing fast, one line
    other = tmp_path / "other"
    assert cli("init", home_dir=other).code == 0
    shutil.copyfile(other / "keys" / "ledger.signed", memory)
    assert _vouch(home, backup_id) is None
    r = cli("verify", backup_id, "--json")
    assert r.code == 3 and "not a checkpoint signed by this ledger's key" in r.err
    assert r.out == "" and "Traceback" not in r.err
    memory.write_bytes(genuine)


def test_another_backups_deep_pass_does_not_vouch(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """A passed deep verification of backup A, offered for backup B (even under A's own
    manifest digest): the subject is checked, not only the digest."""
    first = ingested["backup_id"]
    assert _verify(cli, first)[1]["mode"] == "deep"
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    second = json.loads(r.out)["backup_id"]
    assert _vouch(home, second) is None
    assert _vouch(home, second, _manifest_sha256(home, first)) is None
    assert _verify(cli, second)[1]["mode"] == "deep"
    assert _verify(cli, first)[1]["mode"] == "fast"


def test_a_symlink_or_fifo_planted_for_an_artifact_is_refused_in_fast_mode(
    cli: Any, home: Path, ingested: dict[str, Any], tmp_path: Path
) -> None:
    """Fast mode reads through the same open as deep: a symlink to a copy of the very bytes,
    or a FIFO that would block a reader, is not a file of the vault."""
    backup_id = ingested["backup_id"]
    assert _verify(cli, backup_id)[1]["mode"] == "deep"
    art = _data(_manifest(home, backup_id))
    path = ingested["vault"] / art.path
    _writable(path.parent)
    copy = tmp_path / "copy.age"
    shutil.copyfile(path, copy)
    path.rename(tmp_path / "genuine.age")
    path.symlink_to(copy)
    code, out = _verify(cli, backup_id)
    assert code == 1 and out["mode"] == "fast"
    assert ("artifact-not-a-file", art.path) in _codes(out)
    path.unlink()
    os.mkfifo(path)
    code, out = _verify(cli, backup_id)
    assert code == 1 and ("artifact-not-a-file", art.path) in _codes(out)


def test_hundreds_of_tiny_artifacts_one_flipped_alike_fast_and_deep(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    """360 artifacts of a few bytes each on one pool: one flipped byte in a data artifact
    and one in a metadata artifact give the same findings on 1 and 2 workers, fast and
    deep, as the sequential run words them."""
    vault = tmp_path / "vault"
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0
    folder = tmp_path / "dump" / "shop"
    folder.mkdir(parents=True)
    for n in range(120):
        docs = b"".join(bson.encode({"_id": i, "p": "x" * (i % 50)}) for i in range(n % 5))
        (folder / f"c{n:03d}.bson").write_bytes(docs)
        (folder / f"c{n:03d}.metadata.json").write_text(
            json.dumps({"options": {}, "indexes": [], "collectionName": f"c{n:03d}"})
        )
    r = cli("backup", "ingest", str(tmp_path / "dump"), "--format", "mongodump", "--json")
    assert r.code == 0, r.err
    backup_id = json.loads(r.out)["backup_id"]
    code, first = _verify(cli, backup_id, "--workers", "2")
    assert code == 0 and first["mode"] == "deep" and first["coverage"]["artifacts_checked"] == 360
    assert _verify(cli, backup_id, "--workers", "2")[1]["mode"] == "fast"
    flipped = []
    for name in ("c044.bson.age", "c077.metadata.json.age"):
        (path,) = vault.rglob(name)
        _writable(path.parent)
        raw = bytearray(_writable(path).read_bytes())
        raw[-20] ^= 1
        path.write_bytes(bytes(raw))
        flipped.append(str(path.relative_to(vault)))
    seen = {}
    for args in (("--workers", "1"), ("--workers", "2"), ("--workers", "2", "--deep")):
        code, out = _verify(cli, backup_id, *args)
        assert code == 1
        seen[args] = _codes(out)
        assert {s for _, s in seen[args]} == set(flipped)
        assert ("segment-mismatch", flipped[0]) in seen[args]
        assert ("artifact-undecryptable", flipped[0]) in seen[args]
    assert len({tuple(v) for v in seen.values()}) == 1


@pytest.mark.parametrize("workers", ["0", "-1", "1025", "99999999999999999999999", "two"])
def test_workers_out_of_range_is_bad_input(home: Path, workers: str) -> None:
    r = _run("verify", "bk-x", "--workers", workers, "--json", home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == "" and "--workers" in r.stderr
    if workers != "two":  # a number: the service's own message, with its hint
        assert r.stderr.splitlines()[1].startswith("hint: "), r.stderr


def test_an_artifact_grown_while_its_segments_are_read_is_not_passed(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment path checked the file's size when it opened it, then read exactly the
    signed ranges (``pread``): bytes appended meanwhile were never seen, and the run passed a
    file that is no longer the signed one (a sequential read goes to the end and fails it).
    Now the size is checked again once the segments are in; a change sends the artifact to
    the sequential pass. Appended by the worker reading the last segment, fast and deep."""
    backup_id = ingested["backup_id"]
    art = _data(_manifest(home, backup_id))
    path = ingested["vault"] / art.path
    real = segments_module.segment_part
    grown: list[int] = []

    def segment_part(payload: Any, place: Any, *args: Any, **kwargs: Any) -> Any:
        part = real(payload, place, *args, **kwargs)
        if place.offset + place.size == art.size and os.fstat(payload.fd).st_size == art.size:
            path.chmod(0o644)  # after its lock was checked
            with open(path, "ab") as fh:  # the file the worker reads, grown behind it
                fh.write(b"appended while read")
            path.chmod(0o444)
            grown.append(place.offset)
        return part

    assert _verify(cli, backup_id)[1]["mode"] == "deep"
    _writable(path)
    genuine = path.read_bytes()
    monkeypatch.setattr(segments_module, "segment_part", segment_part)
    for args in ((), ("--deep",)):
        path.write_bytes(genuine)
        path.chmod(0o444)  # locked again
        grown.clear()
        code, out = _verify(cli, backup_id, "--workers", "2", *args)
        assert grown and code == 1, out
        assert ("artifact-hash-mismatch", art.path) in _codes(out)
        path.chmod(0o644)


def test_an_artifact_cut_while_its_segments_are_read_fails(
    cli: Any, home: Path, ingested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held: a file cut short before its last segment is read gives that segment the digest
    of the bytes it has (a ``segment-mismatch``), and the sequential pass words the rest."""
    backup_id = ingested["backup_id"]
    art = _data(_manifest(home, backup_id))
    path = ingested["vault"] / art.path
    real = segments_module.segment_part

    def segment_part(payload: Any, place: Any, *args: Any, **kwargs: Any) -> Any:
        if place.offset + place.size == art.size and os.fstat(payload.fd).st_size == art.size:
            path.chmod(0o644)  # after its lock was checked
            os.truncate(path, art.size - 100)
            path.chmod(0o444)
        return real(payload, place, *args, **kwargs)

    assert _verify(cli, backup_id)[1]["mode"] == "deep"
    genuine = path.read_bytes()
    monkeypatch.setattr(segments_module, "segment_part", segment_part)
    for args in ((), ("--deep",)):
        code, out = _verify(cli, backup_id, "--workers", "2", *args)
        assert code == 1, out
        assert ("segment-mismatch", art.path) in _codes(out)
        assert ("artifact-hash-mismatch", art.path) in _codes(out)
        _writable(path).write_bytes(genuine)
        path.chmod(0o444)


def test_an_error_of_a_json_run_is_one_plain_line_without_rich(home: Path) -> None:
    """``rich`` is loaded only to show things to people: an error of a command whose output
    goes to a pipe (a ``--json`` script) loaded it anyway, just to print one line (~15 ms of
    start-up on every failing scripted run). Now written plainly, with control characters
    shown as escapes (rich passed ESC through)."""
    code = f"""
import sys
from affidavit.cli.main import main
from affidavit.cli.output import error
status = main(["--home", {str(home)!r}, "verify", "bk-none", "--json"])
error("bell\\x07 escape\\x1b[2J\\r\\nnext", "a hint")
print(status, "rich" in sys.modules)
"""
    r = _run(home=home, code=code)
    assert r.stdout.split() == ["2", "False"], r.stderr
    assert r.stderr.splitlines() == [
        "error: no backup 'bk-none'",
        "hint: `affidavit backup list` shows the backups",
        "error: bell\\x07 escape\\x1b[2J next",
        "hint: a hint",
    ]


def test_an_error_with_stderr_closed_still_exits_with_its_code(home: Path) -> None:
    """``affidavit ... 2>&-``: Python's ``sys.stderr`` is None; the error line cannot be
    written, the exit code still says what happened (no traceback to nowhere, no exit 1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFIDAVIT_")}
    r = subprocess.run(
        [_AFFIDAVIT, "--home", str(home), "verify", "bk-none", "--json"],
        stdout=subprocess.PIPE,
        env=env,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(2),  # the child only closes its stderr
    )
    assert r.returncode == 2 and r.stdout == b""
