from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from app.schemas.common import PageParams

MAX_PAGE = 10_000_000
MAX_PAGE_SIZE = 100


async def get_page_params(
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1..100).")
    ] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)


Pagination = Annotated[PageParams, Depends(get_page_params)]
