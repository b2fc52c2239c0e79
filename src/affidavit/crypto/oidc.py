"""OpenID Connect's cryptography: the secrets of an authorization request (``state``, ``nonce``
and the PKCE verifier with its S256 challenge, RFC 7636 §4.2), the one-time code a CLI login
shows, and the check of an ID token (OpenID Connect Core 1.0 §3.1.3.7).

The signature is checked by ``joserfc`` against the provider's JWKS, with asymmetric
algorithms only (never ``none``, never an HMAC: a token "signed" with the client secret or
with a public key used as an HMAC key is refused). The claims are then checked here, each
refusal naming its problem (:attr:`IdTokenRefused.problem`):

| problem | refused when |
| --- | --- |
| ``malformed`` | not a compact JWS of at most 16 KiB, or its claims are not a JSON object |
| ``algorithm`` | signed with an algorithm outside :data:`ALGORITHMS` |
| ``unknown-key`` | no key of the JWKS matches its ``kid`` |
| ``signature`` | the signature does not verify |
| ``issuer`` | ``iss`` is not the configured issuer, exactly |
| ``audience`` | ``aud`` is not exactly this client (another audience, or more than one) |
| ``azp`` | ``azp`` is present and names another client |
| ``expired`` | ``exp`` is missing or passed (beyond the leeway) |
| ``issued-in-the-future`` / ``too-old`` | ``iat`` is missing, ahead of now, or older than allowed |
| ``nonce`` | ``nonce`` is not the one this login sent (constant-time comparison) |
| ``subject`` | ``sub`` is missing or not 1-255 printable ASCII characters |
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from affidavit.errors import AuthenticationFailed

ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)
"""The ID-token signature algorithms accepted: asymmetric ones only."""
MAX_ID_TOKEN: Final = 16 * 1024
_CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # base32 without 0/O, 1/I
_CODE_LENGTH: Final = 8  # 40 bits; it is redeemed together with a 256-bit flow secret
_TAG: Final = b"affidavit oidc v1\x00"
_KEY_TYPES: Final = frozenset({"RSA", "EC", "OKP"})  # signing keys (never "oct": an HMAC)


class IdTokenRefused(AuthenticationFailed):
    """An ID token that does not pass its checks; :attr:`problem` says which (see the
    module's table)."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(
            f"the OpenID provider's ID token is refused ({problem}): {detail}",
            hint="log in again; if it persists, the provider or the server is misconfigured",
        )
        self.problem = problem


@dataclass(frozen=True, slots=True)
class AuthorizationSecrets:
    """The secrets of one authorization request: ``state`` (binds the answer to this
    request), ``nonce`` (binds the ID token to it) and the PKCE verifier (binds the code to
    it), each 256 random bits; ``challenge`` is the verifier's S256 challenge."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)

    @property
    def challenge(self) -> str:
        """``BASE64URL(SHA-256(verifier))`` (RFC 7636 §4.2, method S256)."""
        return pkce_challenge(self.verifier)


def new_authorization_secrets() -> AuthorizationSecrets:
    """Fresh ``state``, ``nonce`` and PKCE verifier (43 URL-safe characters each)."""
    return AuthorizationSecrets(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(32),
    )


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_flow_secret() -> str:
    """A secret that only the CLI which began a login holds (256 random bits)."""
    return secrets.token_urlsafe(32)


def new_one_time_code() -> str:
    """A code for a person to carry from the browser to the CLI: ``XXXX-XXXX``."""
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise_one_time_code(code: str) -> str:
    """The code's characters (case, spaces and dashes aside)."""
    return code.replace("-", "").replace(" ", "").upper()[:64]


def digest(value: str) -> str:
    """A domain-separated SHA-256 (hex) of a flow secret, browser binding or code: what the
    server keeps instead of the value."""
    return hashlib.sha256(_TAG + value.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def key_id(token: str) -> str | None:
    """The ``kid`` of a compact JWS's header, unverified (to tell whether the provider's
    JWKS must be fetched again after a key rotation); None when there is none."""
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def verify_id_token(
    token: str,
    *,
    jwks: Mapping[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    now: datetime,
    leeway: timedelta,
    max_age: timedelta,
) -> dict[str, Any]:
    """The claims of ``token`` after every check of the module's table; raises
    :class:`IdTokenRefused` naming the first that fails. ``leeway`` allows for clock skew
    on ``exp`` and ``iat``; ``max_age`` bounds how long ago ``iat`` may be."""
    claims = _signed_claims(token, jwks)
    if claims.get("iss") != issuer:
        raise IdTokenRefused("issuer", f"issued by {str(claims.get('iss'))[:200]!r}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or audiences != [client_id]:
        raise IdTokenRefused("audience", f"issued for {str(audience)[:200]!r}, not this server")
    if "azp" in claims and claims.get("azp") != client_id:
        raise IdTokenRefused("azp", f"authorized party {str(claims.get('azp'))[:200]!r}")
    at, skew = now.timestamp(), leeway.total_seconds()
    expires = _number(claims, "exp")
    if expires is None or at >= expires + skew:
        raise IdTokenRefused("expired", "the token has expired (or states no expiry)")
    issued = _number(claims, "iat")
    if issued is None or issued > at + skew:
        raise IdTokenRefused("issued-in-the-future", "the token's iat is missing or ahead")
    if issued < at - max_age.total_seconds() - skew:
        raise IdTokenRefused("too-old", "the token was issued too long ago")
    presented = claims.get("nonce")
    if not isinstance(presented, str) or not same(presented, nonce):
        raise IdTokenRefused("nonce", "the nonce is not the one this login sent")
    subject = claims.get("sub")
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= 255
        or any(not 0x20 < ord(ch) < 0x7F for ch in subject)
    ):
        raise IdTokenRefused("subject", "the sub claim is missing, too long or not ASCII")
    return claims


def _signed_claims(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The claims of a compact JWS whose signature one of the JWKS's signing keys verifies
    with an algorithm of :data:`ALGORITHMS`."""
    from joserfc import errors, jwt
    from joserfc.jwk import KeySet

    if not isinstance(token, str) or len(token) > MAX_ID_TOKEN or token.count(".") != 2:
        raise IdTokenRefused("malformed", "not a compact JWS of at most 16 KiB")
    listed = jwks.get("keys")
    usable = [
        k
        for k in (listed if isinstance(listed, list) else [])
        if isinstance(k, dict) and k.get("use", "sig") == "sig" and k.get("kty") in _KEY_TYPES
    ]
    try:
        keys = KeySet.import_key_set({"keys": usable})
    except (errors.JoseError, ValueError, TypeError, KeyError) as exc:
        raise IdTokenRefused("unknown-key", f"the provider's JWKS is unusable: {exc}") from exc
    try:
        decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except errors.BadSignatureError as exc:
        raise IdTokenRefused("signature", "the signature does not verify") from exc
    except (errors.UnsupportedAlgorithmError, errors.MissingAlgorithmError) as exc:
        raise IdTokenRefused("algorithm", "not signed with an accepted algorithm") from exc
    except (errors.MissingKeyError, errors.InvalidKeyIdError, errors.InvalidKeyTypeError) as exc:
        raise IdTokenRefused("unknown-key", "no key of the provider's JWKS matches") from exc
    except (errors.JoseError, ValueError, TypeError) as exc:
        raise IdTokenRefused("malformed", type(exc).__name__) from exc
    if decoded.header.get("alg") not in ALGORITHMS:
        raise IdTokenRefused("algorithm", "not signed with an accepted algorithm")
    if not isinstance(decoded.claims, dict):
        raise IdTokenRefused("malformed", "the claims are not a JSON object")
    return dict(decoded.claims)
