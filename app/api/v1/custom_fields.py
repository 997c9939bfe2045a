from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    CustomFieldKeyTaken,
    CustomFieldLimitReached,
    CustomFieldNotFound,
    CustomFieldOptionInUse,
    PermissionDenied,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.models import CustomFieldEntity
from app.schemas.common import MAX_ID
from app.schemas.custom_field import CustomFieldCreate, CustomFieldRead, CustomFieldUpdate
from app.services.custom_fields import CustomFieldService

router = APIRouter(prefix="/custom-fields", tags=["custom fields"], route_class=StrictJSONRoute)

CustomFieldId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_custom_field_service(
    session: SessionDep, ctx: OrgContext, resources: ResourcesDep
) -> CustomFieldService:
    return CustomFieldService(session, ctx, resources.cache)


ServiceDep = Annotated[CustomFieldService, Depends(get_custom_field_service)]


@router.get("", summary="List custom fields", responses=problems(*TENANT_ERRORS))
async def list_custom_fields(
    service: ServiceDep,
    entity: Annotated[
        CustomFieldEntity | None, Query(description="Only the fields of this entity.")
    ] = None,
) -> list[CustomFieldRead]:
    """The organization's custom field definitions, by entity, oldest first. Every member
    reads them."""
    return [CustomFieldRead.model_validate(d) for d in await service.list(entity)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Define a custom field",
    responses=problems(
        *TENANT_ERRORS, PermissionDenied, CustomFieldKeyTaken, CustomFieldLimitReached
    ),
)
async def create_custom_field(body: CustomFieldCreate, service: ServiceDep) -> CustomFieldRead:
    """Owners and admins. `key` is unique per organization and entity (409
    `CUSTOM_FIELD_KEY_TAKEN`); at most 100 fields per entity (409
    `CUSTOM_FIELD_LIMIT_REACHED`); `options` are required for `select` and `multiselect` and
    refused otherwise. Records then carry the field in `custom_fields` (see the README for
    each type's values, and the `cf.<key>` filters of the lists)."""
    return CustomFieldRead.model_validate(await service.create(body))


@router.get(
    "/{custom_field_id}",
    summary="Read a custom field",
    responses=problems(*TENANT_ERRORS, CustomFieldNotFound),
)
async def read_custom_field(custom_field_id: CustomFieldId, service: ServiceDep) -> CustomFieldRead:
    return CustomFieldRead.model_validate(await service.get(custom_field_id))


@router.patch(
    "/{custom_field_id}",
    summary="Update a custom field",
    responses=problems(
        *TENANT_ERRORS, PermissionDenied, CustomFieldNotFound, CustomFieldOptionInUse
    ),
)
async def update_custom_field(
    custom_field_id: CustomFieldId, body: CustomFieldUpdate, service: ServiceDep
) -> CustomFieldRead:
    """Owners and admins: `label`, `required`, `options` (`entity`, `key` and `type` never
    change). Removing an option some record holds: 409 `CUSTOM_FIELD_OPTION_IN_USE`. Making a
    field required does not touch records without a value (new records need it)."""
    return CustomFieldRead.model_validate(await service.update(custom_field_id, body))


@router.delete(
    "/{custom_field_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a custom field and its values",
    responses=problems(*TENANT_ERRORS, PermissionDenied, CustomFieldNotFound),
)
async def delete_custom_field(custom_field_id: CustomFieldId, service: ServiceDep) -> Response:
    """Owners and admins. Removes the field's value from every record of its entity (each
    such record gets a new `updated_at`), in the same transaction."""
    await service.delete(custom_field_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
