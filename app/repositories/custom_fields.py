"""Custom field definitions, and the SQL over the values records keep in `custom_fields`.

On PostgreSQL a value is read as `custom_fields -> '<key>'` (jsonb, whatever its type), and a
filter compares it with a jsonb constant: jsonb orders numbers as numerics, strings as text
(ISO dates chronologically), `false` before `true`, and every record's value of one key has
the key's type (`app.services.custom_fields`), so equality, ranges and sorting are those of
the type. On SQLite a value is `json_extract(custom_fields, '$.<key>')`, an SQL number, text
or 0/1.

Per-key indexes (PostgreSQL): `ix_<table>_cf_<key>` on `(organization_id, (custom_fields ->
'<key>'), created_at, id)` (live rows only where the table has a trash), one per table and key,
shared by every organization that defines the key: made when a definition is created, dropped
when the last definition of that key on that table goes. `->` keeps the index free of casts,
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


def index_ddl(entity: CustomFieldEntity, key: str) -> str:
    """The statement that makes the per-key index of (`entity`, `key`) if it is missing."""
    model = MODEL_OF[entity]
    table = model.__tablename__
    key = _checked_key(key)
    live = " WHERE deleted_at IS NULL" if hasattr(model, "deleted_at") else ""
    return (
        f"CREATE INDEX IF NOT EXISTS ix_{table}_cf_{key} ON {table} "
        f"(organization_id, (custom_fields -> '{key}'), created_at, id){live}"
    )


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
    else:
        if where.type is CustomFieldType.MULTISELECT:
            options = func.json_each(model.custom_fields, f"$.{where.key}").table_valued("value")
            return exists(
                select(literal(1)).select_from(options).where(options.c.value == where.value)
            )
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

    # --- the per-key indexes (PostgreSQL): see the module ----------------------------------

    async def _lock_key(self, entity: CustomFieldEntity, key: str) -> None:
        # One transaction at a time decides about a (table, key) index: a definition created
        # in one organization while another drops the last one cannot lose its index.
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
            {"name": f"custom_field_index:{entity.value}:{key}"},
        )

    async def ensure_index(self, entity: CustomFieldEntity, key: str) -> None:
        if self.dialect != "postgresql":
            return
        await self._lock_key(entity, key)
        # Already there (another organization uses the key): no CREATE INDEX, whose table
        # lock would hold the table's writers until this transaction ends.
        name = f"ix_{MODEL_OF[entity].__tablename__}_cf_{_checked_key(key)}"
        if await self.session.scalar(text("SELECT to_regclass(:name)"), {"name": name}):
            return
        await self.session.execute(text(index_ddl(entity, key)))

    async def drop_index_if_unused(self, entity: CustomFieldEntity, key: str) -> None:
        if self.dialect != "postgresql":
            return
        await self._lock_key(entity, key)
        still_used = exists().where(
            CustomFieldDefinition.entity == entity, CustomFieldDefinition.key == key
        )
        if await self.session.scalar(select(still_used)):
            return
        table = MODEL_OF[entity].__tablename__
        await self.session.execute(text(f"DROP INDEX IF EXISTS ix_{table}_cf_{_checked_key(key)}"))
