from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from app.schemas.common import Id, InputSchema, OutputSchema
from app.schemas.contact import ContactRead

# The most contacts one merge takes in: a merge is one transaction, kept short.
MAX_MERGE_SOURCES = 50
# The most contacts a duplicate group lists (its `count` says how many share the key).
MAX_GROUP_CONTACTS = 50

_CONTACT_EXAMPLE = ContactRead.model_json_schema()["examples"][0]


class MatchReason(StrEnum):
    EMAIL = "email"
    PHONE = "phone"


class DuplicateGroup(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "jane.cooper@example.com",
                    "reason": "email",
                    "count": 2,
                    "contacts": [
                        _CONTACT_EXAMPLE,
                        {**_CONTACT_EXAMPLE, "id": 9, "email": "Jane.Cooper@Example.COM"},
                    ],
                }
            ]
        }
    )

    key: str = Field(
        description="The normalised email (trimmed, case-folded) or phone (E.164 where it "
        "parses, else its digits) the contacts share."
    )
    reason: MatchReason
    count: int = Field(description="How many contacts share the key.")
    contacts: list[ContactRead] = Field(
        description=f"The first {MAX_GROUP_CONTACTS} of them, oldest (lowest id) first."
    )


def _distinct(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("source_ids must not repeat an id")
    return ids


class ContactMerge(InputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [{"source_ids": [9, 12]}]})

    source_ids: Annotated[
        list[Id],
        Field(min_length=1, max_length=MAX_MERGE_SOURCES),
        AfterValidator(_distinct),
    ] = Field(
        description="The duplicates to merge into the contact of the path (distinct, "
        f"1..{MAX_MERGE_SOURCES}); empty fields of the target are filled from them in this order."
    )


class ContactMergeResult(OutputSchema):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "contact": _CONTACT_EXAMPLE,
                    "merged_contact_ids": [9, 12],
                    "moved_deal_ids": [21, 22, 30],
                    "filled_fields": ["phone"],
                }
            ]
        }
    )

    contact: ContactRead = Field(description="The contact merged into, as it is now.")
    merged_contact_ids: list[int] = Field(description="The sources, now deleted.")
    moved_deal_ids: list[int] = Field(description="The deals moved to the contact.")
    filled_fields: list[str] = Field(description="The contact's empty fields filled from them.")
