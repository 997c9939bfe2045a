from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import pycountry
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from app.models.enums import DealStatus
from app.schemas.common import Id, InputSchema, Money, MoneyOut, NotNullOnPatch, OutputSchema, Title
from app.schemas.custom_field import CustomValues
from app.schemas.pipeline import DealStageKey


def _iso_4217(code: str) -> str:
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError("must be an ISO 4217 currency code")
    return code


CurrencyCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$"),
    AfterValidator(_iso_4217),
]


class DealOrderBy(StrEnum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    AMOUNT = "amount"
    TITLE = "title"


class DealCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "contact_id": 1,
                    "title": "Website redesign",
                    "amount": "12500.00",
                    "currency": "EUR",
                }
            ]
        }
    )

    contact_id: Id
    title: Title
    amount: Money = Decimal("0.00")
    currency: CurrencyCode = "USD"
    company_id: Id | None = Field(
        default=None, description="A company of this organization (else 400 `COMPANY_NOT_FOUND`)."
    )
    pipeline_id: Id | None = Field(
        default=None,
        description="A pipeline of this organization (else 400 `PIPELINE_NOT_FOUND`); the "
        "default pipeline when left out. The deal starts at its first stage.",
    )
    custom_fields: CustomValues = Field(default_factory=dict)


class DealUpdate(NotNullOnPatch):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "in_progress", "stage": "proposal"}]}
    )

    _not_null = (
        "title",
        "amount",
        "currency",
        "status",
        "stage",
        "contact_id",
        "owner_id",
        "pipeline_id",
        "custom_fields",
    )

    title: Title | None = None
    amount: Money | None = None
    currency: CurrencyCode | None = None
    status: DealStatus | None = None
    stage: DealStageKey | None = None
    contact_id: Id | None = None
    owner_id: Id | None = None
    company_id: Id | None = Field(
        default=None,
        description="A company of this organization (else 400 `COMPANY_NOT_FOUND`); null "
        "leaves the deal without a company.",
    )
    pipeline_id: Id | None = Field(
        default=None,
        description="Move the deal to this pipeline of this organization (else 400 "
        "`PIPELINE_NOT_FOUND`): to `stage` if given (one of the new pipeline's), else to the "
        "new pipeline's first stage.",
    )
    custom_fields: CustomValues | None = None


class DealRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "organization_id": 1,
                    "contact_id": 3,
                    "owner_id": 1,
                    "title": "Website redesign",
                    "amount": 12500.0,
                    "currency": "EUR",
                    "status": "in_progress",
                    "stage": "proposal",
                    "created_at": "2026-01-15T10:00:00Z",
                    "updated_at": "2026-01-20T09:30:00Z",
                    "pipeline_id": 1,
                    "company_id": 2,
                }
            ]
        }
    )

    id: int
    organization_id: int
    contact_id: int
    owner_id: int
    title: str
    amount: MoneyOut
    currency: str
    status: DealStatus
    stage: DealStageKey
    created_at: datetime
    updated_at: datetime
    # After these, so that an export's columns before them keep their places (and
    # `company_id` stays last, where section 17's first part put it).
    pipeline_id: int
    company_id: int | None
    custom_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Custom field values by key (see `/custom-fields`); `{}` when none.",
    )
