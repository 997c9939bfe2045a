"""Webhook endpoints: managing them, and what a person sees of their deliveries.

Delivery itself is background work (`app.jobs.webhooks`): this module only writes endpoints,
re-queues a delivery, and records the `ping` event. Only owners and admins manage endpoints;
creating one or rotating its secret shows the secret, which only a person may see (an API key
gets 403: `app.core.permissions.PEOPLE_ONLY`)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import WebhookDeliveryNotFound, WebhookNotFound
from app.core.permissions import Permission
from app.core.ssrf import check_url
from app.core.tenancy import TenantContext
from app.db.types import utcnow
from app.models import WebhookDelivery, WebhookEndpoint
from app.repositories.webhooks import PENDING, WebhookRepository
from app.schemas.common import PageParams
from app.schemas.event import EventType
from app.schemas.webhook import WebhookCreate, WebhookCreated, WebhookRead, WebhookUpdate
from app.services import events

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, *, allow_private: bool) -> None:
        self.session = session
        self.ctx = ctx
        self.allow_private = allow_private
        self.webhooks = WebhookRepository(session, ctx.organization_id)

    async def create(self, data: WebhookCreate) -> WebhookCreated:
        """Deliveries start with the next event committed: none from before."""
        self.ctx.require(Permission.WEBHOOK_SECRETS)
        await check_url(data.url, allow_private=self.allow_private)
        secret = new_secret()
        endpoint = await self.webhooks.add(
            WebhookEndpoint(
                creator_id=self.ctx.user_id,
                url=data.url,
                description=data.description,
                event_types=",".join(data.event_types),
                secret=secret,
                enabled=True,
                position=await self.webhooks.head_event_id(),
            )
        )
        return self._with_secret(endpoint)

    async def list(self, page: PageParams) -> tuple[Sequence[WebhookEndpoint], int]:
        self.ctx.require(Permission.MANAGE_WEBHOOKS)
        return await self.webhooks.list(page)

    async def get(
        self, endpoint_id: int, permission: Permission = Permission.MANAGE_WEBHOOKS
    ) -> WebhookEndpoint:
        # Found first, then the role: another organization's id is a 404 for everyone.
        endpoint = await self.webhooks.get(endpoint_id)
        if endpoint is None:
            raise WebhookNotFound()
        self.ctx.require(permission)
        return endpoint

    async def update(self, endpoint_id: int, data: WebhookUpdate) -> WebhookEndpoint:
        """Enabling a disabled endpoint resumes it with the next event committed: events of
        the time it was disabled are not delivered (deliveries already queued are)."""
        endpoint = await self.get(endpoint_id)
        changes = data.changes()
        if "url" in changes:
            await check_url(changes["url"], allow_private=self.allow_private)
            endpoint.url = changes["url"]
        if "event_types" in changes:
            endpoint.event_types = ",".join(changes["event_types"])
        if "description" in changes:
            endpoint.description = changes["description"]
        if "enabled" in changes and changes["enabled"] != endpoint.enabled:
            endpoint.enabled = changes["enabled"]
            if endpoint.enabled:
                endpoint.disabled_reason = None
                endpoint.position = max(endpoint.position, await self.webhooks.head_event_id())
                endpoint.next_attempt_at = utcnow()  # its queued deliveries, if any
        await self.session.flush()
        return endpoint

    async def delete(self, endpoint_id: int) -> None:
        """With its deliveries: nothing more is sent to it."""
        await self.webhooks.delete(await self.get(endpoint_id))

    async def rotate_secret(self, endpoint_id: int) -> WebhookCreated:
        """A new secret, used from the next time a worker takes the endpoint."""
        endpoint = await self.get(endpoint_id, Permission.WEBHOOK_SECRETS)
        endpoint.secret = new_secret()
        await self.session.flush()
        return self._with_secret(endpoint)

    async def ping(self, endpoint_id: int) -> None:
        """A `ping` event, delivered like any other but to this endpoint only (also when its
        patterns do not name `ping`); it appears in the change feed too."""
        endpoint = await self.get(endpoint_id)
        events.record(self.session, self.ctx, EventType.PING, WebhookRead.model_validate(endpoint))

    async def deliveries(
        self, endpoint_id: int, page: PageParams
    ) -> tuple[Sequence[WebhookDelivery], int]:
        await self.get(endpoint_id)
        return await self.webhooks.list_deliveries(endpoint_id, page)

    async def retry(self, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
        """Queue a delivery again now, with a fresh retry schedule (also one that succeeded:
        the receiver gets it again, with the same `webhook-id`). It goes in event order with
        the endpoint's other pending deliveries, once the endpoint is enabled."""
        endpoint = await self.get(endpoint_id)
        delivery = await self.webhooks.get_delivery(endpoint_id, delivery_id)
        if delivery is None:
            raise WebhookDeliveryNotFound()
        now = utcnow()
        delivery.status = PENDING
        delivery.failures = 0
        delivery.next_attempt_at = now
        endpoint.next_attempt_at = now
        await self.session.flush()
        return delivery

    def _with_secret(self, endpoint: WebhookEndpoint) -> WebhookCreated:
        return WebhookCreated.model_validate(
            {**WebhookRead.model_validate(endpoint).model_dump(), "secret": endpoint.secret}
        )
