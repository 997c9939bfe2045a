from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.api.idempotency import not_idempotent
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    PermissionDenied,
    WebhookDeliveryNotFound,
    WebhookNotFound,
    WebhookUrlNotAllowed,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.dependencies.pagination import Pagination
from app.schemas.common import MAX_ID, Page
from app.schemas.webhook import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
    WebhookUpdate,
)
from app.services.webhooks import WebhookService

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=StrictJSONRoute)

WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_webhook_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> WebhookService:
    return WebhookService(session, ctx, allow_private=resources.settings.WEBHOOK_ALLOW_PRIVATE_URLS)


ServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe an endpoint to events (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookUrlNotAllowed),
)
@not_idempotent  # the answer holds the secret: it is never kept for a replay
async def create_webhook(body: WebhookCreate, service: ServiceDep) -> WebhookCreated:
    """From the next event committed, every event matching `event_types` is POSTed to `url`,
    signed per Standard Webhooks with `secret` — which is in this answer only: store it now.
    `url` must be https and resolve to public addresses only (400 `WEBHOOK_URL_NOT_ALLOWED`).
    People only: an API key gets 403."""
    return await service.create(body)


@router.get(
    "",
    summary="List the webhook endpoints (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied),
)
async def list_webhooks(service: ServiceDep, page: Pagination) -> Page[WebhookRead]:
    """Newest first, without their secrets."""
    items, total = await service.list(page)
    return Page.build(
        [WebhookRead.model_validate(e) for e in items], total, page.page, page.page_size
    )


@router.get(
    "/{webhook_id}",
    summary="Get a webhook endpoint (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound),
)
async def get_webhook(webhook_id: WebhookId, service: ServiceDep) -> WebhookRead:
    return WebhookRead.model_validate(await service.get(webhook_id))


@router.patch(
    "/{webhook_id}",
    summary="Change a webhook endpoint (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound, WebhookUrlNotAllowed),
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, service: ServiceDep
) -> WebhookRead:
    """`enabled: false` pauses deliveries; `enabled: true` resumes them with the next event
    committed (also after the service disabled the endpoint)."""
    return WebhookRead.model_validate(await service.update(webhook_id, body))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook endpoint (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound),
)
async def delete_webhook(webhook_id: WebhookId, service: ServiceDep) -> Response:
    await service.delete(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Replace an endpoint's signing secret (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound),
)
@not_idempotent  # the answer holds the secret
async def rotate_webhook_secret(webhook_id: WebhookId, service: ServiceDep) -> WebhookCreated:
    """A new `secret`, shown in this answer only. Deliveries are signed with it from the
    next time a worker takes the endpoint (a worker already sending to it finishes its batch,
    at most 200 deliveries, with the old one): a receiver should accept both secrets for a
    minute. People only: an API key gets 403."""
    return await service.rotate_secret(webhook_id)


@router.post(
    "/{webhook_id}/ping",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Send a test event to an endpoint (owner, admin)",
    responses={
        status.HTTP_202_ACCEPTED: {"description": "The `ping` event is recorded, to be sent."},
        **problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound),
    },
)
async def ping_webhook(webhook_id: WebhookId, service: ServiceDep) -> Response:
    """Records a `ping` event, delivered to this endpoint only, like any other event (its
    deliveries list shows how it went)."""
    await service.ping(webhook_id)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.get(
    "/{webhook_id}/deliveries",
    summary="An endpoint's deliveries (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound),
)
async def list_webhook_deliveries(
    webhook_id: WebhookId, service: ServiceDep, page: Pagination
) -> Page[WebhookDeliveryRead]:
    """Newest event first: each delivery's status (`pending`, `succeeded`, `failed`),
    attempts, the last answer (status, first 1 KiB of the body, error, duration) and when it
    is tried next."""
    items, total = await service.deliveries(webhook_id, page)
    return Page.build(
        [WebhookDeliveryRead.model_validate(d) for d in items], total, page.page, page.page_size
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again (owner, admin)",
    responses=problems(*TENANT_ERRORS, PermissionDenied, WebhookNotFound, WebhookDeliveryNotFound),
)
async def retry_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, service: ServiceDep
) -> WebhookDeliveryRead:
    """Queued now with a fresh retry schedule, in event order with the endpoint's other
    pending deliveries; the receiver gets the same `webhook-id` again."""
    return WebhookDeliveryRead.model_validate(await service.retry(webhook_id, delivery_id))
