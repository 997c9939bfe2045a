from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.models.custom_field import (
    CUSTOM_FIELD_KEY,
    OPTION_MAX_LENGTH,
    CustomFieldEntity,
    CustomFieldType,
)
from app.schemas.common import InputSchema, Name, NotNullOnPatch, OutputSchema, Safe

CHOICE_TYPES = frozenset({CustomFieldType.SELECT, CustomFieldType.MULTISELECT})
MAX_OPTIONS = 100

CustomFieldKey = Annotated[
    str,
    StringConstraints(pattern=CUSTOM_FIELD_KEY),
    Field(description="A lower-case identifier: a letter, then up to 39 letters, digits or `_`."),
]
# `order_by=cf.<key>`: a list sorted by a custom field.
CustomFieldOrder = Annotated[
    str, StringConstraints(pattern=r"^cf\.[a-z][a-z0-9_]{0,39}$", max_length=43)
]


def _one_order_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # `order_by` is one of the list's columns or `cf.<key>`: a wrong value is one error at
    # `order_by`, as before custom fields, not one per alternative of the union.
    try:
        return handler(value)
    except ValidationError as exc:
        expected = next(
            (str(e["ctx"]["expected"]) for e in exc.errors() if e["type"] == "enum"), None
        )
        if expected is None:
            raise
        raise PydanticCustomError(
            "enum", "Input should be {expected} or cf.<key>", {"expected": expected}
        ) from None


OneOrderError = WrapValidator(_one_order_error)
Option = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=OPTION_MAX_LENGTH),
    Safe,
]
Options = Annotated[list[Option], Field(min_length=1, max_length=MAX_OPTIONS)]
# What records carry: `{key: value}`, each value checked against its definition by the service.
CustomValues = Annotated[
    dict[CustomFieldKey, Any],
    Field(
        description="Custom field values by key (see `/custom-fields`), each of its field's "
        "type; on PATCH, keys given replace, `null` removes a value, keys not given stay.",
        max_length=200,
    ),
]


def _unique(options: list[str] | None) -> list[str] | None:
    if options is not None and len(set(options)) != len(options):
        raise ValueError("options must be unique")
    return options


class CustomFieldCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entity": "deal",
                    "key": "source",
                    "label": "Lead source",
                    "type": "select",
                    "options": ["web", "referral", "event"],
                }
            ]
        }
    )

    entity: CustomFieldEntity
    key: CustomFieldKey
    label: Name
    type: CustomFieldType
    options: Options | None = Field(
        default=None, description="Required (non-empty, unique) for `select` and `multiselect`."
    )
    required: StrictBool = False

    @model_validator(mode="after")
    def _options_fit_type(self) -> CustomFieldCreate:
        if self.type in CHOICE_TYPES and not self.options:
            raise ValueError(f"a {self.type.value} field needs options")
        if self.type not in CHOICE_TYPES and self.options is not None:
            raise ValueError(f"a {self.type.value} field takes no options")
        _unique(self.options)
        return self


class CustomFieldUpdate(NotNullOnPatch):
    """`entity`, `key` and `type` cannot change (create another field instead)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"label": "Source", "required": True}]}
    )

    _not_null = ("label", "required", "options")

    label: Name | None = None
    required: StrictBool | None = None
    options: Options | None = Field(
        default=None,
        description="The new full list, for `select` and `multiselect` only. Removing an "
        "option a record still holds is refused (409 `CUSTOM_FIELD_OPTION_IN_USE`).",
    )

    @model_validator(mode="after")
    def _unique_options(self) -> CustomFieldUpdate:
        _unique(self.options)
        return self


class CustomFieldRead(OutputSchema):
    id: int
    organization_id: int
    entity: CustomFieldEntity
    key: str
    label: str
    type: CustomFieldType
    options: list[str] | None
    required: bool
    created_at: datetime
    updated_at: datetime
