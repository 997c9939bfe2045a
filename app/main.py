"""Application factory: settings, lifespan resources, middleware, error handlers, routers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig

from app.api import health
from app.api.docs import mount_docs
from app.api.openapi import install_openapi
from app.api.rate_limits import rate_limit_headers
from app.api.v1 import (
    analytics,
    api_keys,
    auth,
    companies,
    contact_merge,
    contacts,
    custom_fields,
    deals,
    events,
    imports,
    organizations,
    pipelines,
    tasks,
    trash,
    webhooks,
)
from app.core.cache import Cache, MemoryCache, NullCache, RedisCache
from app.core.config import Settings, get_settings
from app.core.handlers import register_exception_handlers
from app.core.logging import configure_logging
from app.core.middleware import RequestContextMiddleware
from app.core.rate_limit import RateLimiter
from app.core.redis import SharedRedis
from app.core.resources import Resources
from app.core.security import PasswordHasher, TokenCodec
from app.core.throttle import LoginThrottle, MemoryLoginThrottle, RedisLoginThrottle
from app.db.session import (
    create_engine,
    create_read_engine,
    create_read_session_factory,
    create_session_factory,
)
from app.jobs.worker import BackgroundWork
from app.services.api_keys import KeyUsage
from app.services.signing import token_signing_key

# `uvicorn app.main:app`: built on first access by the module's `__getattr__` below.
app: FastAPI


async def build_resources(settings: Settings) -> Resources:
    """Everything a process shares between requests. Reads (or, the first time, stores) the
    token signing key in the database when `SECRET_KEY` is not set."""
    engine = create_engine(settings)
    try:
        signing_key = await token_signing_key(settings, engine)
    except BaseException:
        await engine.dispose()
        raise
    read_engine = create_read_engine(engine)
    redis: SharedRedis | None = None
    if settings.REDIS_URL:
        redis = SharedRedis.from_settings(settings.REDIS_URL, settings)
    cache: Cache
    if settings.ANALYTICS_CACHE_TTL == 0:
        cache = NullCache()
    elif redis is not None:
        cache = RedisCache(redis, settings.ANALYTICS_CACHE_TTL)
    else:
        cache = MemoryCache(settings.ANALYTICS_CACHE_TTL)
    throttle: LoginThrottle
    if redis is not None:
        throttle = RedisLoginThrottle(
            redis, settings.LOGIN_THROTTLE_MAX_ATTEMPTS, settings.LOGIN_THROTTLE_WINDOW_SECONDS
        )
    else:
        throttle = MemoryLoginThrottle(
            settings.LOGIN_THROTTLE_MAX_ATTEMPTS, settings.LOGIN_THROTTLE_WINDOW_SECONDS
        )
    return Resources(
        settings=settings,
        engine=engine,
        read_engine=read_engine,
        session_factory=create_session_factory(engine),
        read_session_factory=create_read_session_factory(read_engine),
        tokens=TokenCodec(settings, key=signing_key),
        passwords=PasswordHasher(settings),
        login_throttle=throttle,
        cache=cache,
        redis=redis,
        rate_limiter=RateLimiter(redis, settings.RATE_LIMIT_SYNC_SECONDS),
        api_key_usage=KeyUsage(engine),
    )


_startup_frozen = False


def tune_garbage_collection() -> None:
    """Keep the cyclic garbage collector from pausing a busy worker.

    What exists at startup (modules, the app with its routes and schemas, the engine) lives
    as long as the process: frozen, it is left out of every collection. Under load, full
    collections walked all of it, pausing a worker for up to 73 ms several times a minute
    (most of the p99 latency). Requests free what they allocate by reference counting, so
    young collections mostly find nothing: they run every 10,000 allocations instead of 700.
    Once per process (test runs start many apps)."""
    global _startup_frozen
    if not _startup_frozen:
        gc.collect()
        gc.freeze()
        _startup_frozen = True
    gc.set_threshold(10_000, 10, 10)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    resources = await build_resources(settings)
    app.state.resources = resources
    tune_garbage_collection()
    worker = (
        BackgroundWork(resources.engine, resources.session_factory, settings)
        if settings.runs_background_worker
        else None
    )
    try:
        yield
    finally:
        if worker is not None:
            await worker.aclose()
        await resources.api_key_usage.drain()
        await resources.rate_limiter.aclose()
        await resources.engine.dispose()
        if resources.redis is not None:
            await resources.redis.aclose()


def _operation_id(route: APIRoute) -> str:
    return route.name


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    settings.warn_if_insecure()
    app = FastAPI(
        title=settings.APP_NAME,
        version="0.1.0",
        summary=(
            "A multi-tenant CRM API: organizations, companies, contacts, deals, pipelines, "
            "tasks and analytics."
        ),
        description=(
            "Authorize in Swagger UI with the **Authorize** button: paste an `access_token` "
            "from `POST /api/v1/auth/login` under HTTPBearer, and an organization id from "
            "`GET /api/v1/organizations/me` under OrganizationId: tenant endpoints need the "
            "`X-Organization-Id` header too."
        ),
        lifespan=lifespan,
        telemetry=None if settings.OPENTELEMETRY else _NO_TELEMETRY,
        # The documentation keeps this order whatever the order of the routes below.
        openapi_tags=[
            {"name": "auth", "description": "Accounts, tokens and sessions."},
            {"name": "organizations", "description": "Organizations and their members."},
            {"name": "contacts", "description": "People a team sells to."},
            {"name": "companies", "description": "Companies their contacts and deals belong to."},
            {"name": "deals", "description": "Deals through the pipeline, and their timeline."},
            {"name": "pipelines", "description": "Pipelines and their stages, per organization."},
            {"name": "tasks", "description": "To-dos attached to deals."},
            {
                "name": "custom fields",
                "description": "Fields an organization adds to its contacts, companies, deals.",
            },
            {"name": "analytics", "description": "Summary and funnel of an organization's deals."},
            {"name": "events", "description": "The change feed: every change, in commit order."},
            {"name": "webhooks", "description": "Signed deliveries of events to your endpoints."},
            {"name": "imports", "description": "Contacts and deals from CSV or JSON Lines files."},
            {"name": "health", "description": "Liveness, readiness and metrics."},
        ],
        openapi_url=f"{settings.API_V1_PREFIX}/openapi.json",
        # Operations are named after their functions (`list_deals`, `update_deal`), which
        # generated clients use for their methods and modules.
        generate_unique_id_function=_operation_id,
        servers=[{"url": "/", "description": "This server (the paths include `/api/v1`)."}],
        license_info={"name": "MIT", "identifier": "MIT"},
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    register_exception_handlers(app)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "X-Request-ID",
                "X-Cache",
                "Retry-After",
                "Idempotent-Replayed",
                "RateLimit-Policy",
                "RateLimit",
            ],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.MAX_REQUEST_BODY_BYTES,
        # The file plus the form around it (boundaries, the other fields).
        body_limits={f"{settings.API_V1_PREFIX}/imports": settings.IMPORT_MAX_BYTES + 65_536},
        response_headers=rate_limit_headers,
    )

    # Included straight into the app, not through a parent /api/v1 router: each nesting level
    # is one more router to match on every request. FastAPI tries routes in order and the
    # prefixes do not overlap: the busiest go first (but contact_merge, whose
    # `/contacts/duplicates` must come before `/contacts/{contact_id}`, shares the contacts').
    modules = (
        deals,
        analytics,
        contact_merge,
        contacts,
        companies,
        tasks,
        pipelines,
        custom_fields,
        events,
        webhooks,
        imports,
        trash,
        organizations,
        api_keys,
        auth,
    )
    for module in modules:
        app.include_router(module.router, prefix=settings.API_V1_PREFIX)
    app.include_router(health.router)
    mount_docs(app, f"{settings.API_V1_PREFIX}/openapi.json", settings.APP_NAME)
    install_openapi(app)
    return app


def __getattr__(name: str) -> Any:
    """`app.main:app`, the target `uvicorn app.main:app` (and most tools) look for: the app of
    `create_app()` with the settings from the environment, built on first access and then kept.

    Built lazily rather than at import, so importing this module (the CLI, the tests, Alembic)
    neither reads the settings nor configures logging. Building connects to nothing: the
    lifespan opens the engine and Redis."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
