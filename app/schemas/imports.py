from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import UploadFile
from pydantic import ConfigDict, Field

from app.models.enums import DealStatus
from app.schemas.common import Id, InputSchema, OutputSchema
from app.schemas.contact import ContactCreate, ContactEmail
from app.schemas.deal import DealCreate
from app.schemas.pipeline import DealStageKey


class ImportKind(StrEnum):
    CONTACTS = "contacts"
    DEALS = "deals"


class OnConflict(StrEnum):
    """What a contact row whose email (case-insensitive) is already a contact's does."""

    SKIP = "skip"
    UPDATE = "update"


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (ImportStatus.QUEUED, ImportStatus.RUNNING)


class ImportUpload(InputSchema):
    """The form of `POST /imports` (multipart/form-data)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "file": "name,email\nJane Cooper,jane.cooper@example.com\n",
                    "kind": "contacts",
                    "on_conflict": "update",
                }
            ]
        }
    )

    file: UploadFile = Field(
        description="CSV (UTF-8, with or without BOM; `,` or `;` separated; a header row) "
        "or JSON Lines (one object per line). Named `.csv`, `.jsonl` or `.ndjson`, or "
        "sent as `text/csv` or `application/x-ndjson`."
    )
    kind: ImportKind = Field(description="What each row is.")
    mapping: str | None = Field(
        default=None,
        description='A JSON object from file column to field, e.g. `{"E-mail": "email", '
        '"Id": null}` (null: ignore the column). Other columns match fields by name, '
        "case-insensitively.",
    )
    dry_run: bool = Field(
        default=False, description="Check every row and count what would happen; write nothing."
    )
    on_conflict: OnConflict = Field(
        default=OnConflict.SKIP,
        description="A contact row whose email (case-insensitive) is already a contact's: "
        "leave that contact (`skip`) or set the row's fields on it (`update`).",
    )


class ContactImportRow(ContactCreate):
    """A contact row: `POST /contacts`'s fields, and an owner (the importer when absent)."""

    owner_id: Id | None = None


class DealImportRow(DealCreate):
    """A deal row: `POST /deals`'s fields (the contact by id or by email), plus the status,
    stage and owner a `PATCH` could set."""

    contact_id: Id | None = None  # type: ignore[assignment]
    contact_email: ContactEmail | None = None
    status: DealStatus | None = None
    stage: DealStageKey | None = None
    owner_id: Id | None = None


CONTACT_FIELDS = tuple(ContactImportRow.model_fields)
DEAL_FIELDS = tuple(DealImportRow.model_fields)


_ERROR_EXAMPLE: dict[str, Any] = {
    "row": 4,
    "column": "email",
    "code": "VALIDATION_ERROR",
    "message": "value is not a valid email address: An email address must have an @-sign.",
}


class ImportErrorRead(OutputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_ERROR_EXAMPLE]})

    row: int = Field(
        description="1-based data row: the header is not counted, blank lines are skipped."
    )
    column: str | None = Field(description="The file's column (or JSON key), when one is to blame.")
    code: str = Field(description="`VALIDATION_ERROR`, or the API's code for the rule refused.")
    message: str


_IMPORT_EXAMPLE: dict[str, Any] = {
    "id": 12,
    "organization_id": 1,
    "creator_id": 1,
    "kind": "contacts",
    "file_format": "csv",
    "filename": "contacts.csv",
    "dry_run": False,
    "on_conflict": "skip",
    "status": "running",
    "rows_total": 2500,
    "rows_done": 1000,
    "created": 990,
    "updated": 0,
    "skipped": 5,
    "failed": 5,
    "error": None,
    "cancel_requested": False,
    "created_at": "2026-01-15T10:00:00Z",
    "started_at": "2026-01-15T10:00:01Z",
    "finished_at": None,
}


class ImportRead(OutputSchema):
    model_config = ConfigDict(json_schema_extra={"examples": [_IMPORT_EXAMPLE]})

    id: int
    organization_id: int
    creator_id: int
    kind: ImportKind
    file_format: str
    filename: str | None
    dry_run: bool
    on_conflict: OnConflict
    status: ImportStatus
    rows_total: int
    rows_done: int
    created: int
    updated: int
    skipped: int
    failed: int
    error: str | None = Field(default=None, description="Why the whole import failed, if it did.")
    cancel_requested: bool = Field(description="Cancelled, or to stop after its current batch.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None = None


class ImportDetail(ImportRead):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_IMPORT_EXAMPLE, "errors": [_ERROR_EXAMPLE]}]}
    )

    errors: list[ImportErrorRead] = Field(
        description="The first errors, by row (all of them: `GET /imports/{id}/errors`)."
    )
