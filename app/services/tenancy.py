"""Resolving a request's tenant (see `app.core.tenancy`): the only place that decides 401/403."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.errors import InvalidToken, NotAMember
from app.core.tenancy import Caller, TenantContext
from app.repositories.tenancy import TENANT, TenantQuery, read_tenant, session_is_live


async def resolve_tenant(
    executor: AsyncSession | AsyncConnection,
    caller: Caller,
    organization_id: int,
    query: TenantQuery = TENANT,
    **params: Any,
) -> tuple[TenantContext, Row[Any]]:
    """The caller's context in the organization, and the row that proved it (with whatever
    `query`, a `tenant_query`, read beside it).

    Read on every request, so a removed member and a revoked session lose access at once. A
    missing organization and one the caller does not belong to answer the same 403."""
    row = await read_tenant(executor, query, caller, organization_id, **params)
    if row is None or not row.live:
        raise InvalidToken()
    if row.role is None:
        raise NotAMember()
    return TenantContext(caller.user_id, organization_id, row.role), row


async def authenticate(executor: AsyncSession | AsyncConnection, caller: Caller) -> None:
    """For requests without a tenant: the caller's login session must still be live."""
    if not await session_is_live(executor, caller):
        raise InvalidToken()
