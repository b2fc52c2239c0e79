"""Redis engine (redis-py): the only module of the engines that imports the driver.

Datasets are the logical databases ``db0``, ``db1``, ... of one server.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from affidavit.constants import EngineName
from affidavit.engines.base import Engine
from affidavit.errors import EngineError, InputError, NotFound, SyncRefused
from affidavit.models.inventory import ServerDescription
from affidavit.models.records import RecordEncoding, RedisRecord, RedisType

T = TypeVar("T")


class RedisEngine(Engine):
    """A Redis server reached through redis-py."""

    name: ClassVar[EngineName] = EngineName.REDIS
    record_encoding: ClassVar[RecordEncoding] = RecordEncoding.REDIS
    backup_format: ClassVar[str] = "rdb"
    snapshot_format: ClassVar[str | None] = "rdb"
    default_port: ClassVar[int] = 6379
    _clients: dict[int, redis.Redis]

    def _client(self, db: int | None = None) -> redis.Redis:
        if not hasattr(self, "_clients"):
            self._clients = {}
        db = self._uri_db() if db is None else db
        if db not in self._clients:
            try:
                # the URL's path would override a db= argument: put the wanted db there
                url = urlunsplit(urlsplit(self.uri.text)._replace(path=f"/{db}"))
                self._clients[db] = redis.Redis.from_url(
                    url,
                    password=self._password,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    client_name="affidavit",
                )
            except ValueError as exc:
                raise InputError(f"redis-py refuses the URI {self.uri.redacted}: {exc}") from exc
            self._clients[db].set_response_callback("XRANGE", _raw_xrange)
        return self._clients[db]

    def _uri_db(self) -> int:
        path = urlsplit(self.uri.text).path.strip("/")
        return int(path) if path else 0

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (AuthenticationError, AuthorizationError, NoPermissionError) as exc:
            raise EngineError(
                f"Redis at {self.uri.redacted} refused to {doing}: {exc}",
                hint="check the secret reference (--secret-env/--secret-file) and the user's ACL",
            ) from exc
        except ResponseError as exc:
            raise EngineError(f"Redis at {self.uri.redacted} failed to {doing}: {exc}") from exc
        except RedisError as exc:
            raise EngineError(
                f"cannot reach Redis at {self.uri.redacted} to {doing}: {exc}"
            ) from exc

    def describe(self) -> ServerDescription:
        client = self._client()
        server = self._call("read INFO", lambda: client.info("server"))
        persistence = self._call("read INFO", lambda: client.info("persistence"))
        replication = self._call("read INFO", lambda: client.info("replication"))
        settings: dict[str, Any] = {
            "mode": server.get("redis_mode"),
            "aof_enabled": bool(persistence.get("aof_enabled")),
            "rdb_last_bgsave_status": persistence.get("rdb_last_bgsave_status"),
            "role": replication.get("role"),
            "connected_replicas": int(replication.get("connected_slaves", 0)),
        }
        for key in ("save", "appendfsync", "databases", "protected-mode"):
            try:
                value = client.config_get(key).get(key)
            except ResponseError:
                continue  # CONFIG disabled or renamed: leave unknown
            except RedisError as exc:
                raise EngineError(f"Redis at {self.uri.redacted}: {exc}") from exc
            if value is not None:
                settings[key.replace("-", "_")] = value
        return ServerDescription(
            engine=self.name,
            version=str(server.get("redis_version", "unknown")),
            tls=self.uri.scheme == "rediss",
            auth_required=self._auth_required(client),
            settings=settings,
        )

    def _auth_required(self, client: redis.Redis) -> bool | None:
        try:
            user = client.acl_getuser("default")
        except ResponseError:
            return None  # not allowed to read ACLs
        except RedisError as exc:
            raise EngineError(f"Redis at {self.uri.redacted}: {exc}") from exc
        if not user:
            return True
        raw_flags = user.get("flags", []) if isinstance(user, dict) else []
        flags = {str(f) for f in raw_flags} if isinstance(raw_flags, list) else set()
        return not ("on" in flags and "nopass" in flags)

    def _databases(self) -> int:
        client = self._client()
        try:
            return int(client.config_get("databases").get("databases") or 16)
        except ResponseError:
            return 16  # CONFIG disabled: Redis' default
        except RedisError as exc:
            raise EngineError(f"cannot reach Redis at {self.uri.redacted}: {exc}") from exc

    def list_datasets(self) -> list[str]:
        client = self._client()
        keyspace = self._call("read INFO keyspace", lambda: client.info("keyspace"))
        dbs = sorted(int(k[2:]) for k in keyspace if k.startswith("db") and k[2:].isdigit())
        return [f"db{n}" for n in dbs]

    def count_records(self, dataset: str) -> int:
        db = parse_dataset(dataset)
        if db >= self._databases():
            raise NotFound(
                f"Redis at {self.uri.redacted} has no database {dataset!r}",
                hint="`affidavit inventory` lists the datasets (db0, db1, ...)",
            )
        client = self._client(db)
        return int(self._call(f"count keys of {dataset}", client.dbsize))

    def iter_records(self, dataset: str) -> Iterator[bytes | RedisRecord]:
        self.count_records(dataset)  # NotFound for an unknown database
        client = self._client(parse_dataset(dataset))
        try:
            has_expiretime = self._has_pexpiretime(client)
            for batch in _scan_batches(client):
                yield from _read_batch(client, batch, has_expiretime=has_expiretime)
        except RedisError as exc:
            raise EngineError(
                f"lost Redis at {self.uri.redacted} while reading {dataset}: {exc}"
            ) from exc

    def restore(
        self,
        dataset: str,
        records: Iterable[bytes | RedisRecord],
        *,
        metadata: bytes | None = None,
    ) -> int:
        """Write ``records`` into the logical database ``dataset`` of this server (a drill into
        a named target) and return how many keys were written (``metadata``: none in Redis).

        Refuses a database that already holds keys. Each key is written with its type's
        commands (``SET``, ``RPUSH``, ``SADD``, ``ZADD``, ``HSET``, ``XADD`` with the entry's
        own id; an empty stream via ``XGROUP CREATE ... MKSTREAM``) and its absolute expiry
        (``PEXPIREAT``), pipelined; a key whose expiry has already passed is skipped, as
        ``redis-server`` skips it when it loads an RDB. A hash field carrying its own expiry
        (Redis 7.4) is refused: that cannot be restored this way yet."""
        db = parse_dataset(dataset)
        if db >= self._databases():
            raise EngineError(
                f"Redis at {self.uri.redacted} has no database {dataset!r}",
                hint="the target needs at least as many databases as the backup's source",
            )
        client = self._client(db)
        if self._call(f"check that {dataset} is empty", client.dbsize):
            raise InputError(
                f"{dataset} on {self.uri.redacted} already holds keys",
                hint="a drill restores into an empty target only",
            )
        written = 0
        pending = 0
        pipe = client.pipeline(transaction=False)
        now_ms = int(time.time() * 1000)
        for record in records:
            if not isinstance(record, RedisRecord):
                raise InputError(f"a record for {dataset} is not a Redis key")
            if record.expire_at_ms is not None and record.expire_at_ms <= now_ms:
                continue
            pending += _write_record(pipe, record)
            written += 1
            if pending >= _LOAD_BATCH:
                self._call(f"write keys into {dataset}", pipe.execute)
                pending = 0
        if pending:
            self._call(f"write keys into {dataset}", pipe.execute)
        return written

    @staticmethod
    def _has_pexpiretime(client: redis.Redis) -> bool:
        version = str(client.info("server").get("redis_version", "0"))
        return tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (7, 0)

    def seed_sample(self, *, seed: int, scale: int) -> Mapping[str, int]:
        rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
        written: dict[str, int] = {}
        for db in (0, 1):
            client = self._client(db)
            if self._call("check the sample target", client.dbsize):
                raise InputError(
                    f"db{db} on {self.uri.redacted} already holds keys",
                    hint="seed an empty server",
                )
            pipe = client.pipeline(transaction=False)
            count = _seed_db(pipe, rng, db, scale)
            self._call(f"write the sample into db{db}", pipe.execute)
            written[f"db{db}"] = count
        return written

    def stream_rdb(self) -> Iterator[bytes]:
        """A point-in-time RDB of the whole server, taken over the replication protocol as
        ``redis-cli --rdb`` does, yielded in chunks (never buffered whole).

        Connects with a raw socket (TLS for ``rediss://``), authenticates when a password is
        set (``AUTH [user] password``), sends ``REPLCONF capa eof`` and ``REPLCONF rdb-only 1``
        (an error from an older server is ignored) and ``SYNC``, skips the newline keep-alives
        the master sends while it forks and saves, then yields exactly the ``$<len>`` bytes of the
        payload, or, in the diskless ``$EOF:<mark>`` form, everything up to (not including)
        the 40-byte end mark. Each socket read waits at most ``timeout`` seconds; every
        keep-alive restarts that wait. Raises ``EngineError`` (redacted URI) on any socket or
        protocol failure, including a connection that closes before the payload is complete.
        """
        stream = self.request_snapshot()
        try:
            yield from stream.payload()
        finally:
            stream.close()

    def request_snapshot(self) -> RdbTransfer:
        """Start the transfer of :meth:`stream_rdb` now (connect, authenticate, ``SYNC``) and
        return it; iterate :meth:`RdbTransfer.payload` later for the bytes and close it in
        any case. The server waits its diskless-sync delay and forks meanwhile, so a caller
        that has other work to do first (catalog, counts) does it during that wait."""
        stream = RdbTransfer(self.uri.redacted, self.timeout)
        try:
            stream.connect(self.uri.text, tls=self.uri.scheme == "rediss")
            stream.handshake(username=self.uri.username, password=self._password)
        except BaseException:
            stream.close()
            raise
        return stream

    def close(self) -> None:
        for client in getattr(self, "_clients", {}).values():
            client.close()
        self._clients = {}


def parse_dataset(dataset: str) -> int:
    """``db7`` -> 7; anything else is an :class:`InputError`."""
    if not dataset.startswith("db") or not dataset[2:].isdigit():
        raise InputError(
            f"a Redis dataset is named db0, db1, ..., not {dataset!r}",
            hint="the number is the logical database index",
        )
    return int(dataset[2:])


def _seed_db(pipe: Any, rng: random.Random, db: int, scale: int) -> int:
    """Keys of every type, some with an expiry, some with binary names and values."""
    count = 0
    for i in range(scale):
        prefix = f"app{db}"
        pipe.set(f"{prefix}:session:{i}", rng.randbytes(24), ex=3600 * 24 * 30)
        pipe.set(f"{prefix}:counter:{i}", rng.randrange(10**6))
        pipe.hset(
            f"{prefix}:user:{i}",
            mapping={
                "name": f"user{i}",
                "plan": rng.choice(["free", "pro", "team"]),
                "logins": rng.randrange(500),
            },
        )
        pipe.rpush(
            f"{prefix}:queue:{i}",
            *[f"job-{rng.randrange(10**6)}" for _ in range(rng.randrange(1, 6))],
        )
        pipe.sadd(f"{prefix}:tags:{i}", *rng.sample(["red", "green", "blue", "cyan", "black"], k=3))
        pipe.zadd(f"{prefix}:scores:{i}", {f"player{j}": rng.random() * 1000 for j in range(4)})
        pipe.xadd(
            f"{prefix}:events:{i}", {"type": "login", "ok": "1"}, id=f"{1_750_000_000_000 + i}-0"
        )
        pipe.set(bytes([0xFF, 0x00, db, i % 256]) + f":raw:{i}".encode(), bytes(range(16)))
        count += 8
    return count


_SCAN_COUNT = 1000


def _raw_xrange(response: Any, **_options: Any) -> Any:
    """Keep XRANGE's reply as the server sent it (entries keep repeated fields)."""
    return response


def _scan_batches(client: redis.Redis) -> Iterator[list[bytes]]:
    """SCAN the whole keyspace in batches. SCAN guarantees every key present for the whole
    scan is returned at least once; duplicates are dropped here."""
    seen: set[bytes] = set()  # SCAN may return a key twice (during a rehash)
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=_SCAN_COUNT)
        batch = [k for k in keys if isinstance(k, bytes) and k not in seen]
        seen.update(batch)
        if batch:
            yield batch
        if cursor == 0:
            return


def _read_batch(
    client: redis.Redis, keys: list[bytes], *, has_expiretime: bool
) -> Iterator[RedisRecord]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        if has_expiretime:
            pipe.execute_command("PEXPIRETIME", key)  # type: ignore[no-untyped-call]
        else:
            pipe.pttl(key)
    meta = pipe.execute()
    now_ms = int(time.time() * 1000)
    reads: list[tuple[bytes, RedisType, int | None]] = []
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        kind = meta[2 * i].decode() if isinstance(meta[2 * i], bytes) else str(meta[2 * i])
        ttl = int(meta[2 * i + 1])
        if kind == "none":
            continue  # deleted since SCAN returned it
        expire = None if ttl < 0 else (ttl if has_expiretime else now_ms + ttl)
        if kind not in _READERS:
            raise EngineError(f"key {key!r} has a type affidavit cannot read: {kind}")
        _READERS[kind](pipe, key)
        reads.append((key, kind, expire))  # type: ignore[arg-type]
    values = pipe.execute()
    for (key, kind, expire), raw in zip(reads, values, strict=True):
        yield RedisRecord(key=key, type=kind, value=_SHAPERS[kind](raw), expire_at_ms=expire)


_READERS: dict[str, Callable[[Any, bytes], Any]] = {
    "string": lambda p, k: p.get(k),
    "list": lambda p, k: p.lrange(k, 0, -1),
    "set": lambda p, k: p.smembers(k),
    "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    "hash": lambda p, k: p.hgetall(k),
    "stream": lambda p, k: p.xrange(k, "-", "+"),
}

_SHAPERS: dict[str, Callable[[Any], object]] = {
    "string": lambda v: bytes(v) if v is not None else b"",
    "list": tuple,
    "set": frozenset,
    "zset": lambda v: tuple((m, float(s)) for m, s in v),
    "hash": lambda v: tuple(v.items()),
    # raw XRANGE reply (see _raw_xrange): [[id, [field, value, field, value, ...]], ...]; a
    # field may repeat within one entry, which redis-py's default dict parsing would drop
    "stream": lambda v: tuple((bytes(i), tuple(zip(f[::2], f[1::2], strict=True))) for i, f in v),
}


_LOAD_BATCH = 2000  # commands per pipeline round when a drill writes keys
_LOAD_CHUNK = 500  # elements per RPUSH/SADD/ZADD/HSET command
# how affidavit.formats.rdb folds a hash field's own expiry into its value (canonical CBOR
# of ["hpexpireat", ms, value]): such a field cannot be written back with HSET
_FOLDED_FIELD = b"\x83\x6ahpexpireat"


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _LOAD_CHUNK):
        yield items[start : start + _LOAD_CHUNK]


def _write_record(pipe: Any, record: RedisRecord) -> int:
    """Queue the commands that recreate ``record``; returns how many were queued."""
    key, kind = record.key, record.type
    value: Any = record.value
    queued = 0
    if kind == "string":
        pipe.set(key, value)
        queued = 1
    elif kind == "list":
        for part in _chunks(tuple(value)):
            pipe.rpush(key, *part)
            queued += 1
    elif kind == "set":
        for part in _chunks(sorted(value)):
            pipe.sadd(key, *part)
            queued += 1
    elif kind == "zset":
        for part in _chunks(tuple(value)):
            pipe.zadd(key, dict(part))
            queued += 1
    elif kind == "hash":
        pairs = tuple(value)
        for name, item in pairs:
            if bytes(item).startswith(_FOLDED_FIELD):
                raise EngineError(
                    f"key {key!r}: hash field {name!r} carries its own expiry (Redis 7.4), "
                    "which a drill cannot restore into a named target",
                    hint="drill this backup into --target scratch",
                )
        for part in _chunks(pairs):
            pipe.hset(key, mapping=dict(part))
            queued += 1
    elif kind == "stream":
        entries = tuple(value)
        if not entries:  # an empty stream exists too: create it through a throwaway group
            pipe.xgroup_create(key, "affidavit-drill", id="0", mkstream=True)
            pipe.xgroup_destroy(key, "affidavit-drill")
            queued = 2
        for entry_id, fields in entries:
            flat = [part for pair in fields for part in pair]
            pipe.execute_command("XADD", key, entry_id, *flat)
            queued += 1
    else:
        raise EngineError(f"key {key!r} has a type affidavit cannot write: {kind}")
    if record.expire_at_ms is not None:
        pipe.pexpireat(key, record.expire_at_ms)
        queued += 1
    return queued


_REPL_CHUNK = 1 << 20
_MAX_LINE = 64 * 1024
_EOF_MARK_LEN = 40


class RdbTransfer:
    """The replica side of ``SYNC`` on a raw socket (RESP2), for :meth:`RedisEngine.stream_rdb`
    and :meth:`RedisEngine.request_rdb`."""

    def __init__(self, where: str, timeout: float) -> None:
        self._where = where
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def _fail(self, what: str, exc: BaseException | None = None) -> EngineError:
        detail = f": {exc}" if exc is not None else ""
        return EngineError(f"RDB capture from Redis at {self._where} failed: {what}{detail}")

    def connect(self, uri: str, *, tls: bool) -> None:
        parts = urlsplit(uri)
        host = parts.hostname or "127.0.0.1"
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise InputError(f"the URI {self._where} has a malformed port") from exc
        try:
            sock = socket.create_connection((host, port), timeout=self._timeout)
            if tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self._timeout)
        except OSError as exc:
            raise self._fail("cannot connect", exc) from exc
        self._sock = sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _send(self, *args: str) -> None:
        assert self._sock is not None
        out = bytearray(f"*{len(args)}\r\n".encode())
        for arg in args:
            raw = arg.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        try:
            self._sock.sendall(out)
        except OSError as exc:
            raise self._fail(f"cannot send {args[0]}", exc) from exc

    def _recv(self, size: int = _REPL_CHUNK) -> bytes:
        assert self._sock is not None
        try:
            data = self._sock.recv(size)
        except TimeoutError as exc:
            raise self._fail(f"no data for {self._timeout:g} s", exc) from exc
        except OSError as exc:
            raise self._fail("connection lost", exc) from exc
        if not data:
            raise self._fail("the server closed the connection early")
        return data

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > _MAX_LINE:
                raise self._fail("protocol error: reply line too long")
            self._buf += self._recv()

    def handshake(self, *, username: str | None, password: str | None) -> None:
        if password is not None:
            self._send(*(["AUTH", username, password] if username else ["AUTH", password]))
            reply = self._line()
            if not reply.startswith(b"+"):
                raise EngineError(
                    f"Redis at {self._where} refused AUTH: {reply[1:].decode(errors='replace')}",
                    hint="check the secret reference (--secret-env/--secret-file) and the user",
                )
        self._send("REPLCONF", "capa", "eof")
        self._line()  # as redis-cli: lets a diskless master stream without a temp file
        self._send("REPLCONF", "rdb-only", "1")
        self._line()  # "-ERR" from servers older than 7.0: they send the full sync anyway
        self._send("SYNC")

    def _header(self) -> bytes:
        while True:  # newline keep-alives while the master forks and saves
            while self._buf[:1] == b"\n":
                del self._buf[:1]
            if self._buf:
                return self._line()
            self._buf += self._recv()

    def payload(self) -> Iterator[bytes]:
        header = self._header()
        if header.startswith(b"-"):
            text = header[1:].decode(errors="replace")
            hint = (
                "give the password of a user allowed to run SYNC"
                if "NOAUTH" in text or "NOPERM" in text
                else None
            )
            raise SyncRefused(f"Redis at {self._where} refused SYNC: {text}", hint=hint)
        if not header.startswith(b"$"):
            raise self._fail(f"protocol error: unexpected reply {header[:40]!r} to SYNC")
        if header.startswith(b"$EOF:"):
            mark = header[5:]
            if len(mark) != _EOF_MARK_LEN:
                raise self._fail("protocol error: malformed $EOF mark")
            yield from self._until_mark(mark)
            return
        try:
            size = int(header[1:])
        except ValueError as exc:
            raise self._fail(f"protocol error: bad payload length {header[:40]!r}") from exc
        if size < 0:
            raise self._fail(f"protocol error: negative payload length {size}")
        yield from self._exactly(size)

    def _exactly(self, size: int) -> Iterator[bytes]:
        left = size
        if self._buf:
            first = bytes(self._buf[:left])
            del self._buf[: len(first)]
            left -= len(first)
            yield first
        while left:
            try:
                chunk = self._recv(min(left, _REPL_CHUNK))
            except EngineError as exc:
                raise self._fail(
                    f"the payload stopped after {size - left} of {size} bytes ({exc.message})"
                ) from exc
            left -= len(chunk)
            yield chunk

    def _until_mark(self, mark: bytes) -> Iterator[bytes]:
        pending = bytes(self._buf)
        self._buf.clear()
        sent = 0
        while True:
            at = pending.find(mark)
            if at >= 0:
                if at:
                    yield pending[:at]
                return
            if len(pending) > _EOF_MARK_LEN:
                keep = len(pending) - _EOF_MARK_LEN
                sent += keep
                yield pending[:keep]
                pending = pending[keep:]
            try:
                pending += self._recv()
            except EngineError as exc:
                raise self._fail(
                    f"the diskless payload stopped after {sent} bytes, before its end mark "
                    f"({exc.message})"
                ) from exc
