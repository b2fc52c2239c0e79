"""Connection URIs: parsed once, checked for inline secrets, shown without credentials.

A URI that carries a password (or a query option that carries one) is refused: secrets are
referenced (an environment variable or a file) and resolved only when a connection is made,
so they never reach the catalog, the ledger or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from affidavit.constants import EngineName
from affidavit.errors import InputError

_SCHEMES: dict[EngineName, frozenset[str]] = {
    EngineName.MONGODB: frozenset({"mongodb", "mongodb+srv"}),
    EngineName.REDIS: frozenset({"redis", "rediss"}),
}

# Query options that carry a secret in one of the supported drivers' URI grammars.
_SECRET_OPTIONS = frozenset(
    {
        "password",
        "pass",
        "secret",
        "token",
        "tlscertificatekeyfilepassword",
        "sslpemkeypassword",
    }
)
_SECRET_MARKERS = ("AWS_SESSION_TOKEN", "SECRET")

_USE_A_REFERENCE_HINT = (
    "put the password in an environment variable or a file and pass "
    "--secret-env VAR or --secret-file PATH"
)


@dataclass(frozen=True, slots=True)
class ConnectionUri:
    """A database URI without any secret in it.

    ``text`` is safe to store and to show; it may name a user but never a password.
    """

    engine: EngineName
    text: str
    scheme: str
    hosts: tuple[str, ...]
    username: str | None

    @classmethod
    def parse(cls, engine: EngineName, text: str) -> ConnectionUri:
        """Parse and check ``text`` for ``engine``; raise :class:`InputError` when malformed
        or when it carries an inline secret."""
        text = text.strip()
        if not text:
            raise InputError("the URI is empty", hint=f"give a URI like {example_uri(engine)}")
        if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
            raise InputError(
                "the URI contains whitespace or control characters",
                hint=f"give a URI like {example_uri(engine)}",
            )
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise InputError(
                f"malformed URI: {exc}", hint=f"give a URI like {example_uri(engine)}"
            ) from exc
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES[engine]:
            allowed = ", ".join(sorted(f"{s}://" for s in _SCHEMES[engine]))
            got = f"{scheme}://" if scheme else repr(text[:20])
            raise InputError(
                f"a {engine} URI must start with {allowed}, not {got}",
                hint=f"give a URI like {example_uri(engine)}",
            )
        netloc = parts.netloc
        userinfo, _, hostlist = netloc.rpartition("@")
        username: str | None = None
        if "@" in netloc:
            user, sep, password = userinfo.partition(":")
            if sep and password:
                raise InputError("the URI carries a password", hint=_USE_A_REFERENCE_HINT)
            username = unquote(user) or None
        if not hostlist:
            raise InputError("the URI names no host", hint=f"give a URI like {example_uri(engine)}")
        hosts = tuple(h for h in hostlist.split(","))
        for host in hosts:
            _check_host(host, engine)
        if scheme == "mongodb+srv" and len(hosts) != 1:
            raise InputError(
                "a mongodb+srv:// URI names exactly one host and no port",
                hint="use mongodb:// to list several hosts",
            )
        try:
            options = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
        except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
            raise InputError(f"malformed URI options: {exc}") from exc
        for key, value in options:
            if key.lower() in _SECRET_OPTIONS or any(m in value.upper() for m in _SECRET_MARKERS):
                raise InputError(
                    f"the URI option {key!r} carries a secret", hint=_USE_A_REFERENCE_HINT
                )
        if engine is EngineName.REDIS:
            _check_redis_path(parts.path)
        return cls(engine=engine, text=text, scheme=scheme, hosts=hosts, username=username)

    @property
    def redacted(self) -> str:
        """The URI with any user name replaced by ``***``: what logs and reports show."""
        parts = urlsplit(self.text)
        if self.username is None:
            return self.text
        hostlist = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"***@{hostlist}"))

    def with_password(self, password: str) -> str:
        """The URI with ``password`` inserted: for handing to a driver, never for storing."""
        parts = urlsplit(self.text)
        hostlist = parts.netloc.rpartition("@")[2]
        user = quote(self.username or "", safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hostlist}"))


def example_uri(engine: EngineName) -> str:
    """A well-formed URI for ``engine``, for hints."""
    return {
        EngineName.MONGODB: "mongodb://db1.example.com:27017/?tls=true",
        EngineName.REDIS: "redis://cache.example.com:6379/0",
    }[engine]


def _check_host(host: str, engine: EngineName) -> None:
    hint = f"give a URI like {example_uri(engine)}"
    if not host:
        raise InputError("the URI has an empty host in its host list", hint=hint)
    name, port = host, ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise InputError(f"malformed IPv6 host {host!r} in the URI", hint=hint)
        name, port = host[: end + 1], host[end + 1 :].removeprefix(":")
        if host[end + 1 :] and not host[end + 1 :].startswith(":"):
            raise InputError(f"malformed host {host!r} in the URI", hint=hint)
    elif ":" in host:
        name, _, port = host.partition(":")
    if not name or any(ch in name for ch in "/?#"):
        raise InputError(f"malformed host {host!r} in the URI", hint=hint)
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise InputError(f"the port in {host!r} is not a number from 1 to 65535", hint=hint)


def _check_redis_path(path: str) -> None:
    db = path.strip("/")
    if db and not db.isdigit():
        raise InputError(
            f"the Redis database in the URI path must be a number, not {db!r}",
            hint="use redis://host:6379/0, or leave the path out",
        )
