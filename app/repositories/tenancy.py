"""The statement that resolves a tenant, and the check of a caller's login session.

Both run on every authenticated request: built once, on the tables (Core) rather than the
mapped classes, which spares the ORM layer, statement construction and cache-key generation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Row, Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.tenancy import Caller
from app.models import AuthSession, Membership

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


def _session_params(caller: Caller) -> dict[str, int]:
    return {"session_id": caller.session_id, "user_id": caller.user_id}


# One entry per kind of credential: how its statement starts, and its parameters. Another kind
# (an organization API key: live while not revoked or expired, its role its own, no row for
# another organization) is one more entry; `tenant_query` and its callers stay as they are.
_KINDS: Mapping[type[Caller], tuple[Callable[..., Select[Any]], Callable[[Caller], dict[str, int]]]]
_KINDS = {Caller: (_session_tenant, _session_params)}

TenantQuery = Mapping[type[Caller], Select[Any]]


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
_LIVE_SESSION = select(_sessions.c.id).where(_caller_session, _sessions.c.revoked_at.is_(None))


async def read_tenant(
    executor: AsyncSession | AsyncConnection,
    query: TenantQuery,
    caller: Caller,
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
