"""``backup ingest``: register a backup another tool made (a mongodump folder or archive,
an RDB). The whole input is read, checked and fingerprinted before anything is recorded;
meanwhile its large files are encrypted into staging files (:mod:`.spool`); then every file
is stored in the vault, encrypted, with each dataset's index.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affidavit.constants import INGESTED_LABEL
from affidavit.crypto.age import new_identity
from affidavit.errors import InputError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import Fingerprint
from affidavit.formats.base import RecordReader, check_input_path
from affidavit.input_files import is_regular_entry
from affidavit.models.backup import ArtifactRole, Backup
from affidavit.models.inventory import Source
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.private_temp import private_folder
from affidavit.services.artifacts import Staged, worth_a_process
from affidavit.services.backends import format_engine, reader_class, vault_backend
from affidavit.services.backup.recording import Captured, Run, begin, fail, finish, resolve_vault
from affidavit.services.backup.spool import Spooler, changed, stat_key
from affidavit.services.context import App
from affidavit.services.fingerprint import fingerprint_datasets

INGEST_FORMATS = ("mongodump", "mongodump-archive", "rdb")


def ingest_backup(
    app: App,
    path: Path,
    *,
    fmt: str,
    source_name: str | None = None,
    vault_name: str | None = None,
    retain_days: int | None = None,
    reporter: Reporter | None = None,
) -> Backup:
    """Register a backup another tool made: copy it into a vault (encrypted) and fingerprint
    it. The whole input is checked (framing, BSON, CRCs) before the backup is recorded."""
    rep = reporter or SilentReporter()
    if fmt not in INGEST_FORMATS:
        raise InputError(f"cannot ingest format {fmt!r}", hint=f"use {'|'.join(INGEST_FORMATS)}")
    check_input_path(path)  # a FIFO, socket or device is refused before anything opens it
    source = None
    if source_name is not None:
        with app.read() as uow:
            source = uow.sources.get(source_name)
        _check_engine(fmt, source)
    label = source.name if source else INGESTED_LABEL
    vault = resolve_vault(app, vault_name)
    reader = reader_class(fmt)(path)
    files = _ingest_files(path, fmt)
    seen = {file: stat_key(file) for _, file in files}
    dataset_of = _datasets_by_file(reader, fmt, files)
    rep.stage(f"checking {path}")
    keys = new_identity()
    # the whole input is read, checked and fingerprinted before anything is recorded;
    # meanwhile the large files are encrypted into spool files of the vault (Spooler)
    spooler = Spooler(keys[1], [(file, seen[file]) for _, file in files], vault_backend(vault))
    encoding = reader.encoding.value
    try:
        with (
            private_folder("ingest") as tmp,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="affidavit-index") as indexer,
        ):
            try:
                spooler.start()
                big = any(worth_a_process(size) for size, _ in seen.values())
                accumulators = _check_and_fingerprint(reader, big=big)
                # each dataset's fingerprint and index are folded (to private temporary
                # files) while the encryption may still be running
                indexes = _fold_indexes(indexer, accumulators, Path(tmp), encoding, spooler)
                spooler.join()
            except BaseException as exc:
                spooler.abort()
                if isinstance(exc, InputError) and not exc.hint:
                    exc.hint = f"{path} is not a complete, valid {fmt}; nothing was recorded"
                raise
            run = begin(
                app,
                source=source,
                source_label=label,
                vault=vault,
                kind="ingest",
                fmt=fmt,
                retain_days=retain_days,
                reporter=rep,
                keys=keys,
            )
            del keys  # only the wrapped identity is kept
            try:
                results = _store_ingested(
                    run, files, indexes, fmt=fmt, dataset_of=dataset_of, seen=seen,
                    spooled=spooler.spooled,
                )  # fmt: skip
                captured = Captured(
                    datasets=sorted(results),
                    consistency={"mode": "as-ingested", "source_path": str(path)},
                    server_version=None,
                )
                return finish(
                    run, source=source, source_label=label, vault=vault, captured=captured,
                    kind="ingest", fmt=fmt,
                )  # fmt: skip
            except BaseException as exc:
                fail(run, exc)
                raise
    finally:
        spooler.discard()


@dataclass(frozen=True, slots=True)
class _Folded:
    """A dataset's fingerprint, its index file and, for a large index, its spooled
    ciphertext."""

    fingerprint: Fingerprint
    index: Path
    spooled: Staged | None


def _fold_indexes(
    indexer: ThreadPoolExecutor,
    accumulators: dict[str, Accumulator],
    tmp: Path,
    encoding: str,
    spooler: Spooler,
) -> dict[str, Future[_Folded]]:
    """Start folding each dataset's fingerprint and index (to a file in ``tmp``); an index of
    :data:`.PROCESS_FROM` bytes or more is then encrypted into a spool file too, while the
    data files may still be encrypting."""

    def fold(acc: Accumulator, index: Path, name: str) -> _Folded:
        fingerprint, _ = acc.finish(index, dataset=name, encoding=encoding)
        large = worth_a_process(index.stat().st_size)
        return _Folded(fingerprint, index, spooler.spool_now(index) if large else None)

    return {
        name: indexer.submit(fold, acc, tmp / f"{n}.afpidx", name)
        for n, (name, acc) in enumerate(accumulators.items())
    }


def _store_ingested(
    run: Run,
    files: list[tuple[str, Path]],
    indexes: dict[str, Future[_Folded]],
    *,
    fmt: str,
    dataset_of: dict[Path, str],
    seen: dict[Path, tuple[int, int]],
    spooled: dict[Path, Staged],
) -> list[tuple[str, int, str]]:
    """Copy every file into the vault and store each dataset's index (``indexes``: being
    folded by a thread meanwhile); returns (name, records, fingerprint) per dataset."""
    rep = run.reporter
    for rel, file in files:
        rep.task(f"storing {rel}", seen[file][0])
        role = (
            ArtifactRole.DATA
            if rel.endswith((".bson", ".bson.gz", ".rdb", ".archive")) or fmt != "mongodump"
            else ArtifactRole.METADATA
        )
        _copy_file(
            run, file, rel=rel, role=role, dataset=dataset_of.get(file), seen=seen[file],
            spooled=spooled.get(file),
        )  # fmt: skip
        rep.finish()
    results = []
    for name, folding in indexes.items():
        folded = folding.result()
        run.store_file(
            f"index/{name}.afpidx", folded.index, role=ArtifactRole.INDEX, dataset=name,
            staged=folded.spooled,
        )  # fmt: skip
        results.append((name, folded.fingerprint.count, folded.fingerprint.text))
    return results


def _check_and_fingerprint(reader: RecordReader, *, big: bool) -> dict[str, Accumulator]:
    """Read the whole input once: framing, a full BSON decode of every document (or the RDB's
    structure and CRC-64, the archive's CRCs), and the exact fingerprint of every dataset
    (:func:`~affidavit.services.fingerprint.fingerprint_datasets`; with every core when the
    input is ``big``). Raises ``InputError`` (exit 2) for anything malformed."""
    workers = (os.cpu_count() or 1) if big else 1
    return fingerprint_datasets(reader, None, profile="exact", workers=workers, check=True)


def _check_engine(fmt: str, source: Source) -> None:
    """Refuse to file a backup under a source of another engine (an RDB under a MongoDB
    source): its manifest, drills and policy results would speak of the wrong database."""
    engine = format_engine(fmt)
    if source.engine is not engine:
        fitting = "|".join(f for f in INGEST_FORMATS if format_engine(f) is source.engine)
        raise InputError(
            f"--format {fmt} holds {engine.value} data, but source {source.name} is a "
            f"{source.engine.value} source",
            hint=f"name a {engine.value} source with --source (or none); a {source.engine.value} "
            f"source takes --format {fitting}",
        )


def _ingest_files(path: Path, fmt: str) -> list[tuple[str, Path]]:
    """(artifact name, file) pairs to copy, in a stable order."""
    if path.is_file():
        return [(path.name, path)]
    if fmt != "mongodump":
        raise InputError(f"{path} is a folder; --format {fmt} takes a file")
    # a pipe, socket, device or dangling link in a dump is refused (named), never skipped
    # and never opened
    entries = sorted(p for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    files = [p for p in entries if is_regular_entry(p)]
    if not files:
        raise InputError(f"{path} holds no files")
    out = []
    for file in files:
        rel = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        out.append((rel, file))
    _check_metadata(path, [r for r, _ in out])
    return out


def _check_metadata(root: Path, rels: list[str]) -> None:
    names = set(rels)
    for rel in rels:
        for suffix in (".bson", ".bson.gz"):
            if rel.endswith(suffix) and "/" in rel:
                stem = rel[: -len(suffix)]
                if stem.rsplit("/", 1)[-1] in ("oplog",) or stem.rsplit("/", 1)[-1].startswith(
                    "system."
                ):
                    continue
                meta = stem + ".metadata.json" + (".gz" if suffix.endswith(".gz") else "")
                if meta not in names and stem + ".metadata.json" not in names:
                    raise InputError(
                        f"{root / rel} has no metadata file ({meta})",
                        hint="mongorestore needs it to recreate the collection; dump again with "
                        "mongodump",
                    )


def _datasets_by_file(reader: Any, fmt: str, files: list[tuple[str, Path]]) -> dict[Path, str]:
    """Which dataset each copied file holds, named exactly as the reader (and so the manifest)
    names it; refuses an input where a dataset's file would not be copied (hidden, symlinked)
    so that no signed dataset lacks its data artifact."""
    if fmt != "mongodump":
        return {}
    by_file = {file.resolve(): name for name, file in reader.dataset_files().items()}
    copied = {file.resolve(): file for _, file in files}
    missing = sorted(name for resolved, name in by_file.items() if resolved not in copied)
    if missing:
        raise InputError(
            f"the data of {', '.join(missing)} is in a hidden or linked file that ingest "
            "does not copy",
            hint="ingest a plain copy of the dump (no symlinks, no hidden folders)",
        )
    return {copied[resolved]: name for resolved, name in by_file.items()}


def _copy_file(
    run: Run,
    file: Path,
    *,
    rel: str,
    role: ArtifactRole,
    dataset: str | None,
    seen: tuple[int, int],
    spooled: Staged | None = None,
) -> None:
    """Store and record ``file`` in the vault, encrypted (from its ``spooled`` ciphertext when
    the spooler made one). ``seen`` is its (size, mtime) when it was checked and
    fingerprinted: a file that changed since then is refused, so the bytes the vault stores
    are the bytes that were fingerprinted."""
    if stat_key(file) != seen:
        raise changed(file)
    artifact = run.writer.store_file(
        rel, file, role=role, dataset=dataset, staged=spooled, advance=run.reporter.advance
    )
    if stat_key(file) != seen:
        raise changed(file)
    run.stored(artifact)
