"""Settings: safe defaults for a fresh clone, and a production that refuses a weak SECRET_KEY."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from app.core.config import Environment, Settings

# The signing key of earlier versions, published in their source.
OLD_DEVELOPMENT_KEY = "development-only-secret-key-change-me-in-production"


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "API_V1_PREFIX"):
        monkeypatch.delenv(name, raising=False)


WEAK_KEYS = {
    "missing": None,
    "empty": "",
    "blank": " " * 48,
    "short": "x7Kp2mQ9vR4tY8wZ1aB3cD5eF6gH0j",  # 31 characters
    "development-key": OLD_DEVELOPMENT_KEY,
    "placeholder": "replace-me-with-a-long-random-string-of-at-least-32-chars",
    "placeholder-upper-case": OLD_DEVELOPMENT_KEY.upper(),
    "repeated-character": "a" * 64,
    "short-padded-with-spaces": "   x7Kp2mQ9vR4tY8wZ1aB3cD5eF6gH0j   ",
}


@pytest.mark.parametrize("key", WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_production_refuses_a_weak_secret_key(key: str | None) -> None:
    values: dict[str, object] = {"ENVIRONMENT": "production"}
    if key is not None:
        values["SECRET_KEY"] = key

    with pytest.raises(ValidationError) as raised:
        settings(**values)

    message = str(raised.value)
    assert "SECRET_KEY" in message
    assert "production" in message
    assert "32 characters" in message


@pytest.mark.parametrize("last", ["SECRET_KEY", "DATABASE_URL"])
def test_production_refusal_does_not_print_the_secrets(last: str) -> None:
    """The startup error ends up in logs: it must not show the key or the database password."""
    values = {
        "SECRET_KEY": "leaky-secret-x7Kp2m",
        "DATABASE_URL": "postgresql+asyncpg://crm:db-pa55word@db/c",
    }
    ordered = {"ENVIRONMENT": "production"} | {k: v for k, v in values.items() if k != last}
    ordered[last] = values[last]  # pydantic abbreviates long inputs but keeps their end

    with pytest.raises(ValidationError) as raised:
        settings(**ordered)

    message = str(raised.value)
    assert "SECRET_KEY" in message
    assert "leaky-secret" not in message
    assert "pa55word" not in message


def test_production_refuses_a_weak_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", "change-me")

    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None)


@pytest.mark.parametrize(
    "key",
    [secrets.token_urlsafe(36), secrets.token_hex(16), "x7Kp2mQ9vR4tY8wZ1aB3cD5eF6gH0jLn"],
    ids=["urlsafe-48", "hex-32", "exactly-32"],
)
def test_production_accepts_a_strong_random_key(key: str) -> None:
    loaded = settings(ENVIRONMENT="production", SECRET_KEY=key)

    assert loaded.ENVIRONMENT is Environment.PRODUCTION
    assert loaded.secret_key == key
    assert key not in repr(loaded)


@pytest.mark.parametrize("environment", ["local", "test"])
@pytest.mark.parametrize("key", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_outside_production_an_unset_key_means_the_generated_one(
    environment: str, key: str | None
) -> None:
    """No constant stands in: the key is generated and stored in the database (see
    tests/test_signing_key.py)."""
    values: dict[str, object] = {"ENVIRONMENT": environment}
    if key is not None:
        values["SECRET_KEY"] = key

    loaded = settings(**values)

    assert loaded.SECRET_KEY is None
    assert loaded.secret_key is None


@pytest.mark.parametrize("environment", ["local", "test"])
@pytest.mark.parametrize(
    "key", [OLD_DEVELOPMENT_KEY, "change-me", "Secret"], ids=["old-development-key", "a", "b"]
)
def test_a_published_placeholder_key_is_refused_in_every_environment(
    environment: str, key: str
) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY is a published placeholder"):
        settings(ENVIRONMENT=environment, SECRET_KEY=key)


def test_local_is_the_default_environment_and_an_unset_key_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded = settings()

    with caplog.at_level("WARNING", logger="app.core.config"):
        loaded.warn_if_insecure()

    assert loaded.ENVIRONMENT is Environment.LOCAL
    assert caplog.text == ""


def test_a_short_key_outside_production_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    loaded = settings(SECRET_KEY="short-but-mine")

    with caplog.at_level("WARNING", logger="app.core.config"):
        loaded.warn_if_insecure()

    assert "SECRET_KEY is shorter than 32 characters" in caplog.text


def test_defaults() -> None:
    loaded = settings()

    assert loaded.DATABASE_URL == "sqlite+aiosqlite:///./mini_crm.db"
    assert loaded.is_sqlite
    assert loaded.API_V1_PREFIX == "/api/v1"
    assert loaded.ACCESS_TOKEN_EXPIRE_MINUTES == 30
    assert loaded.REFRESH_TOKEN_EXPIRE_DAYS == 7
    assert loaded.LOGIN_THROTTLE_MAX_ATTEMPTS == 10
    assert loaded.LOGIN_THROTTLE_WINDOW_SECONDS == 15 * 60
    assert loaded.REDIS_URL is None


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://crm@db:5432/crm")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("API_V1_PREFIX", "/api/v2/")

    loaded = Settings(_env_file=None)

    assert loaded.DATABASE_URL == "postgresql+asyncpg://crm@db:5432/crm"
    assert not loaded.is_sqlite
    assert loaded.REDIS_URL is None
    assert loaded.API_V1_PREFIX == "/api/v2"


def test_webhook_settings_are_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_SECONDS", "1, 60,3600")
    assert settings().WEBHOOK_RETRY_SCHEDULE_SECONDS == [1, 60, 3600]
    # Background work in the API process: by default on SQLite only.
    postgres = "postgresql+asyncpg://u@h/db"
    assert settings(DATABASE_URL="sqlite+aiosqlite:///x.db").runs_background_worker is True
    assert settings(DATABASE_URL=postgres).runs_background_worker is False
    assert settings(DATABASE_URL=postgres, BACKGROUND_WORKER="on").runs_background_worker is True
    with pytest.raises(ValidationError, match="WEBHOOK_LEASE_SECONDS"):
        settings(WEBHOOK_LEASE_SECONDS=5)
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE_SECONDS", "")
    with pytest.raises(ValidationError, match="at least one delay"):
        settings()
