"""Cursor mode of the list endpoints, once: open the client's cursor, read one page after it,
seal the next one (`app.services.cursors`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request

from app.dependencies.db import resources_of
from app.repositories.cursor import Keyset
from app.schemas.common import CursorPage, CursorParams
from app.services.cursors import CursorCodec, CursorScope

R = TypeVar("R")

Scroll = Callable[[Keyset | None, int], Awaitable[tuple[Sequence[Any], Keyset | None]]]


def cursor_codec(request: Request) -> CursorCodec:
    """The app's cursor codec, made once from its signing key."""
    tokens = resources_of(request).tokens
    made: tuple[object, CursorCodec] | None = getattr(request.app.state, "cursor_codec", None)
    if made is None or made[0] is not tokens:  # a new lifespan may bring a new key
        made = (tokens, CursorCodec(tokens.derived_key("cursors")))
        request.app.state.cursor_codec = made
    return made[1]


async def cursor_page(
    request: Request,
    window: CursorParams,
    scope: CursorScope,
    scroll: Scroll,
    read: Callable[[Any], R],
) -> CursorPage[R]:
    codec = cursor_codec(request)
    after = None if window.cursor is None else codec.open(window.cursor, scope)
    rows, following = await scroll(after, window.limit)
    return CursorPage[R](
        items=[read(row) for row in rows],
        next_cursor=None if following is None else codec.seal(following, scope),
        limit=window.limit,
    )
