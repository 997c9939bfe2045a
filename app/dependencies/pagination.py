from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from app.schemas.common import CursorParams, PageParams
from app.services.cursors import MAX_CURSOR_LENGTH

MAX_PAGE = 10_000_000
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


async def get_page_params(
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1..100).")
    ] = DEFAULT_PAGE_SIZE,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)


Pagination = Annotated[PageParams, Depends(get_page_params)]

_PAGE_MODE = ("page", "page_size")
_CURSOR_MODE = ("limit", "cursor")


async def get_list_window(
    request: Request,
    # No default in the document (`1`, `20` are applied here): a generated client sends every
    # parameter with a documented default, and `page` would then spoil every cursor request.
    page: Annotated[
        int | None,
        Query(ge=1, le=MAX_PAGE, description="1-based page number (page mode; 1 if not sent)."),
    ] = None,
    page_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE_SIZE,
            description="Items per page (1..100; page mode; 20 if not sent).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE_SIZE,
            description="Items per page in cursor mode (1..100; 20 when only `cursor` is "
            "sent). Answers `{items, next_cursor, limit}` instead of a numbered page.",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description="`next_cursor` of the previous page (cursor mode), for the same list, "
            "filters and sort.",
        ),
    ] = None,
) -> PageParams | CursorParams:
    """Page mode (`page`, `page_size`, the default) or cursor mode (`limit`, `cursor`); the
    two do not mix (422)."""
    sent = request.query_params
    if limit is None and cursor is None:
        return PageParams(page=page or 1, page_size=page_size or DEFAULT_PAGE_SIZE)
    mixed = [name for name in _PAGE_MODE if name in sent]
    if mixed:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", name),
                    "msg": f"`{name}` cannot be combined with `limit` or `cursor`: "
                    "use page mode or cursor mode",
                }
                for name in mixed
            ]
        )
    return CursorParams(limit=limit or DEFAULT_PAGE_SIZE, cursor=cursor)


ListWindow = Annotated[PageParams | CursorParams, Depends(get_list_window)]
