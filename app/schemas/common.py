"""Shared schema pieces: base classes, constrained types declared once, the page envelope."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

MAX_ID = 2**63 - 1

T = TypeVar("T")


def safe_text(value: str) -> str:
    # PostgreSQL cannot store NUL, and lone surrogates cannot be encoded as UTF-8: refuse both
    # here (422) instead of letting the database fail on them.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


# Constraints come before the safety check, so "   " is stripped first and then refused as too
# short; the AfterValidator keeps NUL and lone surrogates out of the database.
Safe = AfterValidator(safe_text)
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Safe]
Title = Name
Description = Annotated[str, StringConstraints(max_length=5000), Safe]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), Safe]
SearchText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), Safe]
LongText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000), Safe
]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def _money_out(value: Decimal) -> float:
    # At most 14 significant digits: a double represents (and prints) every such value exactly.
    return float(value)


MAX_MONEY = Decimal("999999999999.99")
# Negative zero ("-0", "-0.00") is taken as 0, as the number -0 is.
_MONEY_TEXT = r"^(?:\d{1,12}(?:\.\d{1,2})?|-0(?:\.0{1,2})?)$"


def _money_text(value: Any) -> Any:
    # An amount sent as a string is plain decimal notation, as the document's pattern says:
    # `Decimal` alone would also read " 12", "1e3" and "1_000".
    if isinstance(value, str) and not re.fullmatch(_MONEY_TEXT, value):
        raise ValueError(
            "must be a decimal number with at most 12 digits before the point and 2 after"
        )
    return value


# What `Money` accepts, exactly: pydantic would say `anyOf[number >= 0, string]`, with no bound
# on the digits and no pattern, so a generated client could not check an amount before sending.
MONEY_INPUT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        # At most 2 decimals, but no `multipleOf: 0.01`: validators test it in binary floating
        # point, and several (Python's jsonschema, Ajv) then refuse 0.07 or 1.15.
        {"type": "number", "minimum": 0, "maximum": float(MAX_MONEY)},
        {"type": "string", "pattern": _MONEY_TEXT},
    ],
    "description": "A non-negative amount: at most 12 digits before the decimal point and 2 "
    'after (as a number too: 12.345 is refused). Send it as a string (`"12500.50"`) to keep '
    "it exact whatever the client's number type; a JSON number is accepted too.",
    "examples": ["12500.00"],
}
MONEY_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "number",
    "minimum": 0,
    "maximum": float(MAX_MONEY),
    "description": "An amount, as a JSON number with at most 2 decimals and 14 significant "
    "digits, which a 64-bit float reads back to the same digits: parse it as a decimal, or as "
    "a double and round to cents.",
    "examples": [12500.0],
}

Money = Annotated[
    Decimal,
    BeforeValidator(_money_text),
    Field(ge=0, max_digits=14, decimal_places=2, allow_inf_nan=False),
    AfterValidator(lambda value: value + 0),  # -0 becomes 0
    PlainSerializer(_money_out, return_type=float, when_used="json"),
    WithJsonSchema(MONEY_INPUT_SCHEMA, mode="validation"),
]
MoneyOut = Annotated[
    Decimal,
    PlainSerializer(_money_out, return_type=float, when_used="json"),
    WithJsonSchema(MONEY_OUTPUT_SCHEMA, mode="serialization"),
]


_NOT_A_DATE = "must be a date in YYYY-MM-DD format (or an ISO 8601 datetime)"


def _calendar_date(value: Any) -> Any:
    """A date as YYYY-MM-DD, or an ISO 8601 datetime reduced to its UTC date.

    Clients often send a datetime where a date is meant (JavaScript's `toISOString()`:
    `2026-01-15T10:00:00.000Z`). One with an offset is converted to UTC first; a naive one is
    taken as UTC. Pydantic would also read numbers as Unix timestamps: those stay refused."""
    if isinstance(value, datetime):
        return _utc_date(value)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value):
            return value
        if _ISO_DATETIME.fullmatch(value):
            try:
                moment = datetime.fromisoformat(value.upper())  # 3.11 reads only `T` and `Z`
            except ValueError:  # 2026-02-30T10:00, 25:00 ...
                pass
            else:
                return _utc_date(moment)
    raise ValueError(_NOT_A_DATE)


def _utc_date(moment: datetime) -> date:
    if moment.tzinfo is None:
        return moment.date()
    try:
        return moment.astimezone(UTC).date()
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is in the year 10000
        raise ValueError("must be a date between 1900-01-01 and 9999-12-30") from None


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# What `datetime.fromisoformat` reads, narrowed to the extended format clients send: a `T`,
# hours and minutes, optional seconds and fraction, optional `Z` or ±HH:MM offset.
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:[Zz]|[+-]\d{2}:\d{2})?"
)
# Outside this window a date is almost certainly a typo; it also keeps date arithmetic safe.
DueDate = Annotated[
    date,
    BeforeValidator(_calendar_date),
    Field(ge=date(1900, 1, 1), le=date(9999, 12, 30)),
    # JSON Schema has no bounds for dates (pydantic would write non-standard `ge`/`le`).
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "description": "A date, YYYY-MM-DD, from 1900-01-01 to 9999-12-30 (an ISO 8601 "
            "datetime is read as its UTC date).",
            "examples": ["2030-01-15"],
        },
        mode="validation",
    ),
]


class InputSchema(BaseModel):
    """Request bodies: unknown fields are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class OutputSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(OutputSchema, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    pages: int

    @classmethod
    def build(cls, items: list[T], total: int, page: int, page_size: int) -> Page[T]:
        return cls(
            items=items,
            total=total,
            page=page,
            page_size=page_size,
            pages=math.ceil(total / page_size) if total else 0,
        )


class CursorPage(OutputSchema, Generic[T]):
    """A list in cursor mode (`limit`, `cursor`): no total (counting costs a pass over every
    matching row); `next_cursor` continues the list, null on its last page."""

    items: list[T]
    next_cursor: str | None
    limit: int


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


def drop_null_branch(schema: dict[str, Any]) -> None:
    """`anyOf[X, null]` becomes X (keeping the outer title and description): for a JSON schema
    of something that is never null."""
    branches = schema.get("anyOf")
    if branches is None or {"type": "null"} not in branches:
        return
    rest = [branch for branch in branches if branch != {"type": "null"}]
    del schema["anyOf"]
    if len(rest) == 1:
        schema.update({**rest[0], **schema})
    else:
        schema["anyOf"] = rest


class NotNullOnPatch(InputSchema):
    """A PATCH body: fields left out stay as they are; fields named in `_not_null` may be
    left out but not sent as `null` (that would mean "clear a required value")."""

    _not_null: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="after")
    @classmethod
    def _reject_null(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for fields that were sent, so the error points at the field itself.
        if value is None and info.field_name in cls._not_null:
            raise ValueError(f"{info.field_name} cannot be null")
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The document says what the validator accepts: a `_not_null` field is optional but
        not nullable (no `null` branch, no `default: null`)."""
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        properties = target.get("properties", {})
        for name in cls._not_null:
            prop = properties.get(name)
            if prop is None:
                continue
            prop.pop("default", None)
            drop_null_branch(prop)
        return json_schema

    def changes(self) -> dict[str, Any]:
        """Only the fields the client actually sent."""
        return {name: getattr(self, name) for name in self.model_fields_set}


@dataclass(frozen=True, slots=True)
class CursorParams:
    """Cursor mode: up to `limit` rows after the position `cursor` holds (from the start
    without one)."""

    limit: int = 20
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class PageParams:
    page: int = 1
    page_size: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size
