"""Webhook delivery: at least once, in commit order per endpoint, never lost.

**The outbox.** Events are the outbox (`app.services.events`: written in the transaction of
their change, ids in commit order per organization). Each endpoint keeps a `position`, the
last event of its organization looked at. A worker that leases an endpoint first turns the
events after its position into delivery rows (those its patterns match) and moves the
position, in one transaction; then it sends the endpoint's pending deliveries one at a time
in event order. Writes pay nothing for webhooks (no lookup of endpoints at commit), and an
event committed is an event delivered: its delivery row is written before the position moves
past it, and a delivery is `pending` until a receiver answered 2xx.

**One endpoint, one worker.** A worker leases an endpoint (`claimed_by`, `claimed_until`;
PostgreSQL picks candidates `FOR UPDATE SKIP LOCKED`), renews the lease whenever it writes,
starts a request only while the lease outlasts it (`WEBHOOK_LEASE_SECONDS` is longer than
`WEBHOOK_TIMEOUT_SECONDS`), and gives it back when done. So no two workers send to one
endpoint at the same time, and order holds. Successes are written down together, up to
`RECORD_EVERY` at a time and at least every `RECORD_INTERVAL_S` (one transaction, not one per
delivery: the worker's cost per delivery is the request). A worker killed mid-delivery leaves
what it had not written down pending and the lease to run out; the next worker sends those
again (at least once: a receiver dedupes on `webhook-id`).

**Failures.** Anything but a 2xx within `WEBHOOK_TIMEOUT_SECONDS` (redirects are not followed)
is retried after the next delay of `WEBHOOK_RETRY_SCHEDULE_SECONDS` (plus up to 10 % jitter);
later deliveries of that endpoint wait behind it. When the last retry fails, the delivery is
`failed`, the endpoint disabled, and a `webhook.disabled` event recorded."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.core.config import Settings
from app.core.errors import WebhookUrlNotAllowed
from app.core.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LAG, WEBHOOK_QUEUE_LAG
from app.core.ssrf import pin
from app.db.types import utcnow
from app.models import WebhookEndpoint
from app.repositories import webhooks as outbox
from app.repositories.events import TypeFilter
from app.repositories.webhooks import FAILED, PENDING
from app.schemas.event import EventType
from app.schemas.webhook import WebhookRead
from app.services import events
from app.services.events import event_json, type_filter

logger = logging.getLogger(__name__)

USER_AGENT = "Mini-CRM-Webhooks/1"
MAX_RESPONSE_BYTES = 1024
# Events looked at per transaction, and deliveries sent per lease before the worker gives
# the endpoint back (so one busy endpoint does not starve the others).
EVENTS_PER_BATCH = 500
DELIVERIES_PER_LEASE = 200
# Pending deliveries read at once.
DELIVERIES_PER_PAGE = 50
# Successes written down together (`_Accepted`): at most this many, at most this long apart.
RECORD_EVERY = 50
RECORD_INTERVAL_S = 1.0
JITTER = 0.1


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None  # the receiver's HTTP status, None when there was no answer
    body: str | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class _Accepted:
    """Deliveries a receiver accepted that are not written down yet. They are written
    together, in one statement with the lease renewed (`WebhookDeliverer._record`): after
    `RECORD_EVERY` of them, `RECORD_INTERVAL_S` after the last write, before a request the
    lease might not outlast, and before anything else is written. A worker killed in between
    sends them again (at least once: a receiver dedupes on `webhook-id`)."""

    lease_until: datetime
    rows: list[dict[str, Any]] = field(default_factory=list)
    recorded_at: float = field(default_factory=time.monotonic)

    def add(self, delivery_id: int, at: datetime, outcome: Outcome) -> None:
        self.rows.append(
            {
                "delivery_id": delivery_id,
                "at": at,
                "response_status": outcome.status,
                "response_body": outcome.body,
                "duration": outcome.duration_ms,
            }
        )

    def to_record(self, now: datetime, request_seconds: float) -> bool:
        """Whether to write down (and renew the lease) before the next request."""
        if self.lease_until - now <= timedelta(seconds=request_seconds):
            return True
        return bool(self.rows) and (
            len(self.rows) >= RECORD_EVERY
            or time.monotonic() - self.recorded_at >= RECORD_INTERVAL_S
        )

    def recorded(self, lease_until: datetime) -> None:
        self.rows = []
        self.recorded_at = time.monotonic()
        self.lease_until = lease_until


def worker_name() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"[:100]


class WebhookDeliverer:
    """Serves one endpoint at a time (`run_once`); run as many as wanted, in any processes."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        name: str | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.name = name or worker_name()
        self.clock = clock
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False
        )

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    def _lease_end(self) -> datetime:
        return self.clock() + timedelta(seconds=self.settings.WEBHOOK_LEASE_SECONDS)

    async def run_once(self) -> bool:
        """Lease one endpoint that has work and serve it; whether there was one."""
        async with self.session_factory() as session:
            lease_until = self._lease_end()
            async with session.begin():
                claimed = await outbox.claim(session, self.name, self.clock(), lease_until)
            if claimed is None:
                WEBHOOK_QUEUE_LAG.set(0)
                return False
            accepted = _Accepted(lease_until=lease_until)
            try:
                await self._serve(session, claimed, accepted)
            finally:
                async with session.begin():
                    # What receivers accepted and is not written down yet, and the endpoint
                    # given back: one transaction.
                    await outbox.record_successes(session, accepted.rows)
                    await outbox.release(session, claimed.id, self.name)
            return True

    async def _serve(self, session: AsyncSession, endpoint: Row[Any], accepted: _Accepted) -> None:
        """Queue the endpoint's new events and send its due deliveries in order, a page at a
        time, until one fails (the others wait behind it), none is due, or the lease's share
        of deliveries is sent. Successes are written down together (`_Accepted`), each write
        renewing the lease; a request starts only while the lease outlasts it. A worker that
        lost the lease, or whose endpoint was disabled or deleted, stops at its next write
        (within `RECORD_INTERVAL_S` or `RECORD_EVERY` deliveries)."""
        sent = 0
        position: int = endpoint.position
        while sent < DELIVERIES_PER_LEASE:
            # One transaction a page: what was accepted written down and the lease renewed,
            # then (only while the lease holds: two workers never queue the same events)
            # the new events queued and the next page read.
            async with session.begin():
                if not await self._record(session, endpoint, accepted):
                    return
                position, more = await self._queue_new_events(session, endpoint, position)
                due = await outbox.pending_head(
                    session, endpoint.id, min(DELIVERIES_PER_PAGE, DELIVERIES_PER_LEASE - sent)
                )
            if not due:
                if more:
                    continue  # a full batch of events, none for this endpoint: look further
                return
            if not await self._send_page(session, endpoint, due, accepted):
                return
            sent += len(due)

    async def _send_page(
        self,
        session: AsyncSession,
        endpoint: Row[Any],
        due: Sequence[Row[Any]],
        accepted: _Accepted,
    ) -> bool:
        """Send a page of deliveries in order; whether every one was sent and accepted."""
        for delivery in due:
            if delivery.next_attempt_at is not None and delivery.next_attempt_at > self.clock():
                return False
            if accepted.to_record(self.clock(), self.settings.WEBHOOK_TIMEOUT_SECONDS):
                async with session.begin():
                    if not await self._record(session, endpoint, accepted):
                        return False
            if not await self._attempt(session, endpoint, delivery, accepted):
                return False
        return True

    async def _record(self, session: AsyncSession, endpoint: Row[Any], accepted: _Accepted) -> bool:
        """Write down the accepted deliveries and renew the lease (in the caller's
        transaction); whether the lease still holds."""
        await outbox.record_successes(session, accepted.rows)
        accepted.recorded(self._lease_end())
        return await outbox.renew(session, endpoint.id, self.name, accepted.lease_until)

    async def _queue_new_events(
        self, session: AsyncSession, endpoint: Row[Any], position: int
    ) -> tuple[int, bool]:
        """In the caller's transaction, turn up to `EVENTS_PER_BATCH` events after `position`
        (the last event looked at) into the endpoint's deliveries; the new position, and
        whether there may be more events after it."""
        rows = await outbox.events_after(
            session, endpoint.organization_id, position, EVENTS_PER_BATCH
        )
        if not rows:
            return position, False
        types = type_filter(endpoint.event_types)
        matched = [(row.id, row.type) for row in rows if _wanted(row, endpoint.id, types)]
        position = rows[-1].id
        await outbox.add_deliveries(
            session, endpoint.organization_id, endpoint.id, matched, position, self.clock()
        )
        return position, len(rows) == EVENTS_PER_BATCH

    async def _attempt(
        self, session: AsyncSession, endpoint: Row[Any], delivery: Row[Any], accepted: _Accepted
    ) -> bool:
        """Send one delivery; whether to go on with the next. A success joins `accepted`; a
        failure is written down at once, with the successes before it."""
        if delivery.type is None:  # the event was pruned by retention before it could be sent
            async with session.begin():
                held = await self._record(session, endpoint, accepted)
                await outbox.record_attempt(
                    session,
                    delivery.delivery_id,
                    status=FAILED,
                    next_attempt_at=None,
                    last_error="The event is no longer retained.",
                )
            WEBHOOK_DELIVERIES.labels("failed").inc()
            return held
        # `delivery` carries its event as `event_json` reads one (`id` is the event's).
        outcome = await self.send(
            endpoint.url,
            endpoint.secret,
            str(delivery.id),
            event_json(endpoint.organization_id, delivery),
        )
        now = self.clock()
        if outcome.ok:
            accepted.add(delivery.delivery_id, now, outcome)
            WEBHOOK_DELIVERIES.labels("succeeded").inc()
            lag = max(0.0, (now - delivery.occurred_at).total_seconds())
            WEBHOOK_LAG.observe(lag)
            WEBHOOK_QUEUE_LAG.set(lag)
            return True
        attempt: dict[str, Any] = {
            "last_attempt_at": now,
            "last_response_status": outcome.status,
            "last_response_body": outcome.body,
            "last_error": outcome.error,
            "duration_ms": outcome.duration_ms,
        }
        failures = delivery.failures + 1
        schedule = self.settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
        if failures <= len(schedule):
            delay = schedule[failures - 1] * (1 + random.uniform(0, JITTER))  # noqa: S311
            retry_at = now + timedelta(seconds=delay)
            async with session.begin():
                await self._record(session, endpoint, accepted)
                await outbox.record_attempt(
                    session,
                    delivery.delivery_id,
                    status=PENDING,
                    failures=failures,
                    next_attempt_at=retry_at,
                    **attempt,
                )
            WEBHOOK_DELIVERIES.labels("retrying").inc()
            return False
        async with session.begin():
            await self._record(session, endpoint, accepted)
            await outbox.record_attempt(
                session,
                delivery.delivery_id,
                status=FAILED,
                failures=failures,
                next_attempt_at=None,
                **attempt,
            )
            await self._disable(session, endpoint, now, len(schedule) + 1)
        WEBHOOK_DELIVERIES.labels("failed").inc()
        logger.warning("webhook endpoint %s disabled: every attempt failed", endpoint.id)
        return False

    async def _disable(
        self, session: AsyncSession, endpoint: Row[Any], now: datetime, attempts: int
    ) -> None:
        reason = f"Disabled after {attempts} failed attempts to deliver an event."
        await outbox.disable(session, endpoint.id, reason, now)
        row = await session.scalar(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint.id)
            .execution_options(populate_existing=True)
        )
        if row is not None:
            events.record_system(
                session,
                endpoint.organization_id,
                EventType.WEBHOOK_DISABLED,
                WebhookRead.model_validate(row),
            )

    async def send(self, url: str, secret: str, message_id: str, body: bytes) -> Outcome:
        """POST `body`, signed, to `url` (resolved and checked again: `app.core.ssrf`)."""
        started = time.perf_counter()

        def elapsed() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            target = await pin(url, allow_private=self.settings.WEBHOOK_ALLOW_PRIVATE_URLS)
        except WebhookUrlNotAllowed as exc:
            return Outcome(None, None, exc.detail, elapsed())
        now = int(time.time())
        signer = Webhook(secret)  # Standard Webhooks: `v1,` + HMAC-SHA256 of `{id}.{ts}.{body}`
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signer.sign(message_id, datetime.fromtimestamp(now, UTC), body),
            **target.headers,
        }
        try:
            async with asyncio.timeout(self.settings.WEBHOOK_TIMEOUT_SECONDS):
                async with self.client.stream(
                    "POST",
                    target.url,
                    content=body,
                    headers=headers,
                    extensions=dict(target.extensions),
                ) as response:
                    excerpt = await _read_at_most(response, MAX_RESPONSE_BYTES)
        except TimeoutError:
            timeout = self.settings.WEBHOOK_TIMEOUT_SECONDS
            return Outcome(None, None, f"No answer within {timeout:g} s.", elapsed())
        except httpx.HTTPError as exc:
            return Outcome(None, None, f"{type(exc).__name__}: {exc}"[:1000], elapsed())
        status = response.status_code
        error: str | None = None
        if response.is_redirect:
            error = f"HTTP {status}: redirects are not followed."
        elif not 200 <= status < 300:
            error = f"HTTP {status}."
        return Outcome(status, excerpt, error, elapsed())


def _wanted(row: Row[Any], endpoint_id: int, types: TypeFilter) -> bool:
    if row.type == EventType.PING.value:  # only to the endpoint it was sent to
        try:
            return bool(json.loads(row.data)["object"]["id"] == endpoint_id)
        except (ValueError, KeyError, TypeError):
            return False
    return bool(types.matches(row.type))


async def _read_at_most(response: httpx.Response, limit: int) -> str:
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= limit:
            break
    return kept[:limit].decode("utf-8", errors="replace")
