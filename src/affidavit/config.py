"""Typed settings with one precedence chain: defaults < affidavit.toml < AFFIDAVIT_* < flags.

:func:`load_settings` is called once per process (by the CLI or the server) and the frozen
:class:`Settings` it returns is passed down; nothing below reads the environment itself.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from affidavit.constants import (
    CATALOG_FILENAME,
    CONFIG_FILENAME,
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_HOME_DIRNAME,
    ENV_PREFIX,
    HOME_ENV,
)
from affidavit.errors import ConfigError


class Settings(BaseModel):
    """Every setting affidavit reads, parsed to real types."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    catalog_url: str = Field(
        default="", description="SQLAlchemy URL of the catalog; empty means SQLite in home"
    )
    connect_timeout: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS,
        gt=0,
        le=300,
        description="seconds to wait for a source to answer",
    )
    actor: str = Field(default="", description="who is acting, recorded in the ledger")
    retention_days: int = Field(default=35, ge=1, le=36500)
    passphrase: SecretStr | None = Field(
        default=None,
        description="protects the local key file (scrypt); from AFFIDAVIT_PASSPHRASE only",
    )
    kms_key_id: str = Field(default="", description="AWS KMS key that wraps backup keys")
    kms_region: str = Field(default="", description="region of the KMS key")

    verify_sample_every_hours: float = Field(
        default=24, gt=0, le=8760, description="hours between sample verifications of a backup"
    )
    verify_sample_percent: float = Field(
        default=10, gt=0, le=100, description="percent of a backup a sample verification reads"
    )
    verify_full_every_days: float = Field(
        default=7, gt=0, le=3650, description="days between full verifications of a backup"
    )
    verify_first_run: Literal["fast", "deep"] = Field(
        default="fast",
        description="fast: a backup whose writer proved its segment tables is verified fast "
        "from the first run; deep: every backup's first verification re-derives its "
        "whole-file and plaintext digests (docs/verification.md)",
    )
    drill_every_days: float = Field(
        default=30, gt=0, le=3650, description="days between restore drills of each source"
    )
    rto_seconds: float = Field(
        default=3600, gt=0, le=30 * 86400, description="recovery-time objective of a drill"
    )
    policy_check_every_days: float = Field(
        default=1, gt=0, le=366, description="days between policy checks (the calendar's cadence)"
    )
    policy_review_every_days: int = Field(
        default=365, ge=1, le=3660, description="days between reviews of the policy in force"
    )
    hold_review_every_days: int = Field(
        default=180, ge=1, le=3660, description="days between reviews of each active legal hold"
    )
    access_log_retention_days: int = Field(
        default=400,
        ge=1,
        le=36500,
        description="days an access-log entry keeps its payload (its leaf hash stays)",
    )
    webhooks: tuple[str, ...] = Field(
        default=(), description="http(s) URLs that receive alerts as JSON POSTs"
    )
    oidc_issuer: str = Field(
        default="",
        description="the OpenID provider of single sign-on (its issuer URL); empty: none",
    )
    oidc_client_id: str = Field(
        default="", max_length=255, description="affidavit's client id at the OpenID provider"
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="the client's secret; from AFFIDAVIT_OIDC_CLIENT_SECRET only (none: a "
        "public client, PKCE alone)",
    )
    oidc_redirect_uri: str = Field(
        default="",
        description="the callback URL registered at the provider: "
        "https://HOST:PORT/api/v1/auth/oidc/callback",
    )
    oidc_mfa_acr: tuple[str, ...] = Field(
        default=(), description="acr values by which the provider says it checked MFA"
    )
    oidc_starts_per_minute: int = Field(
        default=30,
        ge=0,
        le=1_000_000,
        description="single sign-on logins one client address may begin per minute and "
        "server process (0: no limit; behind a proxy every client has the proxy's address)",
    )
    max_upload_bytes: int = Field(
        default=8 * 1024**3,
        ge=1,
        le=1 << 50,
        description="the largest file `affidavit serve` takes in one upload (POST "
        "/api/v1/uploads: backup ingest, fingerprint FILE through the server)",
    )
    # reminders of evidence requests (`affidavit audit remind`, docs/audit.md)
    audit_remind_days_before: int = Field(
        default=2, ge=0, le=60, description="days before its due date a request is reminded of"
    )
    audit_remind_to: tuple[str, ...] = Field(
        default=(), description="e-mail addresses that get every reminder (the evidence owners)"
    )
    audit_smtp_host: str = Field(default="", description="SMTP server of reminders; empty: none")
    audit_smtp_port: int = Field(default=587, ge=1, le=65535, description="its port")
    audit_smtp_starttls: bool = Field(default=True, description="STARTTLS before anything else")
    audit_smtp_from: str = Field(default="", description="the From address of reminders")
    audit_smtp_username: str = Field(default="", description="SMTP login; empty: none")
    audit_smtp_password: SecretStr | None = Field(
        default=None, description="its password; from AFFIDAVIT_AUDIT_SMTP_PASSWORD only"
    )
    audit_webhook_url: str = Field(
        default="", description="http(s) URL reminders are POSTed to as signed JSON; empty: none"
    )
    audit_webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA-256 key of the webhook's signature; from "
        "AFFIDAVIT_AUDIT_WEBHOOK_SECRET only",
    )

    openlineage_url: str = Field(
        default="",
        description="OpenLineage endpoint `affidavit lineage emit` POSTs run events to "
        "(docs/lineage.md); empty: none",
    )

    @field_validator("audit_remind_to", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("audit_remind_to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if "@" not in address or any(ord(ch) <= 0x20 for ch in address):
                raise ValueError(f"{address[:80]!r} is not an e-mail address")
        return value

    @field_validator("audit_webhook_url", "openlineage_url")
    @classmethod
    def _audit_webhook(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_no_userinfo(value)[:200]!r} is not an http(s) URL")
        if any(ord(ch) <= 0x20 for ch in value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("webhooks", mode="before")
    @classmethod
    def _split_webhooks(cls, value: Any) -> Any:
        # from the environment: AFFIDAVIT_WEBHOOKS="https://a/x https://b/y" (comma or space)
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{_no_userinfo(url)!r} is not an http(s) URL")
            if any(ord(ch) <= 0x20 for ch in url):
                raise ValueError("a webhook URL must not contain spaces or control characters")
        return value

    @field_validator("oidc_mfa_acr", mode="before")
    @classmethod
    def _split_acr(cls, value: Any) -> Any:
        # from the environment: AFFIDAVIT_OIDC_MFA_ACR="urn:a urn:b" (comma or space)
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("oidc_issuer", "oidc_redirect_uri")
    @classmethod
    def _oidc_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"{_no_userinfo(value)[:200]!r} is not an http(s) URL")
        from affidavit.models.identity import is_loopback_host  # (heavy: only when set)

        if parts.scheme == "http" and not is_loopback_host(host):
            raise ValueError("must be https (http only to a loopback address)")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise ValueError("must hold no credentials and no fragment")
        if any(ord(ch) <= 0x20 for ch in value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("actor")
    @classmethod
    def _actor_printable(cls, value: str) -> str:
        if any(ord(ch) < 0x20 for ch in value):
            raise ValueError("must not contain control characters")
        return value

    @property
    def config_file(self) -> Path:
        """Where ``affidavit.toml`` lives."""
        return self.home / CONFIG_FILENAME

    @property
    def effective_catalog_url(self) -> str:
        """The catalog URL, defaulting to the SQLite file in the home."""
        return self.catalog_url or f"sqlite:///{self.home / CATALOG_FILENAME}"

    @property
    def effective_actor(self) -> str:
        """The acting user: the setting, else the login name."""
        if self.actor:
            return self.actor
        try:
            return getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            return f"uid:{os.getuid()}"


def _no_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (for error messages)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


# setting name -> environment variable, for everything but home (AFFIDAVIT_HOME)
_ENV_NAMES = {name: ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "home"}


def default_home(environ: Mapping[str, str]) -> Path:
    """``$AFFIDAVIT_HOME``, else ``~/.affidavit``."""
    if environ.get(HOME_ENV):
        return Path(environ[HOME_ENV]).expanduser()
    return Path.home() / DEFAULT_HOME_DIRNAME


def load_settings(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, the home's ``affidavit.toml``, the environment and
    flag ``overrides`` (later wins). Raise :class:`ConfigError` naming the bad key."""
    env = os.environ if environ is None else environ
    resolved_home = (home or default_home(env)).expanduser().absolute()
    merged: dict[str, Any] = {}
    config_file = resolved_home / CONFIG_FILENAME
    if config_file.is_file():
        merged.update(_read_toml(config_file))
    for name, var in _ENV_NAMES.items():
        if var in env:
            merged[name] = env[var]
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    merged["home"] = resolved_home
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        source = _where_from(where, env, overrides or {}, config_file)
        raise ConfigError(f"invalid setting {where!r} ({source}): {err['msg']}") from None


def _where_from(
    name: str, env: Mapping[str, str], overrides: Mapping[str, Any], config_file: Path
) -> str:
    if overrides.get(name) is not None:
        return "command-line flag"
    var = _ENV_NAMES.get(name)  # None: not a setting (os.environ refuses None as a key)
    if var is not None and var in env:
        return f"environment {var}"
    return str(config_file)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if "home" in data:
        raise ConfigError(f"{path} must not set 'home'", hint=f"set {HOME_ENV} or --home instead")
    section = data.get("affidavit", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [affidavit] must be a table")
    if "passphrase" in section:
        raise ConfigError(
            f"{path} must not hold the passphrase",
            hint="secrets are never stored in files affidavit reads: set AFFIDAVIT_PASSPHRASE",
        )
    for secret in ("audit_smtp_password", "audit_webhook_secret"):
        if secret in section:
            raise ConfigError(
                f"{path} must not hold {secret}",
                hint="secrets are never stored in files affidavit reads: set "
                f"AFFIDAVIT_{secret.upper()}",
            )
    if "oidc_client_secret" in section:
        raise ConfigError(
            f"{path} must not hold the OpenID client secret",
            hint="secrets are never stored in files affidavit reads: set "
            "AFFIDAVIT_OIDC_CLIENT_SECRET",
        )
    return dict(section)


DEFAULT_CONFIG_TEXT = """\
# affidavit settings. Precedence: defaults < this file < AFFIDAVIT_* environment < flags.
[affidavit]
# catalog_url = "postgresql+psycopg://affidavit@db.example.com/affidavit"  # default: SQLite here
# connect_timeout = 5.0      # seconds to wait for a source to answer
# actor = "alice@example.com" # who is acting (default: your login name)
# retention_days = 35        # default retention of new backups
# kms_key_id = "arn:aws:kms:eu-west-1:111122223333:key/..."  # wrap backup keys with AWS KMS
# kms_region = "eu-west-1"
# Cadence of `affidavit run-due` (see docs/operations.md):
# verify_sample_every_hours = 24  # sample-verify every backup this often
# verify_sample_percent = 10      # how much of a backup a sample verification reads
# verify_full_every_days = 7      # fully verify every backup this often
# verify_first_run = "fast"       # "deep": re-derive every digest in a backup's first verify
# drill_every_days = 30           # restore-drill the newest backup of each source this often
# rto_seconds = 3600              # recovery-time objective a drill must meet
# webhooks = ["https://alerts.example.com/affidavit"]  # alerts are POSTed here as JSON
# access_log_retention_days = 400  # `access-log expire` drops older payloads (hashes stay)
# The governance calendar (docs/calendar.md):
# policy_check_every_days = 1     # `affidavit policy check` is due this often
# policy_review_every_days = 365  # the policy in force is reviewed this often
# hold_review_every_days = 180    # each active legal hold is reviewed this often
# Single sign-on of `affidavit serve` with an OpenID provider (docs/identities.md, "OIDC"):
# oidc_issuer = "https://login.example.com/realms/main"
# oidc_client_id = "affidavit"
# oidc_redirect_uri = "https://affidavit.example.com:8443/api/v1/auth/oidc/callback"
# oidc_mfa_acr = ["urn:example:mfa"]  # acr values that mean the provider checked MFA
# The client secret comes from AFFIDAVIT_OIDC_CLIENT_SECRET only (none: a public client).
# Reminders of auditors' evidence requests, `affidavit audit remind` (docs/audit.md):
# audit_remind_days_before = 2
# audit_remind_to = ["evidence-owners@example.com"]
# audit_smtp_host = "smtp.example.com"   # audit_smtp_port = 587, audit_smtp_starttls = true
# audit_smtp_from = "affidavit@example.com"
# audit_webhook_url = "https://hooks.example.com/affidavit"  # key: AFFIDAVIT_AUDIT_WEBHOOK_SECRET
# openlineage_url = "http://marquez.example.com:5000/api/v1/lineage"  # `affidavit lineage emit`
# The local key file's passphrase comes from AFFIDAVIT_PASSPHRASE only, never from this file.
"""
