from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select

from app.models import Activity, ActivityType
from app.repositories.base import TenantRepository
from app.repositories.cursor import KeyOrder, Keyset, scroll
from app.schemas.common import PageParams

_NEWEST_FIRST = KeyOrder(Activity.created_at, Activity.id, descending=True)


class ActivityRepository(TenantRepository):
    async def add(
        self,
        deal_id: int,
        type_: ActivityType,
        payload: dict[str, Any],
        author_id: int | None,
        api_key_id: int | None = None,
    ) -> Activity:
        activity = Activity(
            organization_id=self.organization_id,
            deal_id=deal_id,
            type=type_,
            payload=payload,
            author_id=author_id,
            api_key_id=api_key_id,
        )
        self.session.add(activity)
        await self.session.flush()
        return activity

    async def list_for_deal(self, deal_id: int, page: PageParams) -> tuple[Sequence[Activity], int]:
        return await self.paginate(_NEWEST_FIRST.apply(self._of_deal(deal_id)), page)

    async def scroll_for_deal(
        self, deal_id: int, after: Keyset | None, limit: int
    ) -> tuple[Sequence[Activity], Keyset | None]:
        """Up to `limit` of the deal's activities after `after`, and where the next page starts."""
        return await scroll(self.session, self._of_deal(deal_id), _NEWEST_FIRST, after, limit)

    def _of_deal(self, deal_id: int) -> Select[Any]:
        return select(Activity).where(
            Activity.organization_id == self.organization_id, Activity.deal_id == deal_id
        )
