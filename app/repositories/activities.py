from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from app.models import Activity, ActivityType
from app.repositories.base import TenantRepository
from app.schemas.common import PageParams


class ActivityRepository(TenantRepository):
    async def add(
        self, deal_id: int, type_: ActivityType, payload: dict[str, Any], author_id: int | None
    ) -> Activity:
        activity = Activity(
            organization_id=self.organization_id,
            deal_id=deal_id,
            type=type_,
            payload=payload,
            author_id=author_id,
        )
        self.session.add(activity)
        await self.session.flush()
        return activity

    async def list_for_deal(self, deal_id: int, page: PageParams) -> tuple[Sequence[Activity], int]:
        query = (
            select(Activity)
            .where(Activity.organization_id == self.organization_id, Activity.deal_id == deal_id)
            .order_by(Activity.created_at.desc(), Activity.id.desc())
        )
        return await self.paginate(query, page)
