"""Webhook endpoints and deliveries: the tenant's CRUD (`WebhookRepository`), and the
worker's claims on endpoints and its outbox reads (module functions, across organizations:
a worker serves them all)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event, WebhookDelivery, WebhookEndpoint
from app.repositories.base import TenantRepository
from app.schemas.common import PageParams
from app.schemas.event import EventType

events = cast(Table, Event.__table__)
deliveries = cast(Table, WebhookDelivery.__table__)
endpoints = cast(Table, WebhookEndpoint.__table__)

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


class WebhookRepository(TenantRepository):
    async def add(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        endpoint.organization_id = self.organization_id
        self.session.add(endpoint)
        await self.session.flush()
        return endpoint

    async def get(self, endpoint_id: int) -> WebhookEndpoint | None:
        return cast(
            WebhookEndpoint | None,
            await self.session.scalar(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.organization_id == self.organization_id,
                    WebhookEndpoint.id == endpoint_id,
                )
            ),
        )

    async def list(self, page: PageParams) -> tuple[Sequence[WebhookEndpoint], int]:
        query = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.organization_id == self.organization_id)
            .order_by(WebhookEndpoint.id.desc())
        )
        return await self.paginate(query, page)

    async def delete(self, endpoint: WebhookEndpoint) -> None:
        await self.session.delete(endpoint)
        await self.session.flush()

    async def head_event_id(self) -> int:
        """The organization's newest event id (0: none): every event committed later has a
        higher one (`app.services.events`), so an endpoint starting here misses nothing."""
        head = await self.session.scalar(
            select(func.max(events.c.id)).where(events.c.organization_id == self.organization_id)
        )
        return int(head or 0)

    async def list_deliveries(
        self, endpoint_id: int, page: PageParams
    ) -> tuple[Sequence[WebhookDelivery], int]:
        query = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.organization_id == self.organization_id,
                WebhookDelivery.endpoint_id == endpoint_id,
            )
            .order_by(WebhookDelivery.event_id.desc(), WebhookDelivery.id.desc())
        )
        return await self.paginate(query, page)

    async def get_delivery(self, endpoint_id: int, delivery_id: int) -> WebhookDelivery | None:
        return cast(
            WebhookDelivery | None,
            await self.session.scalar(
                select(WebhookDelivery).where(
                    WebhookDelivery.organization_id == self.organization_id,
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.id == delivery_id,
                )
            ),
        )


# --- the worker's side --------------------------------------------------------------------------


def _has_work(now: datetime) -> Any:
    """An endpoint whose first pending delivery is due, or whose organization has events
    after its position."""
    newer_event = exists().where(
        events.c.organization_id == endpoints.c.organization_id,
        events.c.id > endpoints.c.position,
    )
    return or_(endpoints.c.next_attempt_at <= now, newer_event)


def _lease_free(now: datetime) -> Any:
    return or_(endpoints.c.claimed_until.is_(None), endpoints.c.claimed_until < now)


async def claim(
    session: AsyncSession, worker: str, now: datetime, until: datetime
) -> Row[Any] | None:
    """Lease one enabled endpoint that has work to `worker` until `until`, the one served
    longest ago first; None if there is none. Committed by the caller at once.

    On PostgreSQL the candidate row is locked `FOR UPDATE SKIP LOCKED`, so concurrent
    workers pass over each other's candidates instead of queueing on them; the conditional
    UPDATE is what makes the lease exclusive on every database (SQLite serialises writers)."""
    candidate = (
        select(endpoints.c.id)
        .where(endpoints.c.enabled.is_(True), _lease_free(now), _has_work(now))
        .order_by(endpoints.c.claimed_at, endpoints.c.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True, of=endpoints)
    endpoint_id = await session.scalar(candidate)
    if endpoint_id is None:
        return None
    result = await session.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id, endpoints.c.enabled.is_(True), _lease_free(now))
        # Due until given back (`release` says when next): a worker that dies holding the
        # lease leaves the endpoint to be claimed again once the lease runs out.
        .values(claimed_by=worker, claimed_until=until, claimed_at=now, next_attempt_at=now)
        .returning(
            endpoints.c.id,
            endpoints.c.organization_id,
            endpoints.c.url,
            endpoints.c.secret,
            endpoints.c.event_types,
            endpoints.c.position,
        )
    )
    return result.first()


async def renew(session: AsyncSession, endpoint_id: int, worker: str, until: datetime) -> bool:
    """Extend `worker`'s lease; False if it lost it (expired and claimed by another)."""
    result = await session.execute(
        update(endpoints)
        .where(
            endpoints.c.id == endpoint_id,
            endpoints.c.claimed_by == worker,
            endpoints.c.enabled.is_(True),
        )
        .values(claimed_until=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def release(session: AsyncSession, endpoint_id: int, worker: str) -> None:
    """Give the endpoint back, due again when its first pending delivery is."""
    due = (
        select(deliveries.c.next_attempt_at)
        .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == PENDING)
        .order_by(deliveries.c.event_id)
        .limit(1)
        .scalar_subquery()
    )
    await session.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id, endpoints.c.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None, next_attempt_at=due)
    )


async def events_after(
    session: AsyncSession, organization_id: int, after: int, limit: int
) -> Sequence[Row[Any]]:
    """The organization's events after `after`, oldest first: id, type, and for a ping, the
    data (which names the one endpoint it is for)."""
    result = (
        await session.execute(
            select(
                events.c.id,
                events.c.type,
                case((events.c.type == EventType.PING.value, events.c.data)).label("data"),
            )
            .where(events.c.organization_id == organization_id, events.c.id > after)
            .order_by(events.c.id)
            .limit(limit)
        )
    ).all()
    return cast(Sequence[Row[Any]], result)


async def add_deliveries(
    session: AsyncSession,
    organization_id: int,
    endpoint_id: int,
    matched: Sequence[tuple[int, str]],
    position: int,
    now: datetime,
) -> None:
    """Deliveries of the `matched` events (id, type) to the endpoint, and its new position,
    in one transaction: an event is turned into a delivery once."""
    if matched:
        await session.execute(
            insert(deliveries),
            [
                {
                    "organization_id": organization_id,
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": type_,
                    "status": PENDING,
                    "attempts": 0,
                    "failures": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for event_id, type_ in matched
            ],
        )
    await session.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id, endpoints.c.position < position)
        .values(position=position)
    )


async def pending_head(session: AsyncSession, endpoint_id: int, limit: int) -> Sequence[Row[Any]]:
    """The endpoint's oldest pending deliveries, oldest first (nothing after the first goes
    before it does), each with its event as `app.services.events.event_json` reads one (`id`
    is the event's, the delivery's is `delivery_id`; `type` None: the event was pruned before
    it could be sent)."""
    result = await session.execute(
        select(
            deliveries.c.id.label("delivery_id"),
            deliveries.c.event_id.label("id"),
            deliveries.c.failures,
            deliveries.c.next_attempt_at,
            events.c.type,
            events.c.occurred_at,
            events.c.actor_type,
            events.c.actor_id,
            events.c.data,
        )
        .select_from(
            deliveries.outerjoin(
                events,
                (events.c.organization_id == deliveries.c.organization_id)
                & (events.c.id == deliveries.c.event_id),
            )
        )
        .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == PENDING)
        .order_by(deliveries.c.event_id)
        .limit(limit)
    )
    return cast(Sequence[Row[Any]], result.all())


async def record_attempt(session: AsyncSession, delivery_id: int, **values: Any) -> None:
    await session.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id)
        .values(attempts=deliveries.c.attempts + 1, **values)
    )


# What a success writes, one row per delivery (`record_successes`): built once.
_RECORD_SUCCESS = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(
        status=SUCCEEDED,
        next_attempt_at=None,
        attempts=deliveries.c.attempts + 1,
        last_attempt_at=bindparam("at"),
        last_response_status=bindparam("response_status"),
        last_response_body=bindparam("response_body"),
        last_error=None,
        duration_ms=bindparam("duration"),
    )
)


async def record_successes(session: AsyncSession, successes: Sequence[dict[str, Any]]) -> None:
    """Mark deliveries succeeded, many in one statement (executemany): each a dict of
    `delivery_id`, `at`, `response_status`, `response_body`, `duration`."""
    if successes:
        await session.execute(_RECORD_SUCCESS, list(successes))


async def disable(session: AsyncSession, endpoint_id: int, reason: str, now: datetime) -> None:
    await session.execute(
        update(endpoints)
        .where(endpoints.c.id == endpoint_id)
        .values(
            enabled=False,
            disabled_reason=reason,
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
    )


async def prune_deliveries(session: AsyncSession, older_than: datetime) -> int:
    """Delete the log of deliveries made before `older_than` that are settled (succeeded or
    failed); pending ones stay, whatever their age: they are still to be sent."""
    result = await session.execute(
        deliveries.delete().where(
            deliveries.c.created_at < older_than, deliveries.c.status.in_(("succeeded", "failed"))
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
