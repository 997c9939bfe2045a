"""Serving an export (`app.services.exports`) over HTTP: the query options, the streamed
answer and its OpenAPI description, once for the three export routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Query, Request, Response
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.core.tenancy import AnyCaller
from app.dependencies.auth import acting_organization, bind_tenant
from app.dependencies.db import resources_of
from app.repositories.contacts import ContactFilters
from app.repositories.deals import DealFilters
from app.repositories.tasks import TaskFilters
from app.schemas.export import ExportFormat
from app.services.exports import Export, ExportKind

CSV_MEDIA_TYPE = "text/csv"
JSONL_MEDIA_TYPE = "application/x-ndjson"
_CONTENT_TYPES = {
    ExportFormat.CSV: f"{CSV_MEDIA_TYPE}; charset=utf-8",
    ExportFormat.JSONL: JSONL_MEDIA_TYPE,
}
_EXTENSIONS = {ExportFormat.CSV: "csv", ExportFormat.JSONL: "jsonl"}


@dataclass(frozen=True, slots=True)
class ExportOptions:
    format: ExportFormat = ExportFormat.CSV
    bom: bool = False


async def get_export_options(
    format_: Annotated[
        ExportFormat,
        Query(alias="format", description="`csv` (with a header row) or `jsonl` (JSON Lines)."),
    ] = ExportFormat.CSV,
    bom: Annotated[
        bool,
        Query(
            description="CSV only: begin with a UTF-8 byte order mark, for Excel to read the "
            "file as UTF-8."
        ),
    ] = False,
) -> ExportOptions:
    return ExportOptions(format=format_, bom=bom and format_ is ExportFormat.CSV)


ExportQuery = Annotated[ExportOptions, Depends(get_export_options)]


def export_responses(kind: ExportKind) -> dict[int | str, dict[str, Any]]:
    """The 200 of an export route, in both media types."""
    columns = ", ".join(f"`{field}`" for field in kind.fields)
    return {
        200: {
            "description": f"Every matching row, streamed. Columns, in this order: {columns}.",
            "content": {
                CSV_MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "example": ",".join(kind.fields) + "\r\n",
                },
                JSONL_MEDIA_TYPE: {
                    "schema": {"type": "string", "description": "One JSON object per line."},
                },
            },
            "headers": {
                "Content-Disposition": {
                    "description": f'`attachment; filename="{kind.name}.csv"` (or `.jsonl`).',
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
        }
    }


class ExportResponse(StreamingResponse):
    """Streams an open `Export` and closes it however the stream ends: finished, failed, or
    cancelled because the client went away (Starlette cancels the stream when it sees the
    disconnect). The close is shielded from that cancellation, so the connection always goes
    back to the pool at once, not whenever the abandoned generator is collected."""

    def __init__(self, export: Export, first: bytes, rest: AsyncIterator[bytes], **kw: Any):
        super().__init__(_chained(first, rest), **kw)
        self.export = export
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await _close(self.export, self.rest)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def _close(export: Export, chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
    await export.close()


async def export_response(
    request: Request,
    caller: AnyCaller,
    x_organization_id: int | None,
    kind: ExportKind,
    filters: ContactFilters | DealFilters | TaskFilters,
    options: ExportOptions,
) -> Response:
    """Open the export (tenant checked in its snapshot: 401, 403, 429 as usual), read its
    first batch, then stream the rest. Anything that fails before the first byte is sent is
    an ordinary problem+json answer; a failure later cuts the chunked body short (no final
    chunk), which HTTP clients report as an incomplete download.

    HEAD checks the tenant and answers the headers without reading a row."""
    resources = resources_of(request)
    export = Export(
        resources.read_engine,
        kind,
        filters,
        options.format,
        bom=options.bom,
        batch_rows=resources.settings.EXPORT_BATCH_ROWS,
    )
    ctx = await export.open(caller, acting_organization(caller, x_organization_id))
    headers = {
        "Content-Disposition": f'attachment; filename="{kind.name}.{_EXTENSIONS[options.format]}"'
    }
    media_type = _CONTENT_TYPES[options.format]
    chunks = export.chunks()
    try:
        bind_tenant(request, ctx)
        if request.method == "HEAD":
            await _close(export, chunks)
            return StreamingResponse(_nothing(), headers=headers, media_type=media_type)
        first = await anext(chunks)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _close(export, chunks)
        raise
    return ExportResponse(export, first, chunks, headers=headers, media_type=media_type)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield
