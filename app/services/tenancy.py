"""Resolving a request's tenant (see `app.core.tenancy`): the only place that decides 401/403."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.errors import ApiKeyNotAllowed, InvalidToken, NotAMember
from app.core.permissions import capped
from app.core.tenancy import AnyCaller, ApiKeyCaller, TenantContext
from app.repositories.tenancy import TENANT, TenantQuery, read_tenant, session_is_live


async def resolve_tenant(
    executor: AsyncSession | AsyncConnection,
    caller: AnyCaller,
    organization_id: int,
    query: TenantQuery = TENANT,
    **params: Any,
) -> tuple[TenantContext, Row[Any]]:
    """The caller's context in the organization, and the row that proved it (with whatever
    `query`, a `tenant_query`, read beside it).

    Read on every request, so a removed member, a revoked session and a revoked key lose
    access at once. A missing organization and one the caller does not belong to answer the
    same 403; so does, for an API key, any organization but its own."""
    row = await read_tenant(executor, query, caller, organization_id, **params)
    if row is None or not row.live:
        raise InvalidToken()
    if row.role is None:
        raise NotAMember()
    if isinstance(caller, ApiKeyCaller):
        ctx = TenantContext(
            row.api_key_creator_id,
            organization_id,
            # Never above what its creator may do today: demoting them demotes their keys.
            capped(row.role, row.api_key_creator_role),
            api_key_id=row.api_key_id,
            api_key_used_at=row.api_key_used_at,
        )
    else:
        ctx = TenantContext(caller.user_id, organization_id, row.role)
    return ctx, row


async def authenticate(executor: AsyncSession | AsyncConnection, caller: AnyCaller) -> int:
    """For requests without a tenant (a person's own account and organizations): the caller's
    login session must still be live; their user id. An API key acts only in its organization:
    a live one is refused here (403), any other is 401."""
    if isinstance(caller, ApiKeyCaller):
        await resolve_tenant(executor, caller, caller.organization_id)
        raise ApiKeyNotAllowed()
    if not await session_is_live(executor, caller):
        raise InvalidToken()
    return caller.user_id
