from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.api.cursors import cursor_codec
from app.api.rendering import RenderedJSON
from app.api.responses import TENANT_ERRORS, problems
from app.api.routing import StrictJSONRoute
from app.core.errors import CursorExpired, InvalidCursor
from app.dependencies.auth import OrgContext
from app.dependencies.db import SessionDep
from app.repositories.cursor import Keyset
from app.schemas.event import EventFeedPage, EventTypePatterns
from app.services.cursors import MAX_CURSOR_LENGTH, CursorScope
from app.services.events import EventFeed, event_json, type_filter

router = APIRouter(prefix="/events", tags=["events"], route_class=StrictJSONRoute)

MAX_EVENTS_PER_READ = 1000


async def get_event_feed(session: SessionDep, ctx: OrgContext) -> EventFeed:
    return EventFeed(session, ctx)


FeedDep = Annotated[EventFeed, Depends(get_event_feed)]


@router.get(
    "",
    summary="The change feed: events after a cursor, oldest first",
    response_model=EventFeedPage,
    responses=problems(*TENANT_ERRORS, InvalidCursor, CursorExpired),
)
async def list_events(
    request: Request,
    feed: FeedDep,
    after: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="`next_cursor` of the previous read; omitted: from the oldest "
            "retained event.",
        ),
    ] = None,
    types: Annotated[
        EventTypePatterns | None,
        Query(
            description="Comma-separated event types (`deal.updated`) or patterns "
            "(`deal.*`, `*`); omitted: every type.",
            examples=["deal.*,task.created"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PER_READ)] = 100,
) -> Response:
    """Every committed change of the organization's companies, contacts, deals, tasks, comments
    and members, as events in **commit order**. Keep calling with the last `next_cursor`: you see
    every event exactly once, also when transactions commit in another order than they
    began. At the end `items` is empty and `next_cursor` stays where it is, so polling with it
    returns only newer events. A cursor from before events deleted by retention answers
    410 `CURSOR_EXPIRED`; start again without `after`."""
    ctx = feed.ctx
    codec = cursor_codec(request)
    scope = CursorScope(ctx.organization_id, "events")
    position = None if after is None else codec.open(after, scope).id
    page = await feed.read(position, type_filter(types), limit)
    items = b",".join(event_json(ctx.organization_id, row) for row in page.events)
    cursor = codec.seal(Keyset(None, page.position), scope)
    return RenderedJSON(b'{"items":[%b],"next_cursor":"%b"}' % (items, cursor.encode()))
