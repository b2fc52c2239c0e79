"""OIDC single sign-on without a provider process: the ID-token check against tokens signed
here (each defect a fixture of its own: another audience, an extra audience, a foreign azp,
another issuer, expired, issued ahead, too old, the wrong nonce, ``alg: none``, an HMAC made
with the public key, a flipped signature byte, an unknown key), the PKCE S256 test vector of
RFC 7636, what counts as MFA, the settings, linking (one subject per account, an
administrator with fresh MFA, never a service account) and the login rules (unlinked,
disabled, a link the ledger does not vouch for)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from affidavit.config import load_settings
from affidavit.crypto import oidc as jose
from affidavit.crypto import totp
from affidavit.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    ConfigError,
    InputError,
    StepUpRequired,
)
from affidavit.models.identity import AccountKind, AuthMethod, OidcIdentity, Principal
from affidavit.models.ledger import ClientInfo
from affidavit.services import identity as idn
from affidavit.services import principals
from affidavit.services.context import App
from affidavit.services.oidc import OidcConfig, identity_of, shows_mfa

ISSUER = "https://idp.example.test"
CLIENT_ID = "affidavit"
NONCE = "n-0123456789"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
JWKS = {"keys": [KEY.as_dict(private=False)]}
CLIENT = ClientInfo(address="192.0.2.9", agent="pytest")
PW = "admin passphrase 1"


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "person-1",
        "nonce": NONCE,
        "iat": int(NOW.timestamp()) - 5,
        "exp": int(NOW.timestamp()) + 300,
        "auth_time": int(NOW.timestamp()) - 30,
        "amr": ["pwd", "otp"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = KEY, alg: str = "RS256", kid: str = "k1") -> str:
    return jwt.encode({"alg": alg, "kid": kid}, payload, key, algorithms=[alg])


def check(token: str) -> dict[str, Any]:
    return jose.verify_id_token(
        token,
        jwks=JWKS,
        issuer=ISSUER,
        client_id=CLIENT_ID,
        nonce=NONCE,
        now=NOW,
        leeway=timedelta(seconds=60),
        max_age=timedelta(minutes=10),
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_good_token_passes() -> None:
    assert check(signed(claims()))["sub"] == "person-1"
    assert check(signed(claims(aud=[CLIENT_ID], azp=CLIENT_ID)))["sub"] == "person-1"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"aud": "other-app"}, "audience"),
        ({"aud": [CLIENT_ID, "other-app"], "azp": CLIENT_ID}, "audience"),
        ({"aud": None}, "audience"),
        ({"azp": "other-app"}, "azp"),
        ({"iss": "https://evil.example.test"}, "issuer"),
        ({"iss": ISSUER + "/"}, "issuer"),  # issuers compare exactly
        ({"exp": int(NOW.timestamp()) - 61}, "expired"),
        ({"exp": None}, "expired"),
        ({"exp": True}, "expired"),
        ({"iat": int(NOW.timestamp()) + 120}, "issued-in-the-future"),
        ({"iat": int(NOW.timestamp()) - 3600}, "too-old"),
        ({"nonce": "n-replayed"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"sub": None}, "subject"),
        ({"sub": "x" * 256}, "subject"),
        ({"sub": "caf\u00e9"}, "subject"),
    ],
)
def test_each_defective_claim_is_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(signed(claims(**changes)))
    assert refused.value.problem == problem


def test_alg_none_is_refused() -> None:
    head = b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    token = f"{head}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(token)
    assert refused.value.problem in ("algorithm", "malformed")


def test_an_hmac_made_with_the_public_key_is_refused() -> None:
    # the key-confusion forgery: HS256 keyed with the provider's public key, which anyone has
    head = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(KEY.as_pem(private=False), f"{head}.{body}".encode(), hashlib.sha256)
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(f"{head}.{body}.{b64(mac.digest())}")
    assert refused.value.problem in ("algorithm", "unknown-key")


def test_a_flipped_signature_byte_and_a_foreign_key_are_refused() -> None:
    head, body, sig = signed(claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 1
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(f"{head}.{body}.{b64(bytes(raw))}")
    assert refused.value.problem == "signature"
    # a payload swapped under the signature
    other = b64(json.dumps(claims(sub="admin-of-everything")).encode())
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(f"{head}.{other}.{sig}")
    assert refused.value.problem == "signature"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(signed(claims(), key=stranger))
    assert refused.value.problem == "signature"
    with pytest.raises(jose.IdTokenRefused) as refused:
        check(signed(claims(), key=RSAKey.generate_key(2048, parameters={"kid": "k9"}), kid="k9"))
    assert refused.value.problem == "unknown-key"


def test_hostile_shapes_are_refused() -> None:
    for token in ("", "a.b", "a.b.c.d.e", "x" * 20_000, "eyJ.eyJ.sig"):
        with pytest.raises(jose.IdTokenRefused):
            check(token)
    assert jose.key_id(signed(claims())) == "k1"
    assert jose.key_id("%%%.x.y") is None


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert jose.pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    one, two = jose.new_authorization_secrets(), jose.new_authorization_secrets()
    assert len({one.state, one.nonce, one.verifier, two.state, two.nonce, two.verifier}) == 6
    assert "state" not in repr(one) or one.state not in repr(one)


def test_what_counts_as_mfa() -> None:
    none: frozenset[str] = frozenset()
    assert shows_mfa(("pwd", "otp"), None, none)
    assert shows_mfa(("mfa",), None, none)
    assert shows_mfa(("pwd", "hwk"), None, none)
    assert shows_mfa(("face", "hwk"), None, none)
    assert not shows_mfa(("pwd",), None, none)
    assert not shows_mfa(("otp",), None, none)  # one factor, however strong
    assert not shows_mfa(("otp", "sms"), None, none)  # two of one kind
    assert not shows_mfa((), "urn:example:mfa", none)
    assert shows_mfa((), "urn:example:mfa", frozenset({"urn:example:mfa"}))
    who = identity_of(claims(), none, NOW)
    assert who.mfa and who.authenticated_at == NOW - timedelta(seconds=30)
    assert identity_of(claims(auth_time=None, amr=None), none, NOW).mfa is False
    future = identity_of(claims(auth_time=int(NOW.timestamp()) + 3600), none, NOW)
    assert future.authenticated_at == NOW  # never later than now


def test_settings(tmp_path: Path) -> None:
    environ = {
        "AFFIDAVIT_OIDC_ISSUER": ISSUER,
        "AFFIDAVIT_OIDC_CLIENT_ID": CLIENT_ID,
        "AFFIDAVIT_OIDC_CLIENT_SECRET": "s3cret",
        "AFFIDAVIT_OIDC_REDIRECT_URI": "https://affidavit.example/api/v1/auth/oidc/callback",
        "AFFIDAVIT_OIDC_MFA_ACR": "urn:a, urn:b",
    }
    config = OidcConfig.from_settings(load_settings(home=tmp_path, environ=environ))
    assert config is not None
    assert config.mfa_acr == frozenset({"urn:a", "urn:b"})
    assert "s3cret" not in repr(config)
    assert OidcConfig.from_settings(load_settings(home=tmp_path, environ={})) is None
    partial = load_settings(home=tmp_path, environ={"AFFIDAVIT_OIDC_ISSUER": ISSUER})
    with pytest.raises(InputError, match="oidc_client_id"):
        OidcConfig.from_settings(partial)
    for bad in ("http://idp.example.test", "ftp://idp", "https://u:p@idp.example.test"):
        with pytest.raises(ConfigError, match="oidc_issuer"):
            load_settings(home=tmp_path, environ={"AFFIDAVIT_OIDC_ISSUER": bad})
    assert load_settings(home=tmp_path, environ={"AFFIDAVIT_OIDC_ISSUER": "http://127.0.0.1:9"})
    home = tmp_path / "home"
    home.mkdir()
    (home / "affidavit.toml").write_text('[affidavit]\noidc_client_secret = "in a file"\n')
    with pytest.raises(ConfigError, match="client secret"):
        load_settings(home=home, environ={})


# -- linking and the login rules (a real catalog and ledger) -------------------------------------


def _admin(app: App) -> tuple[Principal, str]:
    """The bootstrapped administrator, TOTP enrolled, logged in with fresh MFA at NOW."""
    local = principals.local_principal(app)
    idn.bootstrap_admin(app, local, "root", PW, now=NOW - timedelta(minutes=2))
    first = idn.login(app, "root", PW, client=CLIENT, now=NOW - timedelta(minutes=2))
    enrolment = idn.begin_totp(app, first.principal, "root", now=NOW - timedelta(minutes=2))
    start = NOW - timedelta(minutes=2)
    idn.confirm_totp(app, first.principal, "root", totp.code_at(enrolment.secret, start), now=start)
    grant = idn.login(app, "root", PW, totp.code_at(enrolment.secret, NOW), client=CLIENT, now=NOW)
    return grant.principal, enrolment.secret


def _who(subject: str, *, mfa: bool = True) -> OidcIdentity:
    return OidcIdentity(
        issuer=ISSUER,
        subject=subject,
        authenticated_at=NOW - timedelta(seconds=20),
        mfa=mfa,
        amr=("pwd", "otp") if mfa else ("pwd",),
    )


def _failures(home: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = 'identity.login_failed' order by seq"
        ).fetchall()
    return [json.loads(bytes(r[0]) if not isinstance(r[0], str) else r[0])["details"] for r in rows]


def test_linking_and_signing_on(app: App, home: Path) -> None:
    admin, _ = _admin(app)
    idn.create_account(app, admin, "pat", password="quiet river stone 123", now=NOW)
    idn.create_account(app, admin, "sam", password="green window lamp 456", now=NOW)
    idn.create_account(app, admin, "bot", kind=AccountKind.SERVICE, now=NOW)
    linked = idn.link_oidc(app, admin, "pat", issuer=ISSUER, subject="person-1", now=NOW)
    assert (linked.oidc_issuer, linked.oidc_subject) == (ISSUER, "person-1")
    with pytest.raises(AlreadyExists, match="linked to 'pat' already"):
        idn.link_oidc(app, admin, "sam", issuer=ISSUER, subject="person-1", now=NOW)
    with pytest.raises(InputError, match="service account"):
        idn.link_oidc(app, admin, "bot", issuer=ISSUER, subject="bot-1", now=NOW)
    with pytest.raises(InputError, match="issuer"):
        idn.link_oidc(app, admin, "sam", issuer="http://idp.example.test", subject="s", now=NOW)
    with pytest.raises(InputError, match="subject"):
        idn.link_oidc(app, admin, "sam", issuer=ISSUER, subject="with space", now=NOW)
    later = NOW + timedelta(minutes=6)  # the administrator's MFA check is stale by then
    with pytest.raises(StepUpRequired):
        idn.link_oidc(app, admin, "sam", issuer=ISSUER, subject="person-2", now=later)
    pat = idn.login(app, "pat", "quiet river stone 123", client=CLIENT, now=NOW).principal
    with pytest.raises(AccessDenied):
        idn.link_oidc(app, pat, "pat", issuer=ISSUER, subject="person-9", now=NOW)

    grant = idn.open_oidc_session(app, _who("person-1"), client=CLIENT, now=NOW)
    assert grant.principal.name == "pat"
    assert grant.session.method is AuthMethod.OIDC
    assert grant.principal.mfa_at == NOW - timedelta(seconds=20)  # the provider's login time
    plain = idn.open_oidc_session(app, _who("person-1", mfa=False), client=CLIENT, now=NOW)
    assert plain.principal.mfa_at is None
    assert idn.authenticate_session(app, grant.secret, now=NOW).name == "pat"

    with pytest.raises(AuthenticationFailed, match="not linked"):
        idn.open_oidc_session(app, _who("nobody-7"), client=CLIENT, now=NOW)
    assert _failures(home)[-1]["reason"] == "oidc-unlinked"

    # a link written into the catalog behind affidavit's back does not log anyone in
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update accounts set oidc_issuer = ?, oidc_subject = ? where name = 'sam'",
            (ISSUER, "person-3"),
        )
    with pytest.raises(AuthenticationFailed):
        idn.open_oidc_session(app, _who("person-3"), client=CLIENT, now=NOW)
    assert _failures(home)[-1]["reason"] == "oidc-link-unvouched"
    # relinking moves the subject: the old one no longer signs on
    idn.link_oidc(app, admin, "pat", issuer=ISSUER, subject="person-4", now=NOW)
    with pytest.raises(AuthenticationFailed):
        idn.open_oidc_session(app, _who("person-1"), client=CLIENT, now=NOW)
    assert idn.open_oidc_session(app, _who("person-4"), client=CLIENT, now=NOW).principal
    # a disabled account
    idn.disable_account(app, admin, "pat", reason="left", now=NOW)
    with pytest.raises(AuthenticationFailed):
        idn.open_oidc_session(app, _who("person-4"), client=CLIENT, now=NOW)
    assert _failures(home)[-1]["reason"] == "disabled"
