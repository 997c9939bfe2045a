"""No write of a deal or contact can forget the read models: a transaction that changed one
through the ORM without moving its data version (`ReadModels.deal_written` /
`contacts_written`) is refused at commit, so cached totals and analytics can never be served
for data they do not describe. What a new kind of write (an import, the trash) does wrong is
then a failure in its first test, not a stale total in production."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Contact, Deal
from app.services import events
from app.services.read_models import DealFigures, ReadModelNotMoved, ReadModels
from tests.conftest import AppFactory
from tests.support import Api, User, create_contact, create_deal, engine_of, sessions_of

SUMMARY = "/analytics/deals/summary"


@pytest.fixture
async def api(make_api: AppFactory, database_url: str) -> Api:
    return await make_api(database_url)


async def title_of(api: Api, deal_id: int) -> str:
    async with engine_of(api).connect() as conn:
        title = await conn.scalar(select(Deal.title).where(Deal.id == deal_id))
    return str(title)


async def a_deal(api: Api) -> tuple[User, int]:
    owner = await api.register()
    deal = await create_deal(owner, await create_contact(owner), "Before", amount="10")
    deal_id: int = deal["id"]
    return owner, deal_id


Write = Callable[[AsyncSession, int], Awaitable[None]]


async def change_title(session: AsyncSession, deal_id: int) -> None:
    deal = await session.get_one(Deal, deal_id)
    deal.title = "After"
    await session.flush()


async def delete_deal(session: AsyncSession, deal_id: int) -> None:
    await session.delete(await session.get_one(Deal, deal_id))
    await session.flush()


async def bulk_update(session: AsyncSession, deal_id: int) -> None:
    await session.execute(update(Deal).where(Deal.id == deal_id).values(title="After"))


@pytest.mark.parametrize("write", [change_title, delete_deal, bulk_update])
async def test_a_deal_write_that_forgets_the_version_is_refused(api: Api, write: Write) -> None:
    owner, deal_id = await a_deal(api)
    async with sessions_of(api)() as session:
        events.backfill(session)  # the events' own guard is not the one under test
        await write(session, deal_id)
        with pytest.raises(ReadModelNotMoved, match="deals"):
            await session.commit()
        await session.rollback()
    assert await title_of(api, deal_id) == "Before"
    assert (await owner.get(f"/deals/{deal_id}")).status_code == 200


async def test_a_contact_write_that_forgets_the_version_is_refused(api: Api) -> None:
    owner = await api.register()
    async with sessions_of(api)() as session:
        events.backfill(session)
        session.add(
            Contact(
                organization_id=owner.organization_id,
                owner_id=owner.id,
                name="Sneaky",
                search_text="sneaky",
            )
        )
        await session.flush()
        with pytest.raises(ReadModelNotMoved, match="contacts"):
            await session.commit()
        await session.rollback()
    assert (await owner.get("/contacts")).json()["total"] == 0


async def test_a_write_that_moves_the_version_commits_and_is_seen(api: Api) -> None:
    owner, deal_id = await a_deal(api)
    await owner.get(SUMMARY)
    assert (await owner.get(SUMMARY)).headers["X-Cache"] == "HIT"
    cache = api.app.state.resources.cache
    async with sessions_of(api)() as session:
        events.backfill(session)
        deal = await session.get_one(Deal, deal_id)
        before = DealFigures.of(deal)
        deal.amount = Decimal("25")
        await session.flush()
        await ReadModels(session, owner.organization_id, cache).deal_written(
            before=before, after=deal
        )
        await session.commit()
    summary = await owner.get(SUMMARY)
    assert summary.headers["X-Cache"] == "MISS"
    assert summary.json()["total"]["total_amount"] == 25


async def test_assigning_the_current_values_is_no_write(api: Api) -> None:
    _, deal_id = await a_deal(api)
    async with sessions_of(api)() as session:
        deal = await session.get_one(Deal, deal_id)
        deal.title = deal.title
        deal.amount = Decimal("10.00")
        await session.flush()
        await session.commit()  # nothing changed: nothing to tell the read models
        contact = await session.scalar(select(Contact))
        assert contact is not None
        contact.name = contact.name
        await session.commit()
    assert await title_of(api, deal_id) == "Before"
