"""Typed settings, read from the environment and `.env`; nothing here connects anywhere."""

from __future__ import annotations

import logging
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Self

import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./mini_crm.db"
MIN_SECRET_KEY_LENGTH = 32
# Long but guessable keys ("aaaa...", a row of spaces) have very few distinct characters; any
# random key of 32+ characters (even hex) has far more.
MIN_SECRET_KEY_DISTINCT_CHARACTERS = 8
# Published (in this repository, in examples): refused as SECRET_KEY in every environment, since
# anyone could sign tokens with them. The first is the development key of earlier versions.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "development-only-secret-key-change-me-in-production",
        "change-me",
        "changeme",
        "secret",
        "your-secret-key",
        "replace-me-with-a-long-random-string-of-at-least-32-chars",
    }
)


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


class BackgroundWorker(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print the inputs, which include the
    # secret key and the database URL with its password, into the startup error and logs.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=True, hide_input_in_errors=True
    )

    APP_NAME: str = "Mini-CRM"
    API_V1_PREFIX: str = "/api/v1"
    ENVIRONMENT: Environment = Environment.LOCAL
    LOG_LEVEL: str = "INFO"
    SECRET_KEY: SecretStr | None = None

    DATABASE_URL: str = DEFAULT_DATABASE_URL
    DB_POOL_SIZE: int = Field(default=10, ge=1)
    DB_MAX_OVERFLOW: int = Field(default=0, ge=0)
    DB_POOL_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    SQLITE_BUSY_TIMEOUT_MS: int = Field(default=30_000, ge=0)

    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=30, ge=1)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(default=7, ge=1)

    LOGIN_THROTTLE_MAX_ATTEMPTS: int = Field(default=10, ge=1)
    LOGIN_THROTTLE_WINDOW_SECONDS: int = Field(default=900, ge=1)

    # Requests per minute of each credential and of each organization (app/core/rate_limit.py);
    # 0 turns that limit off. Processes share their counts through Redis every
    # RATE_LIMIT_SYNC_SECONDS.
    RATE_LIMIT_PER_MINUTE: int = Field(default=600, ge=0)
    RATE_LIMIT_ORGANIZATION_PER_MINUTE: int = Field(default=6000, ge=0)
    RATE_LIMIT_SYNC_SECONDS: float = Field(default=0.05, gt=0, le=10)

    # Argon2id cost; the defaults are OWASP's minimum recommendation (19 MiB, t=2, p=1).
    ARGON2_MEMORY_COST_KIB: int = Field(default=19_456, ge=8)
    ARGON2_TIME_COST: int = Field(default=2, ge=1)
    ARGON2_PARALLELISM: int = Field(default=1, ge=1)

    REDIS_URL: str | None = None
    # The longest any one Redis call may take (connect included) before its caller falls
    # back; a local Redis answers in well under a millisecond.
    REDIS_TIMEOUT_SECONDS: float = Field(default=0.02, gt=0)
    # After this many failed Redis calls in a row nothing waits on Redis for
    # REDIS_BREAKER_RESET_SECONDS; then one call probes it (app/core/redis.py).
    REDIS_BREAKER_FAILURES: int = Field(default=3, ge=1)
    REDIS_BREAKER_RESET_SECONDS: float = Field(default=5, gt=0)
    ANALYTICS_CACHE_TTL: int = Field(default=60, ge=0)
    # How long the answer to a POST with an Idempotency-Key is kept for its retries.
    IDEMPOTENCY_TTL_HOURS: int = Field(default=24, ge=1)
    # Events older than this are deleted by `minicrm prune`; a feed cursor from before the
    # pruned ones answers 410 CURSOR_EXPIRED.
    EVENTS_RETENTION_DAYS: int = Field(default=30, ge=1)
    # Rows an export (`GET /deals/export` ...) reads per statement: its memory is about one
    # batch, whatever the export's size.
    EXPORT_BATCH_ROWS: int = Field(default=5_000, ge=1, le=100_000)
    # Deleted contacts, deals and tasks stay in the trash (restorable) this long; then the
    # worker loop and `minicrm prune` delete them for good. 0: at the next purge.
    TRASH_RETENTION_DAYS: int = Field(default=30, ge=0)
    # How often, at most, each worker process (or the API's background work) purges the trash.
    TRASH_PURGE_INTERVAL_SECONDS: float = Field(default=60, gt=0)
    # How often each worker process compares the custom fields defined with their indexes
    # on PostgreSQL, and makes or drops those that differ (app/jobs/custom_field_indexes.py).
    CUSTOM_FIELD_INDEX_INTERVAL_SECONDS: float = Field(default=5, gt=0)
    # At most this many per-key indexes in all (those of the keys most organizations define
    # first): each costs every write to its table a check, whichever organization writes.
    CUSTOM_FIELD_INDEXES_MAX: int = Field(default=100, ge=0)
    # Webhooks (app/jobs/webhooks.py). Private, loopback and link-local receivers (and plain
    # http) are refused unless this is on: for tests and local use only.
    WEBHOOK_ALLOW_PRIVATE_URLS: bool = False
    WEBHOOK_TIMEOUT_SECONDS: float = Field(default=10, gt=0, le=60)
    # Seconds to wait before each retry of a failed delivery (jitter adds up to 10 %); after
    # the last one fails, the endpoint is disabled. Published in the README.
    WEBHOOK_RETRY_SCHEDULE_SECONDS: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0]
    )
    # How long a worker owns an endpoint it claimed (renewed with every write, and before a
    # request it might not outlast): a worker killed mid-delivery leaves the endpoint to
    # another after this.
    WEBHOOK_LEASE_SECONDS: float = Field(default=60, gt=0)
    # How often an idle worker looks for work.
    WORKER_POLL_SECONDS: float = Field(default=0.2, gt=0)
    # Background work (webhook delivery) inside the API process: `auto` runs it on SQLite
    # only (PostgreSQL deployments run `minicrm worker`).
    BACKGROUND_WORKER: BackgroundWorker = BackgroundWorker.AUTO

    # A pooled PostgreSQL connection idle at least this long is pinged before use.
    DB_PING_AFTER_IDLE_SECONDS: float = Field(default=30, ge=0)

    # FastAPI's own OpenTelemetry spans, metrics and logs, sent to the global providers (for
    # example under `opentelemetry-instrument`). Off: the service has Prometheus metrics and
    # JSON logs, and with it on FastAPI looks the providers up on every request.
    OPENTELEMETRY: bool = False

    # How long the server keeps an idle HTTP keep-alive connection open. Longer than what
    # clients and load balancers keep theirs (commonly 60 s): the side that closes first must
    # be the client's, or a request sent just as the server closes is lost.
    KEEPALIVE_TIMEOUT_SECONDS: int = Field(default=75, ge=1)

    # Region whose national phone numbers (without `+country`) are read as E.164 when looking
    # for duplicate contacts, e.g. `US` or `DE` (see `app.core.contact_keys`); none by default.
    DEFAULT_PHONE_REGION: str | None = None

    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    MAX_REQUEST_BODY_BYTES: int = Field(default=1_048_576, ge=1024)
    # Imports (app/jobs/imports.py): the largest file `POST /imports` takes (its request body
    # may be this much larger than MAX_REQUEST_BODY_BYTES), rows per transaction, and how long
    # a worker owns a job it claimed (renewed with every batch): a worker killed mid-import
    # leaves the job to another after this.
    IMPORT_MAX_BYTES: int = Field(default=50 * 1_048_576, ge=1024)
    IMPORT_BATCH_SIZE: int = Field(default=1000, ge=1, le=10_000)
    IMPORT_LEASE_SECONDS: float = Field(default=60, gt=0)

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("WEBHOOK_RETRY_SCHEDULE_SECONDS", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("WEBHOOK_RETRY_SCHEDULE_SECONDS")
    @classmethod
    def _schedule_not_empty(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("give at least one delay, none negative")
        return value

    @field_validator("DEFAULT_PHONE_REGION", mode="before")
    @classmethod
    def _known_region(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper() or None
        if value is not None and value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("give a region code phone numbers know, such as US, GB or DE")
        return value

    @field_validator("API_V1_PREFIX")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        value = "/" + value.strip("/")
        return "" if value == "/" else value

    @field_validator("REDIS_URL", "SECRET_KEY", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `SECRET_KEY=` (as in .env.example) means "not set": never sign with an empty key.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_published_or_weak_secret(self) -> Self:
        secret = self.SECRET_KEY.get_secret_value().strip() if self.SECRET_KEY else ""
        if self.ENVIRONMENT is Environment.PRODUCTION and (
            len(secret) < MIN_SECRET_KEY_LENGTH
            or secret.lower() in _PLACEHOLDER_SECRETS
            or len(set(secret)) < MIN_SECRET_KEY_DISTINCT_CHARACTERS
        ):
            raise ValueError(
                "SECRET_KEY must be set to a random string of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters when ENVIRONMENT=production "
                '(generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        if secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError(
                "SECRET_KEY is a published placeholder: anyone could sign tokens with it. "
                "Leave SECRET_KEY unset (a random key is then generated and kept in the "
                'database) or set a random one (python -c "import secrets; '
                'print(secrets.token_urlsafe(48))")'
            )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> Self:
        # A lease running out while its worker still waits for the receiver would let a
        # second worker send to the same endpoint at the same time.
        if self.WEBHOOK_LEASE_SECONDS <= self.WEBHOOK_TIMEOUT_SECONDS:
            raise ValueError("WEBHOOK_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS")
        return self

    @property
    def secret_key(self) -> str | None:
        """The configured signing key; None: sign with the key stored in the database (see
        `app.services.signing`), generated by the first process that started."""
        return None if self.SECRET_KEY is None else self.SECRET_KEY.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")

    @property
    def runs_background_worker(self) -> bool:
        """Whether the API process runs the background work itself (`BACKGROUND_WORKER`)."""
        if self.BACKGROUND_WORKER is BackgroundWorker.AUTO:
            return self.is_sqlite
        return self.BACKGROUND_WORKER is BackgroundWorker.ON

    def warn_if_insecure(self) -> None:
        # Production refuses a weak key outright (above); elsewhere it is the user's choice,
        # but a visible one. An unset key is safe: a random one is generated and stored.
        secret = self.SECRET_KEY.get_secret_value().strip() if self.SECRET_KEY else None
        if secret is not None and len(secret) < MIN_SECRET_KEY_LENGTH:
            logger.warning(
                "SECRET_KEY is shorter than %d characters: tokens signed with it can be forged "
                "by guessing it. Set a random one, or unset it to use a generated key.",
                MIN_SECRET_KEY_LENGTH,
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
