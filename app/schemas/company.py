from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from app.schemas.common import Id, InputSchema, Name, NotNullOnPatch, OutputSchema, Phone, Safe
from app.schemas.custom_field import CustomValues

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _ascii_label(label: str) -> str:
    """The label's ASCII form (`bücher` -> `xn--bcher-kva`); "" if it has none."""
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def _host_name(value: str) -> str:
    """A host name such as `acme.com` (RFC 1123; internationalised names as written):
    lower-cased, without a trailing dot. A URL, an address with a port or path, a bare word
    (`localhost`) or an IP address is refused."""
    host = unicodedata.normalize("NFC", value).lower().removesuffix(".")
    labels = host.split(".")
    if len(labels) < 2:
        raise ValueError("must be a domain name such as example.com")
    ascii_labels = [_ascii_label(label) for label in labels]
    if not all(_LABEL.fullmatch(label) for label in ascii_labels):
        raise ValueError(
            "must be a domain name such as example.com (letters, digits and hyphens between "
            "dots; no scheme, port or path)"
        )
    if labels[-1].isdigit():
        raise ValueError("must be a domain name, not an IP address")
    if len(".".join(ascii_labels)) > 253:
        raise ValueError("must be at most 253 characters (in its ASCII form)")
    return host


Domain = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=253),
    Safe,
    AfterValidator(_host_name),
    Field(
        description="The company's domain name, such as `acme.com`; stored lower-cased, "
        "without a trailing dot.",
        examples=["acme.com"],
    ),
]
Address = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), Safe
]


class CompanyOrderBy(StrEnum):
    CREATED_AT = "created_at"
    NAME = "name"


class CompanyCreate(InputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Acme Corporation",
                    "domain": "acme.com",
                    "phone": "+1 415 555 0100",
                    "address": "1 Market Street, San Francisco, CA 94105",
                }
            ]
        }
    )

    name: Name
    domain: Domain | None = None
    phone: Phone | None = None
    address: Address | None = None
    custom_fields: CustomValues = Field(default_factory=dict)


class CompanyUpdate(NotNullOnPatch):
    model_config = ConfigDict(json_schema_extra={"examples": [{"domain": "acme.io"}]})

    _not_null = ("name", "owner_id", "custom_fields")

    name: Name | None = None
    domain: Domain | None = None
    phone: Phone | None = None
    address: Address | None = None
    owner_id: Id | None = None
    custom_fields: CustomValues | None = None


class CompanyRead(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 2,
                    "organization_id": 1,
                    "owner_id": 1,
                    "name": "Acme Corporation",
                    "domain": "acme.com",
                    "phone": "+1 415 555 0100",
                    "address": "1 Market Street, San Francisco, CA 94105",
                    "contacts_count": 3,
                    "open_deals_count": 1,
                    "created_at": "2026-01-15T10:00:00Z",
                    "updated_at": "2026-01-15T10:00:00Z",
                }
            ]
        }
    )

    id: int
    organization_id: int
    owner_id: int
    name: str
    domain: str | None
    phone: str | None
    address: str | None
    contacts_count: int = Field(description="Its contacts (not those in the trash).")
    open_deals_count: int = Field(
        description="Deals naming it that are open (`new` or `in_progress`; not in the trash)."
    )
    created_at: datetime
    updated_at: datetime
    custom_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="Custom field values by key (see `/custom-fields`); `{}` when none.",
    )
