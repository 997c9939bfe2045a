"""The statement that resolves a tenant, and the check of a caller's login session.

Both run on every authenticated request: built once, on the tables (Core) rather than the
mapped classes, which spares the ORM layer, statement construction and cache-key generation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.core.tenancy import AnyCaller, ApiKeyCaller, Caller
from app.models import ApiKey, AuthSession, Membership

# The organization the request acts in. A statement extending `tenant_query` joins its tables
# on this parameter (not on a column of the credential's tables), so one extension serves every
# kind of credential.
ORGANIZATION_ID: BindParameter[int] = bindparam("organization_id")

_sessions = AuthSession.__table__
_memberships = Membership.__table__
_caller_session = and_(
    _sessions.c.id == bindparam("session_id"), _sessions.c.user_id == bindparam("user_id")
)


def _session_tenant(*columns: ColumnElement[Any]) -> Select[Any]:
    """A user in a login session: live while the session is not revoked (a deleted account's
    sessions go with it); their role is their membership's."""
    return (
        select(_sessions.c.revoked_at.is_(None).label("live"), _memberships.c.role, *columns)
        .select_from(
            _sessions.outerjoin(
                _memberships,
                and_(
                    _memberships.c.user_id == _sessions.c.user_id,
                    _memberships.c.organization_id == ORGANIZATION_ID,
                ),
            )
        )
        .where(_caller_session)
    )


def _session_params(caller: Any) -> dict[str, Any]:
    return {"session_id": caller.session_id, "user_id": caller.user_id}


_keys = ApiKey.__table__
_creators = _memberships.alias("creator_memberships")
# The organization the key names (`ApiKeyCaller.organization_id`), which its row must belong
# to: as a parameter, the creator's membership is one primary-key lookup, whatever the
# planner thinks of the tables' sizes.
_KEY_ORGANIZATION_ID: BindParameter[int] = bindparam("key_organization_id")


def _api_key_tenant(*columns: ColumnElement[Any]) -> Select[Any]:
    """An API key: live while not revoked, not expired and its creator still a member of the
    key's organization; a role only in that organization (any other: NULL, not a member).
    Also the key's id, its creator (who the request acts as) and their role (the key acts at
    most with it: `app.services.tenancy`), and when the key's use was last recorded."""
    # The database's clock: a parameter would cost every request a timestamp to build and
    # encode. (On SQLite, `CURRENT_TIMESTAMP` and the stored UTC times compare as text, to
    # the second.)
    live = and_(
        _keys.c.revoked_at.is_(None),
        or_(_keys.c.expires_at.is_(None), _keys.c.expires_at > func.now()),
        _creators.c.role.is_not(None),
    )
    return (
        select(
            live.label("live"),
            case((_keys.c.organization_id == ORGANIZATION_ID, _keys.c.role)).label("role"),
            _keys.c.id.label("api_key_id"),
            _keys.c.creator_id.label("api_key_creator_id"),
            _creators.c.role.label("api_key_creator_role"),
            _keys.c.last_used_at.label("api_key_used_at"),
            *columns,
        )
        .select_from(
            _keys.outerjoin(
                _creators,
                and_(
                    _creators.c.organization_id == _KEY_ORGANIZATION_ID,
                    _creators.c.user_id == _keys.c.creator_id,
                ),
            )
        )
        .where(
            _keys.c.key_hash == bindparam("key_hash"),
            _keys.c.organization_id == _KEY_ORGANIZATION_ID,
        )
    )


def _api_key_params(caller: Any) -> dict[str, Any]:
    return {"key_hash": caller.key_hash, "key_organization_id": caller.organization_id}


# One entry per kind of caller: how its statement starts, and its parameters. `tenant_query`
# and its callers are the same for every kind.
_KINDS: Mapping[type[AnyCaller], tuple[Callable[..., Select[Any]], Callable[[Any], dict[str, Any]]]]
_KINDS = {
    Caller: (_session_tenant, _session_params),
    ApiKeyCaller: (_api_key_tenant, _api_key_params),
}

TenantQuery = Mapping[type[AnyCaller], Select[Any]]


def tenant_query(
    *columns: ColumnElement[Any], extend: Callable[[Select[Any]], Select[Any]] | None = None
) -> TenantQuery:
    """`live, role, *columns` for a caller in an organization, for each kind of credential.

    No row, or `live` false: the caller's credential no longer stands. `role` NULL: not a
    member of the organization (or there is no such organization). `columns` and `extend` add
    what is read on the same round trip: `tenant_query(*t.c, extend=lambda q: q.outerjoin(t,
    t.c.organization_id == ORGANIZATION_ID ...))`, so it is read only from that organization."""
    queries = {}
    for kind, (base, _) in _KINDS.items():
        query = base(*columns)
        queries[kind] = extend(query) if extend is not None else query
    return queries


TENANT = tenant_query()
# How stale an API key's `last_used_at` may be: it is written at most this often.
API_KEY_USE_PRECISION = timedelta(minutes=1)
_LIVE_SESSION = select(_sessions.c.id).where(_caller_session, _sessions.c.revoked_at.is_(None))


async def read_tenant(
    executor: AsyncSession | AsyncConnection,
    query: TenantQuery,
    caller: AnyCaller,
    organization_id: int,
    **params: Any,
) -> Row[Any] | None:
    """One row of `query` for this caller, with the query's own extra `params`."""
    kind = type(caller)
    caller_params = _KINDS[kind][1](caller)
    result = await executor.execute(
        query[kind], {**caller_params, "organization_id": organization_id, **params}
    )
    row: Row[Any] | None = result.first()
    return row


async def session_is_live(executor: AsyncSession | AsyncConnection, caller: Caller) -> bool:
    result = await executor.execute(_LIVE_SESSION, _session_params(caller))
    return result.first() is not None


async def record_api_key_use(engine: AsyncEngine, api_key_id: int, at: datetime) -> bool:
    """Set the key's `last_used_at` to `at` unless it is already within a minute of it (another
    process got there first): one conditional UPDATE, its own short transaction."""
    statement = (
        update(ApiKey)
        .where(
            ApiKey.id == api_key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at - API_KEY_USE_PRECISION),
        )
        .values(last_used_at=at)
    )
    async with engine.begin() as connection:
        result = await connection.execute(statement)
    return bool(result.rowcount)
