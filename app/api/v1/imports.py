from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, status

from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    ImportAlreadyFinished,
    ImportFileInvalid,
    ImportFileTooLarge,
    ImportFormatUnsupported,
    ImportNotFound,
    PermissionDenied,
)
from app.dependencies.auth import OrgContext
from app.dependencies.db import ResourcesDep, SessionDep
from app.dependencies.pagination import Pagination
from app.schemas.common import MAX_ID, Page
from app.schemas.imports import (
    ImportDetail,
    ImportErrorRead,
    ImportRead,
    ImportUpload,
)
from app.services.imports import ImportService, Upload

router = APIRouter(prefix="/imports", tags=["imports"], route_class=StrictJSONRoute)

ImportId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_import_service(session: SessionDep, ctx: OrgContext) -> ImportService:
    return ImportService(session, ctx)


ServiceDep = Annotated[ImportService, Depends(get_import_service)]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import contacts or deals from a CSV or JSON Lines file",
    responses=problems(
        *TENANT_ERRORS, ImportFileTooLarge, ImportFormatUnsupported, ImportFileInvalid
    ),
)
async def create_import(
    form: Annotated[ImportUpload, Form(media_type="multipart/form-data")],
    service: ServiceDep,
    resources: ResourcesDep,
) -> ImportRead:
    """Queues the import and answers at once (202); `GET /imports/{id}` follows it. The file
    is read whole first: one that cannot be imported at all (not UTF-8, no header, a column
    the kind needs missing, a bad `mapping`) is refused with nothing stored.

    Contacts: `name`, `email`, `phone`, `owner_id`. Deals: `title`, `amount`, `currency`,
    `status`, `stage`, `owner_id`, and the contact as `contact_id` or `contact_email`. Every
    row is checked by the rules of `POST /contacts` and `POST /deals` (and of `PATCH` for
    status, stage and owner); a row that fails changes nothing and is reported with its row
    number, column and code, and the others go on."""
    limit = resources.settings.IMPORT_MAX_BYTES
    content = await form.file.read(limit + 1)
    if len(content) > limit:
        raise ImportFileTooLarge()
    upload = Upload(
        content=content,
        filename=form.file.filename,
        content_type=form.file.content_type,
        kind=form.kind,
        mapping=form.mapping,
        dry_run=form.dry_run,
        on_conflict=form.on_conflict,
    )
    return ImportRead.model_validate(await service.create(upload))


@router.get(
    "",
    summary="List the organization's imports",
    responses=problems(*TENANT_ERRORS),
)
async def list_imports(service: ServiceDep, page: Pagination) -> Page[ImportRead]:
    """Newest first."""
    items, total = await service.list(page)
    return Page.build(
        [ImportRead.model_validate(i) for i in items], total, page.page, page.page_size
    )


@router.get(
    "/{import_id}",
    summary="Follow an import",
    responses=problems(*TENANT_ERRORS, ImportNotFound),
)
async def get_import(import_id: ImportId, service: ServiceDep) -> ImportDetail:
    """Its status (`queued`, `running`, `succeeded`, `failed`, `cancelled`), how many rows
    are done out of `rows_total` and what became of them, and the first 20 errors."""
    job = await service.get(import_id)
    errors = [ImportErrorRead.model_validate(e) for e in await service.first_errors(job)]
    return ImportDetail.model_validate(
        {**ImportRead.model_validate(job).model_dump(), "errors": errors}
    )


@router.get(
    "/{import_id}/errors",
    summary="An import's row errors",
    responses=problems(*TENANT_ERRORS, ImportNotFound),
)
async def list_import_errors(
    import_id: ImportId, service: ServiceDep, page: Pagination
) -> Page[ImportErrorRead]:
    """Every error, by row."""
    items, total = await service.errors(import_id, page)
    return Page.build(
        [ImportErrorRead.model_validate(e) for e in items], total, page.page, page.page_size
    )


@router.post(
    "/{import_id}/cancel",
    summary="Cancel an import",
    responses=problems(*TENANT_ERRORS, PermissionDenied, ImportNotFound, ImportAlreadyFinished),
)
async def cancel_import(import_id: ImportId, service: ServiceDep) -> ImportRead:
    """A queued import is cancelled at once; a running one stops after the batch it is on
    (`cancel_requested` is true until then; rows done so far stay). Its starter, or a
    manager and above. An import that has finished → 409 `IMPORT_FINISHED`."""
    return ImportRead.model_validate(await service.cancel(import_id))
