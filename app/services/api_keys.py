"""Organization API keys: issuing (shown once), listing, revoking, and recording their use.

How a key authenticates a request is tenancy's business (`app.core.tenancy`,
`app.repositories.tenancy`): a key is one more kind of caller, resolved by the same statement
and held to the same role table as a person, minus what only people may do
(`app.core.permissions.PEOPLE_ONLY`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.errors import ApiKeyNotFound, PermissionDenied
from app.core.permissions import Permission, is_above
from app.core.security import new_api_key
from app.core.tenancy import TenantContext
from app.db.types import utcnow
from app.models import ApiKey, Role
from app.repositories.api_keys import ApiKeyRepository
from app.repositories.tenancy import API_KEY_USE_PRECISION, record_api_key_use
from app.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.schemas.common import PageParams

logger = logging.getLogger(__name__)


class ApiKeyService:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.session = session
        self.ctx = ctx
        self.api_keys = ApiKeyRepository(session, ctx.organization_id)

    async def create(self, data: ApiKeyCreate) -> ApiKeyCreated:
        """Owner and admin (people, not keys) issue keys, with a role no higher than theirs."""
        self.ctx.require(Permission.MANAGE_API_KEYS)
        role = Role(data.role)
        if is_above(role, self.ctx.role):
            raise PermissionDenied(f"A key's role cannot be above your own ({self.ctx.role}).")
        issued = new_api_key(self.ctx.organization_id)
        api_key = await self.api_keys.add(
            ApiKey(
                creator_id=self.ctx.user_id,
                name=data.name,
                role=role,
                prefix=issued.prefix,
                key_hash=issued.key_hash,
                expires_at=data.expires_at,
            )
        )
        return ApiKeyCreated.model_validate(
            {**ApiKeyRead.model_validate(api_key).model_dump(), "key": issued.key}
        )

    async def list(self, page: PageParams) -> tuple[Sequence[ApiKey], int]:
        self.ctx.require(Permission.MANAGE_API_KEYS)
        return await self.api_keys.list(page)

    async def revoke(self, api_key_id: int) -> None:
        """At once: the key's next request is 401 (every request reads the key's row)."""
        self.ctx.require(Permission.MANAGE_API_KEYS)
        if not await self.api_keys.revoke(api_key_id, utcnow()):
            raise ApiKeyNotFound()


class KeyUsage:
    """Keeps each API key's `last_used_at` to the minute without a write per request.

    Every request made with a key reads the key's `last_used_at` anyway (in the statement that
    resolves its tenant). Only when that is over a minute old is it written, after the request,
    in a short transaction of its own (not the request's: a refused write must not undo it, and
    a read must not write): one conditional UPDATE that does nothing if another process got
    there first. A process has at most one such write per key in flight. So a key busy at
    thousands of requests a minute costs about one UPDATE a minute; the price is a
    `last_used_at` up to a minute behind."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pending: dict[int, asyncio.Task[None]] = {}

    def note(self, ctx: TenantContext, now: datetime | None = None) -> None:
        key_id = ctx.api_key_id
        if key_id is None or key_id in self._pending:
            return
        now = now or utcnow()
        if ctx.api_key_used_at is not None and ctx.api_key_used_at > now - API_KEY_USE_PRECISION:
            return
        task = asyncio.get_running_loop().create_task(self._record(key_id, now))
        self._pending[key_id] = task

    async def _record(self, key_id: int, now: datetime) -> None:
        try:
            await record_api_key_use(self.engine, key_id, now)
        except Exception:  # best effort: the next request a minute on tries again
            logger.warning("could not record the use of API key %s", key_id, exc_info=True)
        finally:
            self._pending.pop(key_id, None)

    async def drain(self) -> None:
        """Wait for the writes in flight (at shutdown, and in tests)."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)
