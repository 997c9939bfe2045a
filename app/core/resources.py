"""Long-lived objects built once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.cache import Cache
from app.core.config import Settings
from app.core.rate_limit import RateLimiter
from app.core.redis import SharedRedis
from app.core.security import PasswordHasher, TokenCodec
from app.core.throttle import LoginThrottle

if TYPE_CHECKING:  # built in `app.main`; only its type is named here
    from app.services.api_keys import KeyUsage


@dataclass(slots=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    read_engine: AsyncEngine  # `engine`'s pool, set up for requests that only read
    session_factory: async_sessionmaker[AsyncSession]
    read_session_factory: async_sessionmaker[AsyncSession]
    tokens: TokenCodec
    passwords: PasswordHasher
    login_throttle: LoginThrottle
    cache: Cache
    redis: SharedRedis | None  # the one way to Redis, behind its circuit breaker
    rate_limiter: RateLimiter
    api_key_usage: KeyUsage  # records API keys' `last_used_at`, to the minute
