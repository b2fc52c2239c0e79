"""Inventory use cases: sources, vaults, dataset classification and the live inventory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from affidavit.constants import Classification, EngineName, ExitCode
from affidavit.errors import Error, InputError, NotFound
from affidavit.models.approval import GatedOperation
from affidavit.models.inventory import (
    Dataset,
    SecretRef,
    ServerDescription,
    Source,
    SourceName,
    Vault,
    VaultName,
    VaultProbe,
    check_name,
    parse_vault_url,
)
from affidavit.models.uri import ConnectionUri
from affidavit.services.backends import engine_for, vault_backend
from affidavit.services.context import App
from affidavit.services.requests import Authority, gate

_MAX_REASON = 2000


# -- sources -------------------------------------------------------------------------------


def add_source(
    app: App,
    *,
    name: str,
    engine: EngineName,
    uri: str,
    secret: SecretRef | None,
    classification: Classification,
    region: str | None = None,
    owner: str | None = None,
) -> Source:
    """Register a source. The URI must not carry a password (use a secret reference)."""
    parsed = ConnectionUri.parse(engine, uri)
    if owner is not None and ("@" not in owner or any(ch.isspace() for ch in owner)):
        raise InputError(f"{owner!r} is not an e-mail address", hint="--owner team@example.com")
    source = Source(
        name=SourceName(check_name("source", name)),
        engine=engine,
        uri=parsed.text,
        secret=secret,
        classification=classification,
        region=region,
        owner=owner,
        created_at=datetime.now(UTC),
    )
    with app.change() as change:
        change.uow.sources.add(source)
        change.record(
            "source.added",
            f"source:{source.name}",
            {
                "engine": engine.value,
                "uri": parsed.redacted,
                "secret": secret.describe() if secret else None,
                "classification": classification.value,
                "region": region,
                "owner": owner,
            },
        )
    return source


def list_sources(app: App) -> list[Source]:
    """Every registered source."""
    with app.read() as uow:
        return uow.sources.list()


def list_datasets(app: App) -> list[Dataset]:
    """Every dataset the catalog knows, of every source, by source and name (one query)."""
    with app.read() as uow:
        return uow.datasets.list()


def get_source(app: App, name: str) -> tuple[Source, list[Dataset]]:
    """A source with the datasets the catalog knows of it."""
    with app.read() as uow:
        return uow.sources.get(name), uow.datasets.list(name)


def remove_source(app: App, name: str, *, reason: str, authority: Authority | None = None) -> None:
    """Unregister a source and its dataset records (backups, once they exist, stay). A gated
    operation (:mod:`affidavit.services.requests`)."""
    reason = _check_reason(reason)
    with app.read() as uow:
        uow.sources.get(name)  # NotFound before a request is recorded
    allowed = gate(
        app,
        GatedOperation.SOURCE_REMOVE,
        {"name": name, "reason": reason},
        target=f"source:{name}",
        reason=reason,
        authority=authority,
    )
    with app.change() as change:
        source = change.uow.sources.get(name)
        change.uow.sources.remove(name)
        change.record(
            "source.removed",
            f"source:{source.name}",
            {
                "reason": reason,
                "uri": ConnectionUri.parse(source.engine, source.uri).redacted,
                **allowed.event_details(),
            },
        )
        allowed.seal(change)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceTest:
    """The result of connecting to a source."""

    source: Source
    reachable: bool
    exit_code: int  # 0 reachable; 2 bad input (e.g. an unreadable secret); 3 unreachable
    error: str | None
    hint: str | None
    description: ServerDescription | None
    datasets: list[tuple[str, int]] = field(default_factory=list)


def test_source(app: App, name: str) -> SourceTest:
    """Connect to the source, describe it and count its datasets. Nothing is recorded."""
    with app.read() as uow:
        source = uow.sources.get(name)
    return _probe_source(app, source)


def _probe_source(app: App, source: Source) -> SourceTest:
    try:
        with engine_for(source, app.settings) as engine:
            description = engine.describe()
            counts = [(c.name, c.records) for c in engine.count_all()]
    except Error as exc:
        return SourceTest(
            source=source,
            reachable=False,
            exit_code=int(exc.exit_code),
            error=exc.message,
            hint=exc.hint or None,
            description=None,
        )
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        # the far end answered, but not as the engine's server does (a port of another
        # service, a proxy that answers garbage): unreachable as this engine, not a crash
        return SourceTest(
            source=source,
            reachable=False,
            exit_code=int(ExitCode.CANNOT_RUN),
            error=f"{source.uri} does not answer as a "
            f"{source.engine.value} server ({type(exc).__name__}: {str(exc)[:120]})",
            hint="check that the URI names the database's own port and the right engine",
            description=None,
        )
    return SourceTest(
        source=source,
        reachable=True,
        exit_code=0,
        error=None,
        hint=None,
        description=description,
        datasets=counts,
    )


# -- datasets ------------------------------------------------------------------------------


def classify_dataset(app: App, ref: str, level: Classification, *, reason: str) -> Dataset:
    """Give ``SOURCE/DATASET`` its own classification. The dataset must exist on the live
    source or already be known to the catalog."""
    source_name, sep, dataset = ref.partition("/")
    if not sep or not source_name or not dataset:
        raise InputError(
            f"name the dataset as SOURCE/DATASET, not {ref!r}",
            hint="for example orders-db/shop.orders or cache/db0",
        )
    reason = _check_reason(reason)
    with app.read() as uow:
        source = uow.sources.get(source_name)
        known = uow.datasets.get(source_name, dataset) is not None
    if not known:
        with engine_for(source, app.settings) as engine:
            engine.count_records(dataset)  # raises NotFound for an unknown dataset
    with app.change() as change:
        previous = change.uow.datasets.classify(source_name, dataset, level, reason)
        change.record(
            "dataset.classified",
            f"dataset:{source_name}/{dataset}",
            {"from": previous.value, "to": level.value, "reason": reason},
        )
        result = change.uow.datasets.get(source_name, dataset)
    assert result is not None
    return result


# -- vaults --------------------------------------------------------------------------------


def add_vault(
    app: App, *, name: str, url: str, region: str | None = None, immutable_days: int | None = None
) -> Vault:
    """Register a vault."""
    kind, normal = parse_vault_url(url)
    if immutable_days is not None and not 0 < immutable_days <= 36500:
        raise InputError(
            f"--immutable-days must be from 1 to 36500, not {immutable_days}",
            hint="the number of days artifacts stay locked",
        )
    vault = Vault(
        name=VaultName(check_name("vault", name)),
        kind=kind,
        url=normal,
        region=region,
        immutable_days=immutable_days,
        created_at=datetime.now(UTC),
    )
    with app.change() as change:
        change.uow.vaults.add(vault)
        change.record(
            "vault.added",
            f"vault:{vault.name}",
            {"url": normal, "kind": kind.value, "region": region, "immutable_days": immutable_days},
        )
    return vault


def list_vaults(app: App) -> list[Vault]:
    """Every registered vault."""
    with app.read() as uow:
        return uow.vaults.list()


def get_vault(app: App, name: str) -> tuple[Vault, VaultProbe]:
    """A vault with a fresh probe of its storage."""
    with app.read() as uow:
        vault = uow.vaults.get(name)
    return vault, vault_backend(vault).probe()


# -- the inventory -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInventory:
    """One source as inventory saw it."""

    test: SourceTest
    datasets: list[Dataset]


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultInventory:
    """One vault as inventory saw it."""

    vault: Vault
    probe: VaultProbe


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    """Sources with reachability, datasets with counts and classification, vaults."""

    taken_at: datetime
    sources: list[SourceInventory]
    vaults: list[VaultInventory]

    @property
    def unreachable(self) -> list[str]:
        """Names of the sources that could not be reached."""
        return [s.test.source.name for s in self.sources if not s.test.reachable]


def take_inventory(app: App, *, source_names: Iterable[str] | None = None) -> Inventory:
    """Probe every (or the named) source and vault, store the discovered record counts and
    record the inventory run in the ledger."""
    with app.read() as uow:
        sources = uow.sources.list()
        vaults = uow.vaults.list()
    if source_names is not None:
        wanted = set(source_names)
        unknown = wanted - {s.name for s in sources}
        if unknown:
            raise NotFound(
                f"no source named {sorted(unknown)[0]!r}",
                hint="`affidavit source list` shows the sources",
            )
        sources = [s for s in sources if s.name in wanted]
    tests = [_probe_source(app, s) for s in sources]
    probes = [VaultInventory(vault=v, probe=vault_backend(v).probe()) for v in vaults]
    taken_at = datetime.now(UTC)
    with app.change() as change:
        for test in tests:
            if test.reachable:
                change.uow.datasets.record_discovery(test.source.name, test.datasets)
        change.record(
            "inventory.taken",
            "inventory",
            {
                "sources": {
                    t.source.name: {
                        "reachable": t.reachable,
                        "version": t.description.version if t.description else None,
                        "datasets": len(t.datasets),
                        "records": sum(n for _, n in t.datasets),
                        "error": t.error,
                    }
                    for t in tests
                },
                "vaults": {p.vault.name: {"reachable": p.probe.reachable} for p in probes},
            },
        )
        listed = {t.source.name: change.uow.datasets.list(t.source.name) for t in tests}
    return Inventory(
        taken_at=taken_at,
        sources=[SourceInventory(test=t, datasets=listed[t.source.name]) for t in tests],
        vaults=probes,
    )


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InputError("a reason is required", hint='--reason "why this is done"')
    if len(reason) > _MAX_REASON or any(ord(ch) < 0x20 and ch not in "\t" for ch in reason):
        raise InputError(
            "the reason must be one line of at most 2000 characters", hint="shorten --reason"
        )
    return reason
