from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from app.models import ApiKey
from app.repositories.base import TenantRepository
from app.schemas.common import PageParams


class ApiKeyRepository(TenantRepository):
    async def add(self, api_key: ApiKey) -> ApiKey:
        api_key.organization_id = self.organization_id
        self.session.add(api_key)
        await self.session.flush()
        return api_key

    async def list(self, page: PageParams) -> tuple[Sequence[ApiKey], int]:
        """The organization's keys that still stand or expired, newest first (revoked ones
        are gone from the list; their rows stay for the timeline entries naming them)."""
        query = (
            select(ApiKey)
            .where(ApiKey.organization_id == self.organization_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        )
        return await self.paginate(query, page)

    async def revoke(self, api_key_id: int, at: datetime) -> bool:
        """Whether a standing key of this organization was revoked."""
        result = await self.session.execute(
            update(ApiKey)
            .where(
                ApiKey.organization_id == self.organization_id,
                ApiKey.id == api_key_id,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )
        return bool(getattr(result, "rowcount", 0))
