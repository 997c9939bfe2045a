"""Exports: every contact, deal or task a list's filters match, as CSV or JSON Lines.

An export reads one consistent snapshot and holds about one batch in memory, however many rows
it has:

- **Its own connection, its own transaction.** A streamed answer outlives the request's
  session (closed when the endpoint returns, before the body is sent), so an export checks out
  a connection of its own when it starts and gives it back when it ends, is abandoned by its
  client, or fails. On PostgreSQL it is one `REPEATABLE READ READ ONLY` transaction: every
  batch, and the tenant check before them, read the same snapshot, so a row written meanwhile
  is neither half in nor counted twice. On SQLite one deferred read transaction (WAL) does
  the same.
- **Keyset batches by id.** `EXPORT_BATCH_ROWS` rows per statement, each an index range from
  the last id of the one before (`TenantRepository.id_batch`): constant memory, and the
  millionth row costs what the first does. The WHERE clause is the list's own
  (`_matching` of each repository), so an export has exactly the rows its list has.
- **No ORM entity, no pydantic model per row**: Core rows, a few conversions per column, one
  `csv.writer.writerows` (or one `json.dumps` per line) per batch.

Custom field values: JSON Lines carry the record's `custom_fields` object as the API does; a
CSV has one column `cf.<key>` per definition of the entity in the organization (in the
definitions' order) instead, with the value as the API writes it (a multiselect as a JSON
array, `["a","b"]`), empty for none.

Values are the API's: ids as integers, money as the JSON number the API sends (`12500.0`),
timestamps ISO 8601 in UTC with `Z`, dates `YYYY-MM-DD`, booleans `true`/`false`, null as an
empty CSV cell (or JSON `null`). Columns are the fields of the item schema (`DealRead` ...),
in its order.

CSV cells a spreadsheet would run as a formula (first character `=`, `+`, `-`, `@`, tab or
carriage return) get a leading `'` (OWASP, "CSV injection"): `=HYPERLINK(...)` is exported as
`'=HYPERLINK(...)`. The import strips a `'` that precedes one of those characters, so an
export imports back unchanged (but for a value that itself begins with `'` and a trigger: it
comes back without its quote). JSON Lines values are never altered."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Boolean, Date, Enum, FromClause, Row, String
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.core.tenancy import AnyCaller, TenantContext
from app.db.session import ReadOnlySession, plan_for_values
from app.db.types import Money, UTCDateTime
from app.models import Contact, CustomFieldEntity, Deal, Task
from app.repositories.contacts import ContactFilters, ContactRepository
from app.repositories.custom_fields import CustomFieldRepository
from app.repositories.deals import DealFilters, DealRepository
from app.repositories.tasks import TaskFilters, TaskRepository
from app.schemas.common import OutputSchema
from app.schemas.contact import ContactRead
from app.schemas.deal import DealRead
from app.schemas.export import ExportFormat
from app.schemas.task import TaskRead
from app.services.custom_fields import resolve_filters
from app.services.deals import check_deal_filters
from app.services.tenancy import resolve_tenant

# A spreadsheet runs a cell starting with one of these as a formula (OWASP).
FORMULA_TRIGGERS = frozenset("=+-@\t\r")
UTF8_BOM = "\ufeff".encode()


def neutralised(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: a leading `'` before a formula trigger."""
    return "'" + text if text and text[0] in FORMULA_TRIGGERS else text


def instant(value: datetime) -> str:
    """A timestamp as the API writes it: ISO 8601, UTC, `Z` (pydantic's form)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


# Column converters: each takes a batch's values of one column and gives them as the API
# writes them. Whole columns rather than cells: `map` and `str.join` run in C, the per-row
# Python work of a million-row export is what bounds its speed.
ColumnConverter = Callable[[Sequence[Any]], Sequence[Any]]


def _instants(values: Sequence[datetime | None]) -> Sequence[str | None]:
    if None in values:
        return [None if value is None else instant(value) for value in values]
    # Timestamps are read as the driver gives them (`as_stored`): aware and in UTC (asyncpg),
    # their `isoformat` ending in `+00:00`, or naive and UTC (SQLite). One join, one replace,
    # one split for the whole batch instead of a conversion per value.
    text = "\n".join(map(datetime.isoformat, values))  # type: ignore[arg-type]
    if values[0].tzinfo is None:  # type: ignore[union-attr]
        return (text.replace("\n", "Z\n") + "Z").split("\n")
    if text.count("+00:00") == len(values):
        return text.replace("+00:00", "Z").split("\n")
    return [instant(value) for value in values]  # type: ignore[arg-type]


def _days(values: Sequence[date | None]) -> Sequence[str | None]:
    return [None if value is None else value.isoformat() for value in values]


def _amounts(values: Sequence[Decimal]) -> Sequence[float]:
    # As `MoneyOut` sends it: a JSON number (at most 14 significant digits, exact as a double).
    return list(map(float, values))


def _flags(values: Sequence[bool]) -> Sequence[str]:
    return ["true" if value else "false" for value in values]


def _neutralised(values: Sequence[str | None]) -> Sequence[str | None]:
    triggers = FORMULA_TRIGGERS
    return ["'" + value if value and value[0] in triggers else value for value in values]


class ExportRepository(Protocol):
    async def export_batch(
        self, filters: Any, fields: Sequence[str], after_id: int | None, limit: int
    ) -> Sequence[Row[Any]]: ...


FilterCheck = Callable[[AsyncSession, int, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ExportKind:
    """What is exported: the item schema's fields, read from the table's columns, and how each
    column's values become the API's (per format)."""

    name: str  # "deals": the file name
    fields: tuple[str, ...]
    # Whose custom fields the records carry (`custom_fields`, the last field), if any.
    entity: CustomFieldEntity | None
    repository: Callable[[AsyncSession, int], ExportRepository]
    json_converters: tuple[tuple[int, ColumnConverter], ...]
    csv_converters: tuple[tuple[int, ColumnConverter], ...]
    # Checks the filters against the organization's data before the first row (a deal
    # export's stages must be stage keys of its pipelines): raises as the list would.
    check: FilterCheck | None = None

    @classmethod
    def of(
        cls,
        name: str,
        table: FromClause,
        schema: type[OutputSchema],
        repository: Callable[[AsyncSession, int], ExportRepository],
        entity: CustomFieldEntity | None = None,
        check: FilterCheck | None = None,
    ) -> ExportKind:
        fields = tuple(schema.model_fields)
        assert entity is None or fields[-1] == CUSTOM_FIELDS, "custom fields come last"
        assert fields[0] == "id", "the keyset is the id: it comes first"
        json_converters: list[tuple[int, ColumnConverter]] = []
        csv_converters: list[tuple[int, ColumnConverter]] = []
        for index, field in enumerate(fields):
            if field == CUSTOM_FIELDS:
                continue  # the CSV's own columns (`_CsvEncoder`); JSON as read
            column = table.c[field]
            kind = column.type
            to_json: ColumnConverter | None = None
            to_csv: ColumnConverter | None = None
            if isinstance(kind, UTCDateTime):
                to_json = to_csv = _instants
            elif isinstance(kind, Money):
                to_json = to_csv = _amounts
            elif isinstance(kind, Date):
                to_json = _days  # CSV: `str(date)` is the same ISO form
            elif isinstance(kind, Boolean):
                to_csv = _flags
            elif isinstance(kind, String) and not isinstance(kind, Enum):
                to_csv = _neutralised  # free text; enum values never start with a trigger
            if to_json is not None:
                json_converters.append((index, to_json))
            if to_csv is not None:
                csv_converters.append((index, to_csv))
        return cls(
            name,
            fields,
            entity,
            repository,
            tuple(json_converters),
            tuple(csv_converters),
            check,
        )


CUSTOM_FIELDS = "custom_fields"
CONTACTS = ExportKind.of(
    "contacts", Contact.__table__, ContactRead, ContactRepository, CustomFieldEntity.CONTACT
)
DEALS = ExportKind.of(
    "deals",
    Deal.__table__,
    DealRead,
    DealRepository,
    CustomFieldEntity.DEAL,
    check_deal_filters,
)
TASKS = ExportKind.of("tasks", Task.__table__, TaskRead, TaskRepository)


def _converted(
    rows: Sequence[Row[Any]], converters: tuple[tuple[int, ColumnConverter], ...]
) -> Iterator[tuple[Any, ...]]:
    """The batch's rows with the API's values, converted column by column."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for index, convert in converters:
        columns[index] = convert(columns[index])
    return zip(*columns, strict=True)


def custom_cell(value: Any) -> Any:
    """A custom field's value as a CSV cell (the import reads it back)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        return neutralised(value)
    return value


class _CsvEncoder:
    def __init__(self, kind: ExportKind, bom: bool) -> None:
        self.kind = kind
        self.bom = bom
        self.buffer = io.StringIO()
        # RFC 4180: CRLF line ends, quotes only where needed; `None` is an empty cell.
        self.writer = csv.writer(self.buffer, lineterminator="\r\n")
        self.custom_keys: Sequence[str] = ()

    def header(self) -> bytes:
        fields = self.kind.fields
        if self.kind.entity is not None:
            fields = fields[:-1] + tuple(f"cf.{key}" for key in self.custom_keys)
        self.writer.writerow(fields)
        return (UTF8_BOM if self.bom else b"") + self._take()

    def rows(self, rows: Sequence[Row[Any]]) -> bytes:
        converted = _converted(rows, self.kind.csv_converters)
        if self.kind.entity is not None:
            keys = self.custom_keys
            converted = (
                (*cells[:-1], *(custom_cell(cells[-1].get(key)) for key in keys))
                for cells in converted
            )
        self.writer.writerows(converted)
        return self._take()

    def _take(self) -> bytes:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text.encode()


class _JsonLinesEncoder:
    def __init__(self, kind: ExportKind) -> None:
        self.kind = kind
        # Compact, UTF-8 as is (not \u escapes), as the API's JSON.
        self.encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def header(self) -> bytes:
        return b""  # each line names its fields

    def rows(self, rows: Sequence[Row[Any]]) -> bytes:
        fields, encode = self.kind.fields, self.encode
        lines = [
            encode(dict(zip(fields, cells, strict=True)))
            for cells in _converted(rows, self.kind.json_converters)
        ]
        lines.append("")
        return "\n".join(lines).encode()


class Export:
    """One export, from `open` (its connection, its snapshot, the tenant) to `close`.

    HTTP-free: `chunks()` gives the file's bytes, a batch at a time; the API streams them."""

    def __init__(
        self,
        engine: AsyncEngine,
        kind: ExportKind,
        filters: ContactFilters | DealFilters | TaskFilters,
        export_format: ExportFormat,
        *,
        bom: bool = False,
        batch_rows: int = 5_000,
    ) -> None:
        self.engine = engine
        self.kind = kind
        self.filters = filters
        self.encoder = (
            _CsvEncoder(kind, bom) if export_format is ExportFormat.CSV else _JsonLinesEncoder(kind)
        )
        self.batch_rows = batch_rows
        self._connection: AsyncConnection | None = None
        self._session: AsyncSession | None = None
        self._ctx: TenantContext | None = None

    async def open(self, caller: AnyCaller, organization_id: int) -> TenantContext:
        """Check out a connection, begin the snapshot and resolve the caller's tenant in it
        (401, 403 as for any tenant request). On failure nothing stays open."""
        try:
            connection = self._connection = await self.engine.connect()
            if connection.dialect.name == "postgresql":
                await connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            await connection.begin()
            self._ctx, _ = await resolve_tenant(connection, caller, organization_id)
            self._session = AsyncSession(bind=connection, sync_session_class=ReadOnlySession)
            await plan_for_values(self._session)
        except BaseException:
            await self.close()
            raise
        return self._ctx

    async def chunks(self) -> AsyncIterator[bytes]:
        """One chunk per batch; the first holds the header too (and is there, maybe empty,
        even when nothing matches), so that reading it runs the first statement before
        anything is sent."""
        assert self._session is not None, "open() first"
        assert self._ctx is not None
        if self.kind.check is not None:
            await self.kind.check(self._session, self._ctx.organization_id, self.filters)
        repository = self.kind.repository(self._session, self._ctx.organization_id)
        filters = self.filters
        if self.kind.entity is not None:
            fields = CustomFieldRepository(self._session, self._ctx.organization_id)
            definitions = await fields.of_entity(self.kind.entity)
            if isinstance(filters, ContactFilters | DealFilters):
                filters = resolve_filters(definitions, filters)
            if isinstance(self.encoder, _CsvEncoder):
                self.encoder.custom_keys = list(definitions)
        chunk = self.encoder.header()
        after_id: int | None = None
        first = True
        while True:
            rows = await repository.export_batch(
                filters, self.kind.fields, after_id, self.batch_rows
            )
            if rows:
                chunk += self.encoder.rows(rows)
                after_id = rows[-1][0]
            if chunk or first:
                yield chunk
            chunk, first = b"", False
            if len(rows) < self.batch_rows:
                return

    async def close(self) -> None:
        """End the transaction (read-only: nothing to keep) and give the connection back."""
        session, connection = self._session, self._connection
        self._session = self._connection = None
        if session is not None:
            await session.close()
        if connection is not None:
            await connection.close()  # rolls the transaction back
