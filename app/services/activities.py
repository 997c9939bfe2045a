from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import DealNotFound
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.models import Activity, ActivityType
from app.repositories.activities import ActivityRepository
from app.repositories.cursor import Keyset
from app.repositories.deals import DealRepository
from app.schemas.activity import ActivityCreate, ActivityRead
from app.schemas.common import PageParams
from app.schemas.event import EventType
from app.services import events


class ActivityService:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.session = session
        self.ctx = ctx
        self.deals = DealRepository(session, ctx.organization_id)
        self.activities = ActivityRepository(session, ctx.organization_id)

    async def list_for_deal(self, deal_id: int, page: PageParams) -> tuple[Sequence[Activity], int]:
        await self._ensure_deal(deal_id)
        return await self.activities.list_for_deal(deal_id, page)

    async def scroll_for_deal(
        self, deal_id: int, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Activity], Keyset | None]:
        await self._ensure_deal(deal_id)
        return await self.activities.scroll_for_deal(deal_id, after, limit)

    async def comment(self, deal_id: int, data: ActivityCreate) -> Activity:
        self.ctx.require(Permission.COMMENT)
        await self._ensure_deal(deal_id)
        comment = await self.activities.add(
            deal_id,
            ActivityType.COMMENT,
            {"text": data.payload.text},
            self.ctx.user_id,
            self.ctx.api_key_id,
        )
        events.record(
            self.session, self.ctx, EventType.COMMENT_CREATED, ActivityRead.model_validate(comment)
        )
        return comment

    async def _ensure_deal(self, deal_id: int) -> None:
        if await self.deals.get(deal_id) is None:
            raise DealNotFound()
