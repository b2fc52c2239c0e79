"""Connection URIs: inline secrets refused, malformed input refused, credentials never shown."""

from __future__ import annotations

import pytest

from affidavit.constants import EngineName
from affidavit.errors import InputError
from affidavit.models.uri import ConnectionUri

M, R = EngineName.MONGODB, EngineName.REDIS


@pytest.mark.parametrize(
    ("engine", "text"),
    [
        (M, "mongodb://db1.example.com:27017/?tls=true"),
        (M, "mongodb://a:1,b:2,c:3/?replicaSet=rs0"),
        (M, "mongodb+srv://cluster0.example.net/"),
        (M, "mongodb://backup@db1.example.com/?authSource=admin"),
        (M, "mongodb://[::1]:27017/"),
        (R, "redis://cache.example.com:6379/0"),
        (R, "rediss://default@cache.example.com:6380/3"),
        (R, "redis://127.0.0.1"),
    ],
)
def test_well_formed_uris_parse(engine: EngineName, text: str) -> None:
    uri = ConnectionUri.parse(engine, text)
    assert uri.text == text
    assert ":" not in uri.redacted.split("//", 1)[1].split("@")[0] or "@" not in uri.redacted


@pytest.mark.parametrize(
    ("engine", "text", "fragment"),
    [
        (M, "mongodb://admin:hunter2@db1/", "password"),
        (R, "redis://:hunter2@cache:6379/0", "password"),
        (R, "redis://default:hunter2@cache:6379/0", "password"),
        (M, "mongodb://db1/?tlsCertificateKeyFilePassword=hunter2", "secret"),
        (
            M,
            "mongodb://db1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:x",
            "secret",
        ),
        (R, "redis://cache/0?password=hunter2", "secret"),
    ],
)
def test_inline_secrets_are_refused_with_a_hint(
    engine: EngineName, text: str, fragment: str
) -> None:
    with pytest.raises(InputError) as caught:
        ConnectionUri.parse(engine, text)
    assert fragment in caught.value.message
    assert "--secret-env" in caught.value.hint
    assert "hunter2" not in caught.value.message + caught.value.hint


@pytest.mark.parametrize(
    ("engine", "text"),
    [
        (M, ""),
        (M, "   "),
        (M, "db1.example.com:27017"),
        (M, "http://db1/"),
        (M, "redis://cache:6379"),
        (R, "mongodb://db1"),
        (M, "mongodb://"),
        (M, "mongodb://db1:notaport/"),
        (M, "mongodb://db1:70000/"),
        (M, "mongodb://db1,,db2/"),
        (M, "mongodb://[::1/"),
        (M, "mongodb+srv://a.example.com,b.example.com/"),
        (R, "redis://cache:6379/zero"),
        (M, "mongodb://db 1/"),
        (M, "mongodb://db1/\x00"),
    ],
)
def test_malformed_uris_are_refused(engine: EngineName, text: str) -> None:
    with pytest.raises(InputError) as caught:
        ConnectionUri.parse(engine, text)
    assert caught.value.hint  # every refusal says what to do
    assert "\n" not in caught.value.message


def test_redacted_hides_the_user_and_with_password_inserts_it_escaped() -> None:
    uri = ConnectionUri.parse(M, "mongodb://backup@db1.example.com:27017/?authSource=admin")
    assert uri.username == "backup"
    assert uri.redacted == "mongodb://***@db1.example.com:27017/?authSource=admin"
    assert (
        uri.with_password("p@ss:w/rd")
        == "mongodb://backup:p%40ss%3Aw%2Frd@db1.example.com:27017/?authSource=admin"
    )
