"""The application context every use case runs in: settings, catalog, the ledger's signing
identity, and the one choke point through which state changes are made (a catalog write plus
its ledger event and the checkpoint that signs it, one transaction).

The ledger identity lives in the home, next to nothing else secret:

- ``HOME/keys/ledger.key``: the Ed25519 signing key (``crypto.signing`` key file, mode 0600);
- ``HOME/keys/ledger.origin``: one line, the log's origin, e.g.
  ``affidavit.local/db-host/3f9c01ab``. The origin is also the note key name, so the verifier
  key ``<origin>+<key id>+<base64>`` names the log it vouches for.

Both are created once by ``affidavit init`` (:func:`affidavit.services.ledger.setup_ledger`).

Who acts. A CLI command in local mode acts as the asserted actor of the settings (``--actor``
or the OS login name). The server opens one :class:`App` per process and runs each request
inside :meth:`App.acting_as` with the request's authenticated :class:`Principal`: for that
request (its context; context variables follow it into the worker thread that runs it)
``App.actor`` is the principal's account name, every event it records names that account,
says how it was authenticated (``details.auth``) and carries the request's client address
and agent. Threads that a service starts itself do not inherit it, and none records events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from affidavit.catalog.store import POOL_KEPT, Catalog, UnitOfWork
from affidavit.config import Settings
from affidavit.crypto.note import NoteSigner, NoteVerifier
from affidavit.crypto.signing import load_signing_key
from affidavit.errors import FormatError, KeystoreError
from affidavit.ledger.log import LedgerLog, LogState, utc_text
from affidavit.models.ledger import ClientInfo, Event
from affidavit.services.signer_memory import Signed, SignerMemory, guard, settle

if TYPE_CHECKING:  # (annotations only; the CLI's start-up does not need the identity models)
    from affidavit.models.identity import Principal

KEYS_DIRNAME = "keys"
LEDGER_KEY_FILENAME = "ledger.key"
LEDGER_ORIGIN_FILENAME = "ledger.origin"
_MAX_ORIGIN = 255

SYNC_THREADS: Final = POOL_KEPT
"""The most synchronous calls (services) a server process should run at once: as many as a
server catalog keeps connections (``catalog.store.POOL_KEPT``)."""


def ledger_key_path(home: Path) -> Path:
    """Where the ledger's signing key lives."""
    return home / KEYS_DIRNAME / LEDGER_KEY_FILENAME


def ledger_origin_path(home: Path) -> Path:
    """Where the ledger's origin line lives."""
    return home / KEYS_DIRNAME / LEDGER_ORIGIN_FILENAME


@dataclass(frozen=True, slots=True)
class LedgerIdentity:
    """The log's origin and the key that signs its checkpoints (key name = origin)."""

    origin: str
    signer: NoteSigner = field(repr=False)

    @property
    def verifier(self) -> NoteVerifier:
        """The matching verifier."""
        return self.signer.verifier()

    @property
    def vkey(self) -> str:
        """The verifier key ``<origin>+<8 hex key id>+<base64(0x01 || pubkey)>``."""
        return self.verifier.vkey()

    @property
    def keyid(self) -> str:
        """The 8-hex key ID (also the DSSE ``keyid`` of attestations)."""
        return f"{self.signer.key_id:08x}"


def read_origin(path: Path) -> str:
    """Read and check an origin file; raise :class:`KeystoreError` or :class:`FormatError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read the ledger origin {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path} is not UTF-8") from exc
    if not text.endswith("\n") or text.count("\n") != 1 or len(text) > _MAX_ORIGIN + 1:
        raise FormatError(f"{path} must hold exactly one line: the ledger origin")
    return text[:-1]


def load_ledger_identity(home: Path) -> LedgerIdentity | None:
    """The identity kept in ``home``, or None when neither file exists (not set up yet).

    Raises :class:`KeystoreError` when only one of the two files exists or the key cannot be
    read: the ledger must then not go on without its key.
    """
    key_path, origin_path = ledger_key_path(home), ledger_origin_path(home)
    has_key, has_origin = key_path.exists(), origin_path.exists()
    if not has_key and not has_origin:
        return None
    if not (has_key and has_origin):
        missing = key_path if not has_key else origin_path
        raise KeystoreError(
            f"the ledger identity is incomplete: {missing} is missing",
            hint="restore it from your backup of the home; a new key cannot vouch for old "
            "checkpoints",
        )
    origin = read_origin(origin_path)
    return LedgerIdentity(origin=origin, signer=NoteSigner(origin, load_signing_key(key_path)))


@dataclass
class Change:
    """One unit of work in progress: repositories plus :meth:`record` for its events."""

    uow: UnitOfWork
    actor: str
    client: ClientInfo
    identity: LedgerIdentity | None = None
    # how the acting identity was established (``AuthMethod`` value), added to every event's
    # details as ``auth`` unless the event says it itself; None: the asserted local actor
    auth: str | None = None
    events: list[Event] = field(default_factory=list)
    # the log as this process last committed it, with the root it signed (see App.change)
    resume: tuple[LogState, bytes] | None = field(default=None, repr=False)
    # the signer's memory of the newest tree it signed (None before the ledger has a key)
    memory: SignerMemory | None = field(default=None, repr=False)
    fork_from: Signed | None = field(default=None, repr=False)
    _log: LedgerLog | None = field(default=None, init=False, repr=False)
    resumed: bool = field(default=False, init=False, repr=False)

    @property
    def resumed_tree(self) -> tuple[int, bytes] | None:
        """The (size, root) the log was resumed from (this process's last commit, re-checked
        against the catalog's head), or None when it was read from the store."""
        if not self.resumed or self.resume is None:
            return None
        state, root = self.resume
        return state.size, root

    @property
    def log(self) -> LedgerLog:
        """The ledger log inside this transaction.

        On first use it reads the ledger's head (highest seq, newest checkpoint's size and
        root) in one statement. When that is exactly the state this process committed last
        (same size, a newest checkpoint of that size and root), the log resumes from the
        frontier kept in memory; otherwise it reads the stored subtree hashes it needs.
        """
        if self._log is None:
            last, newest = self.uow.ledger.head()
            size = 0 if last is None else last + 1
            if self.resume is not None and newest is not None:
                state, root = self.resume
                if state.size == size == newest[0] and root == newest[1]:
                    self._log = LedgerLog(self.uow.ledger, state=state)
                    self.resumed = True
            if self._log is None:
                self._log = LedgerLog(self.uow.ledger, size=size)
        return self._log

    def record(self, action: str, subject: str, details: Mapping[str, Any] | None = None) -> Event:
        """Append a ledger event in this transaction (with ``details.auth`` when an
        authenticated principal acts, see :meth:`App.acting_as`)."""
        if self.auth is not None and (details is None or "auth" not in details):
            details = {**(details or {}), "auth": self.auth}
        event = self.log.append(
            actor=self.actor, action=action, subject=subject, details=details, client=self.client
        )
        self.events.append(event)
        return event


@dataclass(frozen=True, slots=True)
class _Acting:
    """The principal acting through one App in the current context, and its client."""

    app: App
    principal: Principal
    client: ClientInfo


_ACTING: ContextVar[_Acting | None] = ContextVar("affidavit_acting", default=None)


class App:
    """Opened once per command (CLI) or per process (server)."""

    def __init__(self, settings: Settings, *, client: ClientInfo | None = None) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.effective_catalog_url)
        self.client = client or ClientInfo(agent="affidavit-cli")
        self._identity: LedgerIdentity | None = None
        self._memory: SignerMemory | None = None
        self._actor = settings.effective_actor  # resolved once (a passwd lookup otherwise)
        # the ledger's size and frontier as the last change of this App committed them, with
        # the root its checkpoint signed: re-checked against the catalog by every change
        self._ledger_state: tuple[LogState, bytes] | None = None
        # why this App's process must not fork worker processes (None: it may). A server sets
        # it: forking a process whose other threads may hold a lock (OpenSSL's, logging's, the
        # catalog pool's) can leave the child blocked on it for ever
        self.no_fork: str | None = None

    @property
    def actor(self) -> str:
        """Who is acting: the principal of :meth:`acting_as` in this context, else the
        asserted actor of the settings."""
        acting = self._acting()
        return acting.principal.name if acting is not None else self._actor

    @property
    def principal(self) -> Principal | None:
        """The authenticated principal acting in this context (:meth:`acting_as`), or None
        (local mode: the asserted actor)."""
        acting = self._acting()
        return acting.principal if acting is not None else None

    def _acting(self) -> _Acting | None:
        acting = _ACTING.get()
        return acting if acting is not None and acting.app is self else None

    def _client(self) -> ClientInfo:
        acting = self._acting()
        return acting.client if acting is not None else self.client

    @contextmanager
    def acting_as(self, principal: Principal, *, client: ClientInfo | None = None) -> Iterator[App]:
        """Act as ``principal`` (from ``client``) in the current context until the block ends:
        :attr:`actor` names it, and every change records its name, ``details.auth`` (how it
        was authenticated) and the client. One request of the server runs inside one."""
        token = _ACTING.set(_Acting(self, principal, client or self.client))
        try:
            yield self
        finally:
            _ACTING.reset(token)

    def ledger_identity(self) -> LedgerIdentity | None:
        """The ledger's identity from the home (loaded once), or None before ``init``."""
        if self._identity is None:
            self._identity = load_ledger_identity(self.settings.home)
        return self._identity

    def signer_memory(self) -> SignerMemory | None:
        """The signer's memory of the newest tree it signed (``HOME/keys/ledger.signed``),
        or None before the ledger has its key."""
        if self._memory is None:
            identity = self.ledger_identity()
            if identity is not None:
                self._memory = SignerMemory(self.settings.home, identity)
        return self._memory

    @contextmanager
    def change(self, *, fork_from: Signed | None = None) -> Iterator[Change]:
        """A write transaction whose events commit with it, or not at all.

        When the body appended events, a checkpoint of the new tree is signed and stored
        **in the same transaction**, just before the commit: the root is computable from the
        stored subtree hashes at that point, a crash can never leave signed-for entries
        without their checkpoint (or the reverse), and "no change without its event" extends
        to "no event without its checkpoint". The cost is one signature per write batch.

        Before signing, the signer checks the catalog against its own memory of the newest
        tree it signed (``HOME/keys/ledger.signed``, see :mod:`.signer_memory`): the entries
        before this batch must be exactly that tree, the catalog's newest checkpoint must be
        that tree's, and the new tree must provably extend it. Otherwise (entries written
        behind affidavit's back, checkpoints removed, a truncated, rewritten or replaced
        ledger) it raises :class:`SigningRefused` and the change rolls back. After the commit
        the memory is moved forward to the new checkpoint. The same check, short of the new
        entries, runs before the body, so a refused change fails before it acts. ``fork_from``
        is for ``ledger recover`` only: that checkpoint of the catalog stands in for the memory
        in this transaction (checked at its end only), and the memory is replaced (not moved
        forward) after the commit.

        A change after one that this App committed resumes the log from the frontier kept in
        memory once its transaction has checked that the catalog still ends there (no entry
        beyond it, the newest checkpoint of that size and root); otherwise it reads the
        stored subtree hashes as a fresh log would. A ledger-only change runs on the pooled
        DB-API connection, without an ORM session (see :class:`UnitOfWork`).
        """
        identity = self.ledger_identity()
        signed: tuple[LogState, bytes, Signed] | None = None
        with self.catalog.unit_of_work() as uow:
            principal = self.principal
            change = Change(
                uow=uow,
                actor=self.actor,
                client=self._client(),
                identity=identity,
                auth=principal.method.value if principal is not None else None,
                resume=self._ledger_state,
                memory=self.signer_memory(),
                fork_from=fork_from,
            )
            if change.memory is not None and fork_from is None:  # refuse before the body acts
                size = change.log.size()
                settle(uow, change.log, change.memory, first=size, resumed=change.resumed_tree)
            yield change
            if change.events:
                signed = _checkpoint_batch(change)
        if signed is not None:  # committed: the next change may resume from it
            state, root, note = signed
            self._ledger_state = (state, root)
            if change.memory is not None:
                change.memory.save(note, fork=fork_from is not None)

    def check_signer(self) -> None:
        """Raise :class:`SigningRefused` now when the next change would be refused (the same
        check a change makes before its body): for work that changes something outside the
        catalog first (a new KEK version, a deletion from a vault), so that it does not
        happen when its event could never be recorded."""
        memory = self.signer_memory()
        if memory is None:
            return
        with self.catalog.reader() as uow:
            log = LedgerLog(uow.ledger)
            settle(uow, log, memory, first=log.size())

    @contextmanager
    def read(self) -> Iterator[UnitOfWork]:
        """A read-only view of the catalog."""
        with self.catalog.reader() as uow:
            yield uow

    def close(self) -> None:
        """Release the catalog and the signer's memory file."""
        if self._memory is not None:
            self._memory.close()
        self.catalog.close()


def _checkpoint_batch(change: Change) -> tuple[LogState, bytes, Signed] | None:
    """Sign and store the checkpoint of the batch's tree once the signer's guard agrees;
    return the log's state, the root signed and the signed checkpoint, or None before the
    ledger has its identity."""
    memory = change.memory
    if memory is None:
        if change.uow.ledger.latest_checkpoint_size() is not None:
            raise KeystoreError(
                "the ledger has checkpoints but its signing key is missing from the home",
                hint="restore HOME/keys/ledger.key and HOME/keys/ledger.origin from a backup",
            )
        return None  # before `affidavit init` set the ledger up: setup_ledger signs everything
    state = change.log.state()
    root = state.root
    guard(
        change.uow,
        change.log,
        memory,
        first_event=change.events[0],
        size=state.size,
        root=root,
        resumed=change.resumed_tree,
        fork_from=change.fork_from,
    )
    signed = memory.sign(state.size, root)
    _store(change.uow, signed)
    return state, root, signed


def _store(uow: UnitOfWork, signed: Signed) -> None:
    uow.ledger.add_checkpoint(
        size=signed.size,
        root=signed.root,
        note=signed.note,
        created_at=utc_text(datetime.now(UTC)),
    )


@contextmanager
def open_app(settings: Settings, *, client: ClientInfo | None = None) -> Iterator[App]:
    """Open the catalog (which must exist at this affidavit's schema version)."""
    app = App(settings, client=client)
    try:
        app.catalog.check_schema()
        yield app
    finally:
        app.close()
