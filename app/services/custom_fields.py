"""Custom fields (contract section 17): an organization's definitions, and the rules of the
values its contacts, companies and deals carry in `custom_fields`.

**Definitions** are managed by owners and admins (`MANAGE_CUSTOM_FIELDS`; API keys by the same
table) and read by every member. `entity`, `key` and `type` never change: values already
stored keep meaning what they meant. PATCH may change `label`, `required` and `options`;
removing an option a record (in the trash too) still holds is refused (409
`CUSTOM_FIELD_OPTION_IN_USE`), so no stored value is ever outside its options. Making a field
required is not retroactive: records without a value keep being accepted by PATCHes that do
not touch it; a new record needs it, and no PATCH may remove it.

**Deleting** a definition removes its values from every record of that entity in the
organization in the same transaction, by one statement (`CustomFieldRepository.remove_values`);
each record that had a value gets a new `updated_at` (so a new `ETag`), the cached deal lists
and totals are dropped, and the one `custom_field.deleted` event stands for those changes (no
`*.updated` event per record).

**Values** are checked against the definitions by `checked_values` (a 422 names the key in
`loc`) and stored typed, so that the database compares them rightly (see
`app.repositories.custom_fields`): text and select as strings; number as a JSON number; money
as a JSON number with at most 2 decimals and 12 digits before the point, never negative;
date as `YYYY-MM-DD` text; boolean as a JSON boolean; multiselect as an array of distinct
options, in the definition's order."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import (
    CustomFieldKeyTaken,
    CustomFieldLimitReached,
    CustomFieldNotFound,
    CustomFieldOptionInUse,
    CustomFieldsInvalid,
)
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.models import CustomFieldDefinition, CustomFieldEntity, CustomFieldType
from app.repositories.base import RowLock
from app.repositories.custom_fields import CustomFieldFilter, CustomFieldRepository, FilterOp
from app.schemas.common import Money, safe_text
from app.schemas.custom_field import CustomFieldCreate, CustomFieldRead, CustomFieldUpdate
from app.schemas.event import EventType
from app.services import events
from app.services.read_models import ReadModels

MAX_TEXT_LENGTH = 1000
# Per organization and entity: every definition is read by each write of such a record.
MAX_DEFINITIONS = 100
# Numbers beyond this lose integer precision in a 64-bit float (JavaScript clients, SQLite).
MAX_NUMBER = 2**53
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONEY = TypeAdapter(Money)

Definitions = Mapping[str, CustomFieldDefinition]


class _Invalid(ValueError):
    pass


# --- values ------------------------------------------------------------------------------


def _money(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Invalid("must be an amount")
    try:
        return _MONEY.validate_python(value)
    except ValidationError as exc:
        raise _Invalid(exc.errors()[0]["msg"]) from None


def _stored_money(amount: Decimal) -> int | float:
    # At most 14 significant digits: a double holds and prints each such value exactly (as
    # `amount` is rendered), so the JSON text, and the jsonb numeric read from it, is exact.
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def stored_value(definition: CustomFieldDefinition, value: Any) -> Any:
    """`value` checked against `definition`, in the form it is stored and answered in;
    `_Invalid` with the reason otherwise. Not for `None` (no value)."""
    kind = definition.type
    if kind is CustomFieldType.TEXT:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        if len(value) > MAX_TEXT_LENGTH:
            raise _Invalid(f"must be at most {MAX_TEXT_LENGTH} characters")
        return _safe(value)
    if kind is CustomFieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("must be a number")
        # The range first: an integer of any size compares with it (a float of it may not exist).
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_NUMBER:
            raise _Invalid(f"must be a finite number between -{MAX_NUMBER} and {MAX_NUMBER}")
        return value
    if kind is CustomFieldType.MONEY:
        return _stored_money(_money(value))
    if kind is CustomFieldType.DATE:
        if not isinstance(value, str) or not _DATE.match(value):
            raise _Invalid("must be a date in YYYY-MM-DD format")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise _Invalid("must be a date in YYYY-MM-DD format") from None
        return value
    if kind is CustomFieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise _Invalid("must be true or false")
        return value
    options = definition.options or []
    if kind is CustomFieldType.SELECT:
        if not isinstance(value, str) or value not in options:
            raise _Invalid(f"must be one of {options}")
        return value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid("must be a list of options")
    if len(set(value)) != len(value):
        raise _Invalid("must not repeat an option")
    unknown = [item for item in value if item not in options]
    if unknown:
        raise _Invalid(f"{unknown} not among the options {options}")
    return [option for option in options if option in value]


def _safe(text: str) -> str:
    try:
        return safe_text(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _error(loc: Sequence[str | int], key: str, message: str) -> dict[str, Any]:
    return {"loc": [*loc, key], "msg": message, "type": "custom_field"}


def _same(definition: CustomFieldDefinition, current: Any, stored: Any) -> bool:
    """Whether `stored` is the value the record has: a multiselect's options in another order
    are the same value (its options may have been reordered since it was written)."""
    if definition.type is CustomFieldType.MULTISELECT and isinstance(current, list):
        return set(current) == set(stored)
    return bool(current == stored)


def checked_values(
    definitions: Definitions,
    given: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None = None,
    *,
    loc: Sequence[str | int] = ("body", "custom_fields"),
) -> dict[str, Any]:
    """The record's values after `given` (None: nothing sent) is applied to `current` (None:
    a new record), as stored. Keys given replace; `None` removes a value; keys not given
    stay. A new record needs every required field; no write may remove a required value.
    All problems at once: `CustomFieldsInvalid`, each with its key in `loc`."""
    values = dict(current or {})
    errors: list[dict[str, Any]] = []
    for key, value in (given or {}).items():
        definition = definitions.get(key)
        if definition is None:
            errors.append(_error(loc, key, "no such custom field"))
        elif value is None:
            if definition.required:
                errors.append(_error(loc, key, "is required and cannot be removed"))
            values.pop(key, None)
        else:
            try:
                stored = stored_value(definition, value)
            except _Invalid as exc:
                errors.append(_error(loc, key, str(exc)))
                continue
            if definition.required and stored in ("", []):
                errors.append(_error(loc, key, "is required and cannot be empty"))
            elif not _same(definition, values.get(key), stored):
                values[key] = stored
    if current is None:
        for key, definition in definitions.items():
            if (
                definition.required
                and key not in values
                and not any(error["loc"][-1] == key for error in errors)
            ):
                errors.append(_error(loc, key, "is required"))
    if errors:
        raise CustomFieldsInvalid(errors)
    return values


async def definitions_of(
    session: AsyncSession,
    organization_id: int,
    entity: CustomFieldEntity,
    *,
    lock: RowLock | None = None,
) -> dict[str, CustomFieldDefinition]:
    return await CustomFieldRepository(session, organization_id).of_entity(entity, lock=lock)


async def values_for(
    session: AsyncSession,
    organization_id: int,
    entity: CustomFieldEntity,
    given: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`checked_values` against the organization's definitions (read only if needed).

    The definitions are share-locked until the write commits: a PATCH or DELETE of one of
    them (which locks it for update) waits for the write, and a write after it sees its
    result, so no value outside a field's options, nor of a deleted field, is ever stored."""
    if not given and current is not None:
        return dict(current)
    definitions = await definitions_of(session, organization_id, entity, lock=RowLock.SHARE)
    return checked_values(definitions, given, current)


async def lock_definitions_first(
    session: AsyncSession, organization_id: int, entity: CustomFieldEntity, data: BaseModel
) -> Definitions:
    """Before a PATCH locks its record: share-lock and read the definitions it will check its
    values against (`changed_values`), if it sends any (else none). Every write takes the two
    locks in this order, as a definition's deletion does (the definition, then the records
    holding its values), so the two wait for each other instead of deadlocking."""
    if "custom_fields" not in data.model_fields_set:
        return {}
    return await definitions_of(session, organization_id, entity, lock=RowLock.SHARE)


def changed_values(
    definitions: Definitions, given: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A PATCH's record values after its `custom_fields` (`given`) is applied, checked against
    the `definitions` `lock_definitions_first` read; None when they change nothing."""
    if not given:
        return None
    values = checked_values(definitions, given, current)
    return values if values != current else None


def import_cell(definition: CustomFieldDefinition, cell: Any) -> Any:
    """An import file's cell of a `cf.<key>` column as the API would be sent it: CSV cells
    are text (a number, `true`/`false`, a multiselect as a JSON array as exports write it,
    or one option); JSON Lines values are taken as they are."""
    if not isinstance(cell, str):
        return cell
    kind = definition.type
    text = cell.strip()
    if kind is CustomFieldType.NUMBER:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return cell
    if kind is CustomFieldType.BOOLEAN and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind is CustomFieldType.MULTISELECT:
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return cell
        return [text]
    return cell


# --- filters and sorting of the lists ------------------------------------------------------


class _Filtered(Protocol):
    @property
    def custom(self) -> tuple[CustomFieldFilter, ...]: ...

    @property
    def custom_order(self) -> str | None: ...


F = TypeVar("F", bound=_Filtered)

_RANGED = frozenset({CustomFieldType.NUMBER, CustomFieldType.MONEY, CustomFieldType.DATE})


# A number as JSON writes one (no `_` separators, spaces, `inf` or `nan`, which float() takes).
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _filter_value(definition: CustomFieldDefinition, where: CustomFieldFilter) -> Any:
    text = _safe(where.text)
    kind = definition.type
    if where.op is not FilterOp.EQ and kind not in _RANGED:
        raise _Invalid("ranges (.min, .max) apply to number, money and date fields only")
    if kind is CustomFieldType.NUMBER:
        if not _NUMBER.fullmatch(text):
            raise _Invalid("must be a number")
        number: int | float = int(text) if text.lstrip("-").isdigit() else float(text)
        return stored_value(definition, number)
    if kind is CustomFieldType.MONEY:
        return _money(text)
    if kind is CustomFieldType.BOOLEAN:
        if text not in ("true", "false"):
            raise _Invalid("must be true or false")
        return text == "true"
    if kind is CustomFieldType.MULTISELECT:
        return stored_value(definition, [text])[0]
    return stored_value(definition, text)


def resolve_filters(definitions: Definitions, filters: F) -> F:
    """`filters` with each `cf.<key>` filter read as its field's type; `CustomFieldsInvalid`
    (the query parameter in `loc`) for an unknown key, a value that does not parse, or a
    sort by a multiselect."""
    errors: list[dict[str, Any]] = []
    resolved = []
    for where in filters.custom:
        name = f"cf.{where.key}" + ("" if where.op is FilterOp.EQ else f".{where.op.value}")
        definition = definitions.get(where.key)
        if definition is None:
            errors.append(
                {"loc": ["query", name], "msg": "no such custom field", "type": "custom_field"}
            )
            continue
        try:
            value = _filter_value(definition, where)
        except _Invalid as exc:
            errors.append({"loc": ["query", name], "msg": str(exc), "type": "custom_field"})
            continue
        resolved.append(replace(where, type=definition.type, value=value))
    if filters.custom_order is not None:
        definition = definitions.get(filters.custom_order)
        message = None
        if definition is None:
            message = "no such custom field"
        elif definition.type is CustomFieldType.MULTISELECT:
            message = "a multiselect field cannot be sorted by"
        if message:
            errors.append({"loc": ["query", "order_by"], "msg": message, "type": "custom_field"})
    if errors:
        raise CustomFieldsInvalid(errors)
    return replace(filters, custom=tuple(resolved))  # type: ignore[type-var]


async def resolved(
    session: AsyncSession, organization_id: int, entity: CustomFieldEntity, filters: F
) -> F:
    """`resolve_filters` against the organization's definitions (read only if needed)."""
    if not filters.custom and filters.custom_order is None:
        return filters
    return resolve_filters(await definitions_of(session, organization_id, entity), filters)


# --- the definitions ------------------------------------------------------------------------


class CustomFieldService:
    def __init__(self, session: AsyncSession, ctx: TenantContext, cache: Cache) -> None:
        self.session = session
        self.ctx = ctx
        self.fields = CustomFieldRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)

    async def list(self, entity: CustomFieldEntity | None) -> Sequence[CustomFieldDefinition]:
        return await self.fields.list(entity)

    async def get(
        self, definition_id: int, *, lock: RowLock | None = None
    ) -> CustomFieldDefinition:
        definition = await self.fields.get(definition_id, lock=lock)
        if definition is None:
            raise CustomFieldNotFound()
        return definition

    async def create(self, data: CustomFieldCreate) -> CustomFieldDefinition:
        self.ctx.require(Permission.MANAGE_CUSTOM_FIELDS)
        if await self.fields.count_of(data.entity) >= MAX_DEFINITIONS:
            raise CustomFieldLimitReached()
        definition = CustomFieldDefinition(
            entity=data.entity,
            key=data.key,
            label=data.label,
            type=data.type,
            options=data.options,
            required=data.required,
        )
        try:
            async with self.session.begin_nested():
                await self.fields.add(definition)
                created = _read(definition)
                events.record(self.session, self.ctx, EventType.CUSTOM_FIELD_CREATED, created)
        except IntegrityError as exc:
            raise CustomFieldKeyTaken() from exc
        return definition

    async def update(self, definition_id: int, data: CustomFieldUpdate) -> CustomFieldDefinition:
        # Found first (another organization's id is a 404 for everyone), then the role.
        definition = await self.get(definition_id, lock=RowLock.UPDATE)
        self.ctx.require(Permission.MANAGE_CUSTOM_FIELDS)
        changes = {
            field: value
            for field, value in data.changes().items()
            if value != getattr(definition, field)
        }
        if "options" in changes:
            if definition.type not in (CustomFieldType.SELECT, CustomFieldType.MULTISELECT):
                raise CustomFieldsInvalid(
                    [
                        {
                            "loc": ["body", "options"],
                            "msg": f"a {definition.type.value} field takes no options",
                            "type": "custom_field",
                        }
                    ]
                )
            for option in set(definition.options or []) - set(changes["options"]):
                if await self.fields.value_in_use(definition, option):
                    raise CustomFieldOptionInUse(
                        f"Records still hold the option {option!r}; change them first."
                    )
        if not changes:
            return definition
        before = _read(definition)
        for field, value in changes.items():
            setattr(definition, field, value)
        await self.session.flush()
        events.record_update(
            self.session, self.ctx, EventType.CUSTOM_FIELD_UPDATED, before, _read(definition)
        )
        return definition

    async def delete(self, definition_id: int) -> None:
        """Deletes the definition and its values from every record: see the module."""
        definition = await self.get(definition_id, lock=RowLock.UPDATE)
        self.ctx.require(Permission.MANAGE_CUSTOM_FIELDS)
        gone = _read(definition)
        entity = definition.entity
        await self.fields.remove_values(definition)
        events.changed_in_bulk(self.session, entity.value)
        if entity is CustomFieldEntity.DEAL:
            await self.read_models.deal_field_removed(definition.key)
        elif entity is CustomFieldEntity.CONTACT:
            await self.read_models.contacts_written()
        await self.fields.delete(definition)
        events.record(self.session, self.ctx, EventType.CUSTOM_FIELD_DELETED, gone)


def _read(definition: CustomFieldDefinition) -> CustomFieldRead:
    return CustomFieldRead.model_validate(definition)
