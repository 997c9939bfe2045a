from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.responses import StreamingResponse

from app.api.conditional import IfMatch, send_etag
from app.api.cursors import cursor_page
from app.api.exports import ExportQuery, export_response, export_responses
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import (
    DealInTrash,
    DealNotFound,
    DueDateInPast,
    InvalidCursor,
    PermissionDenied,
    PreconditionFailed,
    TaskNotFound,
)
from app.dependencies.auth import OrganizationIdHeader, OrgContext, TokenCaller
from app.dependencies.db import SessionDep
from app.dependencies.filters import TaskFilterQuery
from app.dependencies.pagination import ListWindow
from app.schemas.common import MAX_ID, CursorPage, CursorParams, Page
from app.schemas.task import TaskCreate, TaskRead, TaskUpdate
from app.services.cursors import CursorScope
from app.services.exports import TASKS
from app.services.tasks import TaskService

router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=StrictJSONRoute)

TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_task_service(session: SessionDep, ctx: OrgContext) -> TaskService:
    return TaskService(session, ctx)


ServiceDep = Annotated[TaskService, Depends(get_task_service)]


@router.get("", summary="List tasks", responses=problems(*TENANT_ERRORS, InvalidCursor))
async def list_tasks(
    request: Request, service: ServiceDep, page: ListWindow, filters: TaskFilterQuery
) -> Page[TaskRead] | CursorPage[TaskRead]:
    """Ordered by `due_date` (tasks without one last), then `id`. Page mode, or cursor mode
    with `limit` (and `cursor`): see the README."""
    if isinstance(page, CursorParams):
        scope = CursorScope(service.ctx.organization_id, "tasks", filters)
        scroll = partial(service.scroll, filters)
        return await cursor_page(request, page, scope, scroll, TaskRead.model_validate)
    items, total = await service.list(filters, page)
    return Page.build([TaskRead.model_validate(t) for t in items], total, page.page, page.page_size)


@router.get(
    "/export",
    summary="Export tasks",
    response_class=StreamingResponse,
    responses={**export_responses(TASKS), **problems(*TENANT_ERRORS)},
)
async def export_tasks(
    request: Request,
    caller: TokenCaller,
    x_organization_id: OrganizationIdHeader,
    filters: TaskFilterQuery,
    options: ExportQuery,
) -> Response:
    """Every task the list's filters match (the same filters as `GET /tasks`), as CSV
    (`format=csv`, the default; `bom=true` for Excel) or JSON Lines (`format=jsonl`),
    streamed in id order from one consistent snapshot. The values are the API's. CSV cells
    starting with `=`, `+`, `-`, `@`, a tab or a carriage return are prefixed with `'` so
    that no spreadsheet runs them as formulas: see the README."""
    return await export_response(request, caller, x_organization_id, TASKS, filters, options)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a task on a deal",
    responses=problems(*TENANT_ERRORS, DueDateInPast, PermissionDenied, DealNotFound),
)
async def create_task(body: TaskCreate, service: ServiceDep) -> TaskRead:
    """Members only on their own deals. `due_date` may not be before today (UTC; 400
    `DUE_DATE_IN_PAST`). Appends `task_created` to the deal's timeline."""
    return TaskRead.model_validate(await service.create(body))


@router.get("/{task_id}", summary="Read a task", responses=problems(*TENANT_ERRORS, TaskNotFound))
async def read_task(task_id: TaskId, service: ServiceDep, response: Response) -> TaskRead:
    task = await service.get(task_id)
    send_etag(response, task)
    return TaskRead.model_validate(task)


@router.patch(
    "/{task_id}",
    summary="Update a task",
    responses=problems(
        *TENANT_ERRORS, DueDateInPast, PermissionDenied, TaskNotFound, PreconditionFailed
    ),
)
async def update_task(
    task_id: TaskId, body: TaskUpdate, service: ServiceDep, if_match: IfMatch, response: Response
) -> TaskRead:
    task = await service.update(task_id, body, expected=if_match)
    send_etag(response, task)
    return TaskRead.model_validate(task)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a task",
    responses=problems(*TENANT_ERRORS, PermissionDenied, TaskNotFound, PreconditionFailed),
)
async def delete_task(task_id: TaskId, service: ServiceDep, if_match: IfMatch) -> Response:
    """Moves the task to the trash (`GET /trash`; restorable for `TRASH_RETENTION_DAYS`)."""
    await service.delete(task_id, expected=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{task_id}/restore",
    summary="Restore a task from the trash",
    responses=problems(*TENANT_ERRORS, PermissionDenied, TaskNotFound, DealInTrash),
)
async def restore_task(task_id: TaskId, service: ServiceDep, response: Response) -> TaskRead:
    """Brings a deleted task back (404 if it is not in the trash). Who may delete it may
    restore it. Its deal must not be in the trash: 409 `DEAL_IN_TRASH` (restoring the deal
    brings back the tasks deleted with it)."""
    task = await service.restore(task_id)
    send_etag(response, task)
    return TaskRead.model_validate(task)
