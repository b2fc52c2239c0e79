"""Single sign-on with an OpenID provider: OpenID Connect's Authorization Code flow with PKCE
(S256), for the server (``affidavit serve``), in a browser or from the CLI.

A login begins on the server, which keeps the authorization request's secrets (``state``,
``nonce``, PKCE verifier) in the catalog (table ``oidc_logins``), for :data:`PENDING_TTL` at
most and for one answer only: the provider's answer (the callback) takes them out in a
writer's transaction, so a replayed answer finds nothing, and the answer may reach any of
the server's processes (``serve --workers``). Each row is **sealed**: wrapped by the
identity key-encryption key (the one that wraps TOTP secrets) and bound to its key, with its
creation time inside. Someone who can read the catalog learns no verifier or nonce; someone
who can write it cannot plant a login (say, a CLI flow already answered for another
person's subject) nor extend one's life. At most :data:`MAX_PENDING` logins wait at once
(the oldest are dropped first), so anonymous requests cannot grow the table without bound.

Two ways in:

- **Browser**: ``GET /auth/oidc/start`` redirects to the provider and sets a cookie holding a
  random *binding* (HttpOnly, ``SameSite=Lax`` so that it comes back with the provider's
  redirect); the callback opens the session only when that cookie comes back with the state,
  so an answer begun in someone else's browser cannot log this browser in (login CSRF).
- **CLI** (``affidavit login URL --oidc``): the CLI asks for a login and gets the provider's
  URL, a flow id and a *flow secret* only it holds; the person opens the URL, logs in there,
  and the callback shows a one-time code (:func:`~affidavit.crypto.oidc.new_one_time_code`);
  the person types it into the CLI, which redeems flow id, flow secret and code for a session
  secret. The code proves that the person who logged in at the provider is at this CLI; the
  flow secret, that the code goes to the CLI that began the login. Five wrong codes end the
  flow.

The provider's answer is checked in this order, each refusal recorded
(``identity.login_failed``, :func:`affidavit.services.identity.record_oidc_refusal`): the
state is known and unused (``oidc-state``), the browser binding matches (``oidc-binding``),
the provider reported no error (``oidc-provider-error``), the ``iss`` parameter, when sent, is
the issuer (``oidc-issuer``, RFC 9207), the provider exchanges the code for tokens with this
login's PKCE verifier (``oidc-exchange``), and the ID token passes every check of
:mod:`affidavit.crypto.oidc` (``oidc-token``, with the problem). Then the subject must be
linked to an enabled person's account (:func:`affidavit.services.identity.oidc_account`).

MFA. The provider's login counts as MFA when its ``amr`` (RFC 8176) says ``mfa`` or names
factors of two kinds (something known: ``pwd``, ``pin``, ``kba``; something held: ``otp``,
``hwk``, ``swk``, ``sms``, ``tel``, ``sc``, ``pop``; something one is: ``fpt``, ``face``,
``iris``, ``retina``, ``vbm``), or when its ``acr`` is one of the configured ``oidc_mfa_acr``
values. Then the session's MFA time is the provider's authentication time (``auth_time``).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from affidavit.catalog.oidc_logins import StoredLogin
from affidavit.config import Settings
from affidavit.crypto import oidc as jose
from affidavit.errors import (
    AuthenticationFailed,
    InputError,
    KeystoreError,
    OperationError,
    TooManyRequests,
)
from affidavit.keystores.base import WrappedSecret
from affidavit.models.identity import (
    OidcIdentity,
    SessionGrant,
    is_loopback_host,
    oidc_issuer,
)
from affidavit.models.ledger import ClientInfo
from affidavit.services import identity
from affidavit.services.context import App
from affidavit.services.identity import identity_keystore

PENDING_TTL: Final = timedelta(minutes=10)
MAX_PENDING: Final = 4096
MAX_CODE_ATTEMPTS: Final = 5
START_WINDOW: Final = timedelta(minutes=1)
"""The window of ``oidc_starts_per_minute``: logins one client address may begin per
minute, per server process. Each start stores a sealed row (with an AWS KMS key, a KMS
call), and at most :data:`MAX_PENDING` wait, so an anonymous flood from one address could
otherwise push other people's logins out."""
LEEWAY: Final = timedelta(seconds=60)
MAX_TOKEN_AGE: Final = timedelta(minutes=10)
METADATA_TTL: Final = timedelta(hours=1)
JWKS_REFRESH_EVERY: Final = timedelta(seconds=60)
HTTP_TIMEOUT: Final = 10.0
MAX_ANSWER: Final = 1024 * 1024
_SEAL_CONTEXT: Final = b"affidavit oidc login\x00"
SCOPE: Final = "openid"

_FACTORS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("pwd", "pin", "kba"), "knowledge"),
    **dict.fromkeys(("otp", "hwk", "swk", "sms", "tel", "sc", "pop"), "possession"),
    **dict.fromkeys(("fpt", "face", "iris", "retina", "vbm"), "inherence"),
}
_STATE_REFUSED = (
    "single sign-on refused: this answer of the OpenID provider belongs to no login under way "
    "(unknown, used already, expired, or begun in another browser)"
)


def shows_mfa(amr: tuple[str, ...], acr: str | None, mfa_acr: frozenset[str]) -> bool:
    """Whether the provider's ``amr``/``acr`` say that it checked more than one factor (see
    the module docstring)."""
    if "mfa" in amr or (acr is not None and acr in mfa_acr):
        return True
    return len({_FACTORS[a] for a in amr if a in _FACTORS}) >= 2


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcConfig:
    """The server's OpenID provider and its client there (settings ``oidc_*``)."""

    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str | None = field(default=None, repr=False)  # None: a public client
    mfa_acr: frozenset[str] = frozenset()
    starts_per_minute: int = 30  # per client address and process; 0: no limit

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The configuration, or None when no provider is set (``oidc_issuer`` empty); raise
        :class:`InputError` for one set in part."""
        if not settings.oidc_issuer:
            return None
        if not settings.oidc_client_id or not settings.oidc_redirect_uri:
            raise InputError(
                "single sign-on needs oidc_client_id and oidc_redirect_uri with oidc_issuer",
                hint="set AFFIDAVIT_OIDC_CLIENT_ID and AFFIDAVIT_OIDC_REDIRECT_URI "
                "(docs/server.md, settings)",
            )
        secret = settings.oidc_client_secret
        return cls(
            issuer=oidc_issuer(settings.oidc_issuer),
            client_id=settings.oidc_client_id,
            redirect_uri=settings.oidc_redirect_uri,
            client_secret=secret.get_secret_value() if secret is not None else None,
            mfa_acr=frozenset(settings.oidc_mfa_acr),
            starts_per_minute=settings.oidc_starts_per_minute,
        )


# -- talking to the provider -------------------------------------------------------------------


class Transport(Protocol):
    """How the server talks to the provider (HTTP; a test may substitute another)."""

    def get_json(self, url: str) -> Any:
        """The JSON of ``GET url`` (200 only); :class:`OperationError` otherwise."""

    def post_form(
        self, url: str, form: Mapping[str, str], *, basic: tuple[str, str] | None
    ) -> tuple[int, Any]:
        """``POST url`` with a form body (and HTTP Basic credentials): the status and the
        JSON answer; :class:`OperationError` when there is no JSON answer."""


def check_endpoint(url: object, what: str) -> str:
    """``url`` when it is an ``https`` URL (``http`` only to a loopback address); raise
    :class:`OperationError` otherwise (the provider's metadata is unusable)."""
    parts = urllib.parse.urlsplit(url if isinstance(url, str) else "")
    host = parts.hostname or ""
    if (
        not isinstance(url, str)
        or parts.scheme not in ("https", "http")
        or not host
        or (parts.scheme == "http" and not is_loopback_host(host))
        or parts.username is not None
        or parts.fragment
    ):
        raise OperationError(
            f"the OpenID provider's {what} is not an https URL: {str(url)[:200]!r}",
            hint="check oidc_issuer and the provider's configuration",
        )
    return url


class UrllibTransport:
    """HTTP with the standard library: certificates verified (a private CA:
    ``SSL_CERT_FILE``), no redirect followed, answers of at most :data:`MAX_ANSWER` bytes,
    :data:`HTTP_TIMEOUT` seconds."""

    def _open(self, request: Any) -> tuple[int, bytes]:
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=HTTP_TIMEOUT) as answer:
                return int(answer.status), answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read(MAX_ANSWER + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise OperationError(
                f"the OpenID provider cannot be reached: {getattr(exc, 'reason', exc)}",
                hint="check oidc_issuer and that the provider answers from this host",
            ) from None

    @staticmethod
    def _json(raw: bytes, url: str) -> Any:
        if len(raw) > MAX_ANSWER:
            raise OperationError(f"the OpenID provider's answer from {url} is too large")
        try:
            return json.loads(raw)
        except ValueError:
            raise OperationError(f"the OpenID provider's answer from {url} is not JSON") from None

    def get_json(self, url: str) -> Any:
        """See :class:`Transport`."""
        import urllib.request

        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only (check_endpoint)
        status, raw = self._open(request)
        if status != 200:
            raise OperationError(f"the OpenID provider answered HTTP {status} to {url}")
        return self._json(raw, url)

    def post_form(
        self, url: str, form: Mapping[str, str], *, basic: tuple[str, str] | None
    ) -> tuple[int, Any]:
        """See :class:`Transport`."""
        import urllib.request

        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if basic is not None:  # RFC 6749 §2.3.1: each part form-encoded, then Basic
            pair = ":".join(urllib.parse.quote_plus(part) for part in basic)
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        body = urllib.parse.urlencode(dict(form)).encode()
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only (check_endpoint)
        status, raw = self._open(request)
        return status, self._json(raw, url)


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the provider's discovery document says (the parts used here)."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    fetched_at: datetime


# -- logins under way --------------------------------------------------------------------------


class FlowKind(StrEnum):
    """Where a login began."""

    BROWSER = "browser"
    CLI = "cli"


@dataclass(slots=True)
class _Pending:
    """An authorization request waiting for the provider's answer (sealed in its row)."""

    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    kind: FlowKind
    created_at: datetime
    binding: str | None = None  # digest of the browser's binding cookie
    flow: str | None = None  # the CLI flow

    def to_json(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "verifier": self.verifier,
            "kind": self.kind.value,
            "created_at": self.created_at.isoformat(),
            "binding": self.binding,
            "flow": self.flow,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Pending:
        return cls(
            nonce=_text(data["nonce"]),
            verifier=_text(data["verifier"]),
            kind=FlowKind(data["kind"]),
            created_at=_moment(data["created_at"]),
            binding=_optional_text(data.get("binding")),
            flow=_optional_text(data.get("flow")),
        )


@dataclass(slots=True)
class _CliFlow:
    """A CLI login: its secret's digest; once the provider answered, the one-time code's
    digest and whom the provider vouched for; wrong codes typed so far."""

    secret: str  # digest of the flow secret
    created_at: datetime
    code: str | None = None  # digest of the one-time code, once the provider answered
    who: OidcIdentity | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "created_at": self.created_at.isoformat(),
            "code": self.code,
            "who": None if self.who is None else self.who.to_json(),
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _CliFlow:
        who = data.get("who")
        return cls(
            secret=_text(data["secret"]),
            created_at=_moment(data["created_at"]),
            code=_optional_text(data.get("code")),
            who=None if not isinstance(who, dict) else _identity_from_json(who),
            attempts=int(data.get("attempts", 0)),
        )


def _text(value: Any) -> str:
    """A sealed row's text (TypeError otherwise: the row is refused as unknown)."""
    if not isinstance(value, str):
        raise TypeError("not a text")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _moment(value: Any) -> datetime:
    """A sealed row's time, with its zone (ValueError otherwise: a naive time would fail
    the comparisons with the clock, as a server error, rather than refuse the row)."""
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError("a time without a zone")
    return moment


def _identity_from_json(data: Mapping[str, Any]) -> OidcIdentity:
    return OidcIdentity(
        issuer=_text(data["issuer"]),
        subject=_text(data["subject"]),
        authenticated_at=_moment(data["authenticated_at"]),
        mfa=bool(data["mfa"]),
        acr=_optional_text(data.get("acr")),
        amr=tuple(str(a) for a in data.get("amr", ())),
    )


@dataclass(frozen=True, slots=True)
class BrowserStart:
    """Where to send the browser, and the binding its cookie keeps."""

    url: str
    binding: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CliStart:
    """A CLI login: the URL to open, the flow, and the secret only the CLI holds."""

    url: str
    flow: str
    flow_secret: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Answered:
    """What the provider's answer became: a browser's session, or a CLI flow's one-time
    code to show."""

    grant: SessionGrant | None = None
    code: str | None = field(default=None, repr=False)


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


class OidcLogins:
    """The server's single sign-on: the provider's metadata and keys (cached), and the
    logins under way (in the catalog; see the module docstring). Thread-safe: one per server
    process."""

    def __init__(self, config: OidcConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self._transport: Transport = transport or UrllibTransport()
        self._metadata: ProviderMetadata | None = None
        self._jwks: tuple[dict[str, Any], datetime] | None = None
        self._starts: dict[str, list[datetime]] = {}  # client address -> its recent starts
        self._starts_lock = threading.Lock()

    def _admit(self, address: str | None, at: datetime) -> None:
        """Count a start from ``address``; raise :class:`TooManyRequests` past
        ``starts_per_minute`` in :data:`START_WINDOW`."""
        limit = self.config.starts_per_minute
        if address is None or limit <= 0:
            return
        with self._starts_lock:
            if len(self._starts) > MAX_PENDING:  # forget addresses whose window has passed
                self._starts = {
                    a: t for a, t in self._starts.items() if t and at - t[-1] < START_WINDOW
                }
            recent = [t for t in self._starts.get(address, []) if at - t < START_WINDOW]
            if len(recent) >= limit:
                self._starts[address] = recent
                raise TooManyRequests(
                    "too many single sign-on logins begun from this address",
                    hint="wait a minute, then begin the login again",
                )
            self._starts[address] = [*recent, at]

    # -- the provider's metadata and keys ---------------------------------------------------

    def metadata(self, now: datetime | None = None) -> ProviderMetadata:
        """The provider's discovery document (fetched at most once per
        :data:`METADATA_TTL`). Refused (:class:`OperationError`) when it names another
        issuer, an endpoint that is not https, or PKCE without S256."""
        at = _now(now)
        cached = self._metadata
        if cached is not None and at - cached.fetched_at < METADATA_TTL:
            return cached
        issuer = self.config.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._transport.get_json(check_endpoint(url, "discovery URL"))
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            found = document.get("issuer") if isinstance(document, dict) else None
            raise OperationError(
                f"the OpenID provider at {url} says its issuer is {str(found)[:200]!r}, "
                f"not {issuer!r}",
                hint="set oidc_issuer to the provider's issuer exactly",
            )
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OperationError(
                "the OpenID provider does not offer PKCE with S256",
                hint="enable PKCE (S256) for affidavit's client at the provider",
            )
        metadata = ProviderMetadata(
            authorization_endpoint=check_endpoint(
                document.get("authorization_endpoint"), "authorization endpoint"
            ),
            token_endpoint=check_endpoint(document.get("token_endpoint"), "token endpoint"),
            jwks_uri=check_endpoint(document.get("jwks_uri"), "jwks_uri"),
            fetched_at=at,
        )
        self._metadata = metadata
        return metadata

    def _keys(self, at: datetime, *, refresh: bool = False) -> dict[str, Any]:
        cached = self._jwks
        if cached is not None:
            age = at - cached[1]
            may_refetch = refresh and age >= JWKS_REFRESH_EVERY
            if age < METADATA_TTL and not may_refetch:
                return cached[0]
        jwks = self._transport.get_json(self.metadata(at).jwks_uri)
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise OperationError("the OpenID provider's JWKS is not a key set")
        self._jwks = (jwks, at)
        return jwks

    # -- logins under way, sealed in the catalog ----------------------------------------------

    @staticmethod
    def _seal(app: App, key: str, content: Mapping[str, Any], at: datetime) -> StoredLogin:
        wrapped = identity_keystore(app.settings).wrap(
            json.dumps(content, sort_keys=True).encode(), context=_SEAL_CONTEXT + key.encode()
        )
        return StoredLogin(
            kek_id=wrapped.kek_id, kek_version=wrapped.version, sealed=wrapped.ciphertext,
            created_at=at,
        )  # fmt: skip

    @staticmethod
    def _unseal(app: App, key: str, stored: StoredLogin | None) -> dict[str, Any] | None:
        """The content of a row, or None when there is none or it does not open (not sealed
        by this server for this key: written into the catalog by someone else)."""
        if stored is None:
            return None
        wrapped = WrappedSecret(
            kek_id=stored.kek_id, version=stored.kek_version, ciphertext=stored.sealed
        )
        try:
            content = json.loads(
                identity_keystore(app.settings).unwrap(
                    wrapped, context=_SEAL_CONTEXT + key.encode()
                )
            )
        except (KeystoreError, ValueError):
            return None
        return content if isinstance(content, dict) else None

    @staticmethod
    def _live(created_at: datetime, at: datetime) -> bool:
        return timedelta(0) <= at - created_at <= PENDING_TTL

    # -- beginning a login --------------------------------------------------------------------

    def _begin(
        self,
        app: App,
        secrets: jose.AuthorizationSecrets,
        pending: _Pending,
        at: datetime,
        flow: tuple[str, _CliFlow] | None = None,
    ) -> str:
        url = self.metadata(at).authorization_endpoint
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": SCOPE,
                "state": secrets.state,
                "nonce": secrets.nonce,
                "code_challenge": secrets.challenge,
                "code_challenge_method": "S256",
            }
        )
        state_key = _state_key(secrets.state)
        rows = [(state_key, self._seal(app, state_key, pending.to_json(), at))]
        if flow is not None:
            flow_key = _flow_key(flow[0])
            rows.append((flow_key, self._seal(app, flow_key, flow[1].to_json(), at)))
        with app.catalog.unit_of_work() as uow:
            logins = uow.oidc_logins
            logins.prune(before=at - PENDING_TTL, keep=MAX_PENDING - len(rows))
            for key, stored in rows:
                logins.put(key, stored)
        return url + ("&" if urllib.parse.urlsplit(url).query else "?") + query

    def start_browser(
        self, app: App, *, client_address: str | None = None, now: datetime | None = None
    ) -> BrowserStart:
        """A browser's login: the provider's URL, and the binding for its cookie (at most
        ``starts_per_minute`` a minute from one ``client_address``)."""
        at = _now(now)
        self._admit(client_address, at)
        binding = jose.new_flow_secret()
        secrets = jose.new_authorization_secrets()
        pending = _Pending(
            nonce=secrets.nonce,
            verifier=secrets.verifier,
            kind=FlowKind.BROWSER,
            created_at=at,
            binding=jose.digest(binding),
        )
        return BrowserStart(url=self._begin(app, secrets, pending, at), binding=binding)

    def start_cli(
        self, app: App, *, client_address: str | None = None, now: datetime | None = None
    ) -> CliStart:
        """A CLI's login: the provider's URL for the person, the flow and its secret (limited
        as :meth:`start_browser`)."""
        at = _now(now)
        self._admit(client_address, at)
        flow, secret = jose.new_flow_secret(), jose.new_flow_secret()
        secrets = jose.new_authorization_secrets()
        pending = _Pending(
            nonce=secrets.nonce,
            verifier=secrets.verifier,
            kind=FlowKind.CLI,
            created_at=at,
            flow=flow,
        )
        cli = _CliFlow(secret=jose.digest(secret), created_at=at)
        url = self._begin(app, secrets, pending, at, flow=(flow, cli))
        return CliStart(url=url, flow=flow, flow_secret=secret, expires_at=at + PENDING_TTL)

    # -- the provider's answer ------------------------------------------------------------------

    def _take(self, app: App, state: str, at: datetime) -> _Pending | None:
        """The login of ``state``, taken out of the catalog (used once), when it is live."""
        key = _state_key(state)
        with app.catalog.unit_of_work() as uow:
            stored = uow.oidc_logins.get(key)
            if stored is None:
                return None
            uow.oidc_logins.delete(key)
        content = self._unseal(app, key, stored)
        try:
            pending = None if content is None else _Pending.from_json(content)
        except (KeyError, TypeError, ValueError):
            pending = None
        if pending is None or not self._live(pending.created_at, at):
            return None
        return pending

    def answer(
        self,
        app: App,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        iss: str | None,
        binding: str | None,
        client: ClientInfo,
        now: datetime | None = None,
    ) -> Answered:
        """Take the provider's answer (the callback): check it (see the module docstring;
        every refusal recorded and raised as :class:`AuthenticationFailed`), then open the
        browser's session, or show the CLI flow's one-time code."""
        at = _now(now)
        pending = self._take(app, state, at) if state else None

        def refuse(reason: str, message: str, **details: Any) -> AuthenticationFailed:
            identity.record_oidc_refusal(app, reason, client=client, details=details, now=at)
            return AuthenticationFailed(message, hint="begin the login again")

        if pending is None:
            raise refuse("oidc-state", _STATE_REFUSED)
        if pending.kind is FlowKind.BROWSER and (
            binding is None
            or pending.binding is None
            or not jose.same(jose.digest(binding), pending.binding)
        ):
            raise refuse("oidc-binding", _STATE_REFUSED)
        if error:
            raise refuse(
                "oidc-provider-error",
                f"the OpenID provider refused the login: {error[:100]}",
                error=error[:100],
            )
        if iss is not None and iss != self.config.issuer:
            raise refuse(
                "oidc-issuer",
                "single sign-on refused: the answer names another issuer",
                issuer=iss[:200],
            )
        if not code:
            raise refuse("oidc-exchange", "single sign-on refused: the answer holds no code")
        try:
            token = self._exchange(code, pending.verifier)
        except AuthenticationFailed as exc:
            raise refuse("oidc-exchange", exc.message, error=exc.hint) from None
        try:
            who = self._verify(token, pending.nonce, at)
        except jose.IdTokenRefused as exc:
            raise refuse("oidc-token", exc.message, problem=exc.problem) from None
        if pending.kind is FlowKind.BROWSER:
            return Answered(grant=identity.open_oidc_session(app, who, client=client, now=at))
        identity.oidc_account(app, who, client=client, now=at)  # refusals recorded there
        shown = jose.new_one_time_code()
        key = _flow_key(pending.flow or "")
        with app.catalog.unit_of_work() as uow:
            flow = self._flow(app, key, uow.oidc_logins.get(key), at)
            if flow is None or flow.code is not None:  # expired meanwhile, or answered
                raise AuthenticationFailed(_STATE_REFUSED, hint="begin the login again")
            flow.who, flow.code = who, jose.digest(jose.normalise_one_time_code(shown))
            uow.oidc_logins.put(key, self._seal(app, key, flow.to_json(), flow.created_at))
        return Answered(code=shown)

    def _flow(
        self, app: App, key: str, stored: StoredLogin | None, at: datetime
    ) -> _CliFlow | None:
        content = self._unseal(app, key, stored)
        try:
            flow = None if content is None else _CliFlow.from_json(content)
        except (KeyError, TypeError, ValueError):
            return None
        if flow is None or not self._live(flow.created_at, at):
            return None
        return flow

    def _exchange(self, code: str, verifier: str) -> str:
        """The ID token the provider gives for ``code`` and this login's PKCE verifier;
        :class:`AuthenticationFailed` (hint: the provider's error) when it refuses."""
        config = self.config
        form = {
            "grant_type": "authorization_code",
            "code": code[:2048],
            "redirect_uri": config.redirect_uri,
            "code_verifier": verifier,
        }
        basic = None
        if config.client_secret is not None:
            basic = (config.client_id, config.client_secret)
        else:
            form["client_id"] = config.client_id
        status, answer = self._transport.post_form(
            self.metadata().token_endpoint, form, basic=basic
        )
        token = answer.get("id_token") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(token, str):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise AuthenticationFailed(
                "single sign-on refused: the OpenID provider did not exchange the code",
                hint=str(error or f"HTTP {status}")[:100],
            )
        return token

    def _verify(self, token: str, nonce: str, at: datetime) -> OidcIdentity:
        """The identity an ID token vouches for, after every check; a key the cached JWKS
        lacks makes it fetch the JWKS again (the provider rotated its keys), at most once per
        :data:`JWKS_REFRESH_EVERY`."""
        config = self.config
        jwks = self._keys(at)
        kid = jose.key_id(token)
        known = {k.get("kid") for k in jwks.get("keys", []) if isinstance(k, dict)}
        if kid is not None and kid not in known:
            jwks = self._keys(at, refresh=True)
        claims = jose.verify_id_token(
            token,
            jwks=jwks,
            issuer=config.issuer,
            client_id=config.client_id,
            nonce=nonce,
            now=at,
            leeway=LEEWAY,
            max_age=MAX_TOKEN_AGE,
        )
        return identity_of(claims, config.mfa_acr, at)

    # -- the CLI's redemption ---------------------------------------------------------------------

    def redeem(
        self,
        app: App,
        *,
        flow: str,
        flow_secret: str,
        code: str,
        client: ClientInfo,
        now: datetime | None = None,
    ) -> SessionGrant:
        """Open the session of a CLI flow whose provider login succeeded: the flow's secret
        and the one-time code shown to the person must both match (constant time). A wrong
        code counts; :data:`MAX_CODE_ATTEMPTS` end the flow. Refusals are recorded
        (``oidc-cli-code``) and raised as :class:`AuthenticationFailed`."""
        at = _now(now)
        wanted = jose.digest(jose.normalise_one_time_code(code))
        key = _flow_key(flow)
        who = None
        with app.catalog.unit_of_work() as uow:
            logins = uow.oidc_logins
            found = self._flow(app, key, logins.get(key), at)
            if (
                found is not None
                and jose.same(jose.digest(flow_secret), found.secret)
                and found.code is not None
            ):
                if jose.same(wanted, found.code):
                    who = found.who
                    logins.delete(key)
                else:
                    found.attempts += 1
                    if found.attempts >= MAX_CODE_ATTEMPTS:
                        logins.delete(key)
                    else:
                        logins.put(key, self._seal(app, key, found.to_json(), found.created_at))
        if who is None:
            identity.record_oidc_refusal(app, "oidc-cli-code", client=client, now=at)
            raise AuthenticationFailed(
                "single sign-on refused: wrong or expired code, or no login under way for it",
                hint="type the code the server showed after the provider's login; or begin "
                "again: `affidavit login URL --oidc`",
            )
        return identity.open_oidc_session(app, who, client=client, now=at)


def _state_key(state: str) -> str:
    return "state:" + jose.digest(state)


def _flow_key(flow: str) -> str:
    return "flow:" + jose.digest(flow)


def identity_of(claims: Mapping[str, Any], mfa_acr: frozenset[str], at: datetime) -> OidcIdentity:
    """The :class:`OidcIdentity` of a checked ID token's claims: authenticated at its
    ``auth_time`` (else its ``iat``, never later than ``at``), with MFA as
    :func:`shows_mfa` says."""
    when = claims.get("auth_time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        when = claims.get("iat")
    moment = at
    if isinstance(when, int | float) and not isinstance(when, bool):
        try:
            moment = min(datetime.fromtimestamp(float(when), UTC), at)
        except (OverflowError, OSError, ValueError):
            moment = at
    raw_amr = claims.get("amr")
    amr = tuple(
        a[:32] for a in (raw_amr if isinstance(raw_amr, list) else []) if isinstance(a, str)
    )[:20]
    raw_acr = claims.get("acr")
    acr = raw_acr[:200] if isinstance(raw_acr, str) else None
    return OidcIdentity(
        issuer=str(claims["iss"]),
        subject=str(claims["sub"]),
        authenticated_at=moment,
        mfa=shows_mfa(amr, acr, mfa_acr),
        acr=acr,
        amr=amr,
    )


def logins_for(settings: Settings) -> OidcLogins | None:
    """The server's :class:`OidcLogins`, or None when no provider is configured."""
    config = OidcConfig.from_settings(settings)
    return None if config is None else OidcLogins(config)
