"""Custom field definitions, and the SQL over the values records keep in `custom_fields`.

On PostgreSQL a value is read as `custom_fields -> '<key>'` (jsonb, whatever its type), and a
filter compares it with a jsonb constant: jsonb orders numbers as numerics, strings as text
(ISO dates chronologically), `false` before `true`, and every record's value of one key has
the key's type (`app.services.custom_fields`), so equality, ranges and sorting are those of
the type. On SQLite a value is `json_extract(custom_fields, '$.<key>')`, an SQL number, text
or 0/1.

Per-key indexes (PostgreSQL): `ix_<table>_cf_<key>` on `(organization_id, (custom_fields ->
'<key>'), created_at, id)` over the rows that have the key (`custom_fields ? '<key>'`, which
every filter on the key states too, and live rows only where the table has a trash), one per
table and key, shared by every organization that defines the key. The worker keeps them in
step with the definitions (`app.jobs.custom_field_indexes`): made `CONCURRENTLY` once a key is
defined, dropped `CONCURRENTLY` once no organization defines it. `->` keeps the index free of casts,
so no organization's value can fail to index. A filter `cf.<key>=v` then reads the first
page as an index range in `created_at` order. The key is a lower-case identifier
(`CUSTOM_FIELD_KEY`), which is what lets it be written into SQL as a literal: the expression
must be the index's own for the planner to use it."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.types import utcnow
from app.models import (
    Company,
    Contact,
    CustomFieldDefinition,
    CustomFieldEntity,
    CustomFieldType,
    Deal,
)
from app.models.custom_field import CUSTOM_FIELD_KEY
from app.repositories.base import RowLock, TenantRepository, with_lock

_KEY = re.compile(CUSTOM_FIELD_KEY)
_INDEX_NAME = re.compile(r"^ix_(contacts|companies|deals)_cf_[a-z][a-z0-9_]{0,39}$")

Carrier = type[Contact] | type[Company] | type[Deal]
MODEL_OF: dict[CustomFieldEntity, Carrier] = {
    CustomFieldEntity.CONTACT: Contact,
    CustomFieldEntity.COMPANY: Company,
    CustomFieldEntity.DEAL: Deal,
}


def is_custom_field_index(name: str | None) -> bool:
    """Whether `name` is one of the per-key indexes the service manages (Alembic skips them)."""
    return name is not None and _INDEX_NAME.match(name) is not None


class FilterOp(StrEnum):
    EQ = "eq"  # equal; for a multiselect, "holds this option"
    MIN = "min"  # inclusive
    MAX = "max"  # inclusive


@dataclass(frozen=True, slots=True)
class CustomFieldFilter:
    """`cf.<key>=<text>` (`op` eq), `cf.<key>.min=` or `cf.<key>.max=`, as the query string
    gave it; `type` and `value` (the text read as the field's type) are filled in by the
    service from the organization's definition before a query is built."""

    key: str
    op: FilterOp
    text: str
    type: CustomFieldType | None = None
    value: Any = None

    def cache_part(self) -> list[str]:
        return [self.key, self.op.value, self.text]


def index_name(entity: CustomFieldEntity, key: str) -> str:
    return f"ix_{MODEL_OF[entity].__tablename__}_cf_{_checked_key(key)}"


def index_ddl(entity: CustomFieldEntity, key: str, *, concurrently: bool = False) -> str:
    """The statement that makes the per-key index of (`entity`, `key`) if it is missing.
    `concurrently`: without the lock that holds writes to the table while it builds (and
    outside any transaction)."""
    model = MODEL_OF[entity]
    key = _checked_key(key)
    live = "deleted_at IS NULL AND " if hasattr(model, "deleted_at") else ""
    how = " CONCURRENTLY" if concurrently else ""
    return (
        f"CREATE INDEX{how} IF NOT EXISTS {index_name(entity, key)} ON {model.__tablename__} "
        f"(organization_id, (custom_fields -> '{key}'), created_at, id) "
        f"WHERE {live}custom_fields ? '{key}'"
    )


def drop_index_ddl(name: str) -> str:
    """Drops a per-key index without the lock that would hold reads of its table (and every
    statement queued behind that lock) while it waits for running ones."""
    if not is_custom_field_index(name):
        raise ValueError(f"not a custom field index: {name!r}")
    return f"DROP INDEX CONCURRENTLY IF EXISTS {name}"


def _checked_key(key: str) -> str:
    if not _KEY.match(key):  # a programming error: keys are validated at the edge
        raise ValueError(f"not a custom field key: {key!r}")
    return key


def value_of(model: Carrier, key: str, dialect: str) -> ColumnElement[Any]:
    """The record's value of custom field `key`, NULL when it has none (see the module)."""
    key = _checked_key(key)
    if dialect == "postgresql":
        return model.custom_fields.op("->")(literal_column(f"'{key}'"))
    return func.json_extract(model.custom_fields, literal_column(f"'$.{key}'"))


def value_text(model: Carrier, key: str, dialect: str) -> ColumnElement[Any]:
    """The record's value of `key` as text, as `app.services.read_models.counted_text` writes
    it for the value counts: a string as it is, a boolean `true` or `false`."""
    key = _checked_key(key)
    if dialect == "postgresql":
        return model.custom_fields.op("->>", return_type=String())(literal_column(f"'{key}'"))
    path: ColumnElement[str] = literal_column(f"'$.{key}'")
    kind = func.json_type(model.custom_fields, path)
    return case(
        (kind.in_(["true", "false"]), kind),
        else_=func.json_extract(model.custom_fields, path),
    )


def _json_text(value: Any) -> str:
    if isinstance(value, Decimal):  # money: its own digits, exact as a jsonb numeric
        return str(value)
    return json.dumps(value)


def condition(model: Carrier, where: CustomFieldFilter, dialect: str) -> ColumnElement[bool]:
    """The WHERE clause of one resolved filter."""
    value = value_of(model, where.key, dialect)
    constant: ColumnElement[Any]
    if dialect == "postgresql":
        if where.type is CustomFieldType.MULTISELECT:
            return value.op("@>")(cast(literal(json.dumps([where.value])), JSONB))
        constant = cast(literal(_json_text(where.value)), JSONB)
        # Implied by any comparison of the value; said so that the per-key index, which
        # holds only the rows with the key, is seen to apply.
        has_key = model.custom_fields.op("?")(literal_column(f"'{where.key}'"))
        if where.op is FilterOp.MIN:
            return and_(has_key, value >= constant)
        if where.op is FilterOp.MAX:
            return and_(has_key, value <= constant)
        return and_(has_key, value == constant)
    if where.type is CustomFieldType.MULTISELECT:
        options = func.json_each(model.custom_fields, f"$.{where.key}").table_valued("value")
        return exists(select(literal(1)).select_from(options).where(options.c.value == where.value))
    sql_value = where.value
    if where.type is CustomFieldType.MONEY:
        sql_value = float(where.value)  # SQLite reads JSON numbers as doubles anyway
    constant = literal(sql_value)
    if where.op is FilterOp.MIN:
        return value >= constant
    if where.op is FilterOp.MAX:
        return value <= constant
    return value == constant


def custom_sort(model: Carrier, key: str, dialect: str, *, descending: bool) -> list[Any]:
    """ORDER BY a custom field: records without a value last whatever the direction, ties by
    id in the same direction."""
    value = value_of(model, key, dialect)
    if descending:
        return [value.desc().nulls_last(), model.id.desc()]
    return [value.asc().nulls_last(), model.id.asc()]


def matching(
    query: Select[Any], model: Carrier, filters: Sequence[CustomFieldFilter], dialect: str
) -> Select[Any]:
    for where in filters:
        query = query.where(condition(model, where, dialect))
    return query


class CustomFieldRepository(TenantRepository):
    def _rows(self) -> Select[CustomFieldDefinition]:
        return select(CustomFieldDefinition).where(
            CustomFieldDefinition.organization_id == self.organization_id
        )

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def list(
        self, entity: CustomFieldEntity | None, *, lock: RowLock | None = None
    ) -> Sequence[CustomFieldDefinition]:
        query = self._rows()
        if entity is not None:
            query = query.where(CustomFieldDefinition.entity == entity)
        query = query.order_by(CustomFieldDefinition.entity, CustomFieldDefinition.id)
        return (await self.session.scalars(with_lock(query, lock))).all()

    async def of_entity(
        self, entity: CustomFieldEntity, *, lock: RowLock | None = None
    ) -> dict[str, CustomFieldDefinition]:
        """The entity's definitions by key."""
        return {definition.key: definition for definition in await self.list(entity, lock=lock)}

    async def get(
        self, definition_id: int, *, lock: RowLock | None = None
    ) -> CustomFieldDefinition | None:
        query = self._rows().where(CustomFieldDefinition.id == definition_id)
        return await self.session.scalar(with_lock(query, lock))

    async def add(self, definition: CustomFieldDefinition) -> None:
        definition.organization_id = self.organization_id
        self.session.add(definition)
        await self.session.flush()

    async def delete(self, definition: CustomFieldDefinition) -> None:
        await self.session.delete(definition)
        await self.session.flush()

    async def count_of(self, entity: CustomFieldEntity) -> int:
        query = select(func.count()).where(
            CustomFieldDefinition.organization_id == self.organization_id,
            CustomFieldDefinition.entity == entity,
        )
        return int(await self.session.scalar(query) or 0)

    async def value_in_use(self, definition: CustomFieldDefinition, option: str) -> bool:
        """Whether a record of the organization (in the trash too) holds `option`."""
        model = MODEL_OF[definition.entity]
        where = CustomFieldFilter(
            definition.key, FilterOp.EQ, option, type=definition.type, value=option
        )
        found = exists().where(
            model.organization_id == self.organization_id,
            condition(model, where, self.dialect),
        )
        return bool(await self.session.scalar(select(found)))

    async def remove_values(self, definition: CustomFieldDefinition) -> int:
        """Remove the field's value from every record of the organization that has one (in the
        trash too), in one statement; each such record's `updated_at` moves (its version
        changes). How many records lost a value."""
        model = MODEL_OF[definition.entity]
        key = _checked_key(definition.key)
        if self.dialect == "postgresql":
            removed: Any = model.custom_fields.op("-")(literal_column(f"'{key}'"))
            has = model.custom_fields.op("?")(literal_column(f"'{key}'"))
        else:
            removed = func.json_remove(model.custom_fields, f"$.{key}")
            has = func.json_type(model.custom_fields, f"$.{key}").is_not(None)
        statement = (
            update(model)
            .where(model.organization_id == self.organization_id, has)
            .values(custom_fields=removed, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)


# --- the per-key indexes (PostgreSQL): see the module; kept by `app.jobs.custom_field_indexes`


async def wanted_indexes(
    connection: AsyncConnection, limit: int
) -> dict[str, tuple[CustomFieldEntity, str]]:
    """The per-key indexes wanted, by name: one per (entity, key) some organization defines,
    at most `limit`, those of the keys most organizations define first. Read over all
    organizations: the index is shared, and only key names are read."""
    organizations = func.count(CustomFieldDefinition.organization_id.distinct())
    rows = await connection.execute(
        select(CustomFieldDefinition.entity, CustomFieldDefinition.key)
        .group_by(CustomFieldDefinition.entity, CustomFieldDefinition.key)
        .order_by(organizations.desc(), CustomFieldDefinition.entity, CustomFieldDefinition.key)
        .limit(limit)
    )
    return {index_name(entity, key): (entity, key) for entity, key in rows}


async def present_indexes(connection: AsyncConnection) -> dict[str, bool]:
    """The per-key indexes the database has, by name: whether each is valid (a build that was
    interrupted leaves an invalid one, which no query uses)."""
    rows = await connection.execute(
        text(
            "SELECT c.relname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname LIKE 'ix\\_%\\_cf\\_%'"
        )
    )
    return {name: valid for name, valid in rows if is_custom_field_index(name)}
