"""Imports: a file of contacts or deals, applied row by row by the background worker
(`app.jobs.imports`) under every rule the API applies to the same writes.

**Rows.** Each row is validated by the API's own schemas (`ContactCreate`, `DealCreate` and
the status, stage and owner a PATCH could set) and written by the same rules as
`POST /contacts` and `POST /deals` (owner reassignment needs a manager and a member as the
new owner; a won deal needs an amount; a deal's contact must be a contact of this
organization). A row that fails writes nothing and is reported (row, column, code); the
other rows go on.

**Contacts** are matched by email, case-insensitively, against the organization's contacts
(the oldest when several share it) and the rows before them: `on_conflict=skip` leaves the
match as it is, `update` sets the fields the row has (non-empty cells) like a PATCH would,
with its rules (members only update their own contacts). A match whose fields already have
the row's values is `skipped` (nothing written). They are written in bulk: one lookup, one
INSERT, the updates, and the events of a batch in one transaction.

Both may carry a `company_id`: a company of this organization, as `POST /contacts` and
`POST /deals` require (else the row fails with `COMPANY_NOT_FOUND`), and custom field values
in columns `cf.<key>` (`custom_fields_of`), checked as the API checks them (a bad value, an
unknown key or a missing required field fails the row, `VALIDATION_ERROR` at that column). A
deal may carry a `pipeline_id` (the default pipeline when empty), and its `stage` must be one
of that pipeline's (`STAGE_NOT_IN_PIPELINE`; a key of no pipeline: `VALIDATION_ERROR`).

**Deals** refer to their contact by `contact_id` or `contact_email`; every row is a new deal
(`on_conflict` does not apply). Each is written as `POST /deals` writes it (its running
totals, its event), in a savepoint of the batch.

**Events** of the rows are the API's (`contact.created`, `contact.updated`, `deal.created`),
in the batch's transaction, with the importer as actor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import (
    AppError,
    CompanyReferenceInvalid,
    ContactReferenceInvalid,
    CustomFieldsInvalid,
    DealWonRequiresAmount,
    ImportAlreadyFinished,
    ImportNotFound,
    OwnerNotAMember,
    PermissionDenied,
    PipelineReferenceInvalid,
    StageNotInPipeline,
    StageRollbackForbidden,
    UnknownStage,
)
from app.core.permissions import Permission
from app.core.tenancy import TenantContext
from app.core.text import fold_fields
from app.db.types import utcnow
from app.models import Contact, CustomFieldEntity, Import, ImportRowError
from app.repositories.base import RowLock
from app.repositories.companies import CompanyRepository
from app.repositories.contacts import ContactRepository
from app.repositories.imports import ImportRepository, Progress, RowError
from app.schemas.common import PageParams
from app.schemas.contact import ContactRead
from app.schemas.deal import DealCreate
from app.schemas.event import EventType
from app.schemas.imports import (
    CONTACT_FIELDS,
    DEAL_FIELDS,
    ContactImportRow,
    DealImportRow,
    ImportKind,
    ImportStatus,
    OnConflict,
)
from app.services import events
from app.services.contacts import ensure_owner_assignable
from app.services.custom_fields import (
    Definitions,
    checked_values,
    definitions_of,
    import_cell,
)
from app.services.deals import DealService
from app.services.import_files import FileFormat, ParsedFile, Record, detect_format, parse
from app.services.import_files import parse_mapping as read_mapping
from app.services.policies import ensure_can_modify
from app.services.read_models import ReadModels

FIRST_ERRORS = 20
FIELDS = {ImportKind.CONTACTS: CONTACT_FIELDS, ImportKind.DEALS: DEAL_FIELDS}
# Columns a CSV header must have (one of each group), or every row would fail.
REQUIRED = {
    ImportKind.CONTACTS: (("name",),),
    ImportKind.DEALS: (("title",), ("contact_id", "contact_email")),
}


def parse_file(
    content: bytes, file_format: FileFormat, kind: ImportKind, mapping: str | None
) -> ParsedFile:
    """The file's records (raises `ImportFileInvalid` for a file that cannot be read)."""
    fields = FIELDS[kind]
    return parse(content, file_format, fields, read_mapping(mapping, fields), REQUIRED[kind])


@dataclass(frozen=True, slots=True)
class Upload:
    content: bytes
    filename: str | None
    content_type: str | None
    kind: ImportKind
    mapping: str | None
    dry_run: bool
    on_conflict: OnConflict


class ImportService:
    def __init__(self, session: AsyncSession, ctx: TenantContext) -> None:
        self.session = session
        self.ctx = ctx
        self.imports = ImportRepository(session, ctx.organization_id)

    async def create(self, upload: Upload) -> Import:
        """Queue an import of a readable file: it is read whole first (in a thread), so a file
        that cannot be imported at all is refused (415, 422) with nothing stored."""
        self.ctx.require(Permission.CREATE)
        file_format = detect_format(upload.filename, upload.content_type)
        parsed = await anyio.to_thread.run_sync(
            parse_file, upload.content, file_format, upload.kind, upload.mapping
        )
        mapping = read_mapping(upload.mapping, FIELDS[upload.kind])
        job = Import(
            creator_id=self.ctx.user_id,
            api_key_id=self.ctx.api_key_id,
            kind=upload.kind.value,
            file_format=file_format.value,
            filename=_filename(upload.filename),
            mapping=json.dumps(mapping) if mapping else None,
            dry_run=upload.dry_run,
            on_conflict=upload.on_conflict.value,
            status=ImportStatus.QUEUED.value,
            rows_total=parsed.rows_total,
            rows_done=0,
            created=0,
            updated=0,
            skipped=0,
            failed=0,
            cancel_requested=False,
            attempts=0,
        )
        return await self.imports.add(job, upload.content)

    async def get(self, import_id: int) -> Import:
        job = await self.imports.get(import_id)
        if job is None:
            raise ImportNotFound()
        return job

    async def first_errors(self, job: Import) -> Sequence[ImportRowError]:
        return await self.imports.first_errors(job.id, FIRST_ERRORS)

    async def list(self, page: PageParams) -> tuple[Sequence[Import], int]:
        return await self.imports.list(page)

    async def errors(self, import_id: int, page: PageParams) -> tuple[Sequence[Any], int]:
        job = await self.get(import_id)
        return await self.imports.errors(job.id, page)

    async def cancel(self, import_id: int) -> Import:
        """A queued import is cancelled at once; a running one when its current batch ends
        (what the batches before did stays)."""
        job = await self.imports.get(import_id, lock=True)
        if job is None:
            raise ImportNotFound()
        ensure_can_modify(self.ctx, job.creator_id, "imports")
        if ImportStatus(job.status).finished:
            raise ImportAlreadyFinished()
        job.cancel_requested = True
        if job.status == ImportStatus.QUEUED.value:
            await self.imports.finish(job, ImportStatus.CANCELLED, utcnow())
        await self.session.flush()
        return job


# --- applying rows (the worker's side) ---------------------------------------------------------


@dataclass
class BatchResult:
    progress: Progress = field(default_factory=Progress)
    errors: list[RowError] = field(default_factory=list)

    def fail(self, record: Record, column: str | None, code: str, message: str) -> None:
        self.errors.append(RowError(record.row, column, code, message))

    def failed_row(self) -> None:
        self.progress.failed += 1


def _validation_errors(result: BatchResult, record: Record, exc: ValidationError) -> None:
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else None
        column = record.columns.get(name, name) if name is not None else None
        result.fail(record, column, "VALIDATION_ERROR", error["msg"])
    result.failed_row()


def _refused(result: BatchResult, record: Record, column: str | None, exc: AppError) -> None:
    if isinstance(exc, CustomFieldsInvalid) and exc.errors:
        for error in exc.errors:
            key = f"cf.{error['loc'][-1]}"
            result.fail(record, record.columns.get(key, key), exc.code, error["msg"])
    else:
        result.fail(record, column, exc.code, exc.detail)
    result.failed_row()


def custom_fields_of(
    record: Record, definitions: Definitions
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record's other cells, and its `cf.<key>` cells by key as the API would be sent
    them (None when it has none). The record stays as it is: a batch run again (after a
    write conflict) reads the same cells."""
    fixed: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for name, cell in record.values.items():
        if not name.startswith("cf."):
            fixed[name] = cell
            continue
        key = name.removeprefix("cf.")
        definition = definitions.get(key)
        given[key] = cell if definition is None else import_cell(definition, cell)
    return fixed, given or None


class RowImporter:
    """Applies batches of rows of one import, as `ctx` (the importer)."""

    def __init__(
        self,
        session: AsyncSession,
        ctx: TenantContext,
        cache: Cache,
        kind: ImportKind,
        on_conflict: OnConflict,
    ) -> None:
        self.session = session
        self.ctx = ctx
        self.cache = cache
        self.kind = kind
        self.on_conflict = on_conflict
        self.contacts = ContactRepository(session, ctx.organization_id)
        self.companies = CompanyRepository(session, ctx.organization_id)
        self.read_models = ReadModels(session, ctx.organization_id, cache)
        self._owners: dict[int, AppError | None] = {}

    async def apply(self, records: Sequence[Record]) -> BatchResult:
        """Apply rows from the first of `records` on, in order; `progress.rows` says how many
        were settled (all of them, but for contacts a batch ends before a second new contact
        with the same email: the next batch finds the first one in the database)."""
        if self.kind is ImportKind.CONTACTS:
            return await self._contacts(records)
        return await self._deals(records)

    async def _owner_refusal(self, owner_id: int) -> AppError | None:
        """Why the importer may not make `owner_id` a record's owner (None: they may)."""
        if owner_id not in self._owners:
            try:
                await ensure_owner_assignable(self.session, self.ctx, self.ctx.user_id, owner_id)
                self._owners[owner_id] = None
            except AppError as exc:
                self._owners[owner_id] = exc
        return self._owners[owner_id]

    # --- contacts ---------------------------------------------------------------------------

    async def _contacts(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        valid: list[tuple[Record, ContactImportRow]] = []
        definitions = await definitions_of(
            self.session, self.ctx.organization_id, CustomFieldEntity.CONTACT, lock=RowLock.SHARE
        )
        given: dict[int, dict[str, Any] | None] = {}
        for record in records:
            if record.problem is not None:
                result.fail(record, None, "INVALID_ROW", record.problem)
                result.failed_row()
                continue
            fixed, given[record.row] = custom_fields_of(record, definitions)
            try:
                valid.append((record, ContactImportRow.model_validate(fixed)))
            except ValidationError as exc:
                _validation_errors(result, record, exc)
        emails = {row.email.lower() for _, row in valid if row.email}
        existing: dict[str, Contact] = {}
        for contact in await self.contacts.by_emails(emails, lock=RowLock.UPDATE):
            existing.setdefault((contact.email or "").lower(), contact)
        # Share locks, as `POST /contacts` takes: the companies stay until the batch commits.
        companies = await self.companies.existing_ids(
            {row.company_id for _, row in valid if row.company_id is not None},
            lock=RowLock.SHARE,
        )

        new: list[dict[str, Any]] = []
        new_emails: set[str] = set()
        updated: list[tuple[ContactRead, Contact]] = []
        settled = len(records)
        for record, row in valid:
            email = row.email.lower() if row.email else None
            if email is not None and email in new_emails:
                settled = record.row - records[0].row  # the next batch starts here
                break
            if row.owner_id is not None and (refusal := await self._owner_refusal(row.owner_id)):
                _refused(result, record, record.columns.get("owner_id"), refusal)
                continue
            if row.company_id is not None and row.company_id not in companies:
                column = record.columns.get("company_id")
                _refused(result, record, column, CompanyReferenceInvalid())
                continue
            match = existing.get(email) if email is not None else None
            custom = {**row.custom_fields, **(given.get(record.row) or {})}
            try:
                values = checked_values(
                    definitions, custom, None if match is None else match.custom_fields
                )
            except CustomFieldsInvalid as exc:
                _refused(result, record, None, exc)
                continue
            if match is None:
                new.append({**self._new_contact(row), "custom_fields": values})
                if email is not None:
                    new_emails.add(email)
                result.progress.created += 1
            elif self.on_conflict is OnConflict.SKIP:
                result.progress.skipped += 1
            else:
                outcome = await self._update_contact(match, row, record, result, values)
                if outcome is not None:
                    updated.append((outcome, match))
        result.progress.rows = settled
        if settled < len(records):  # rows after the batch's end are not counted here
            cut = records[settled].row
            result.errors = [e for e in result.errors if e.row < cut]
            result.progress.failed = len({e.row for e in result.errors})
        if not new and not updated:
            return result
        for created in await self.contacts.add_many(new):
            resource = ContactRead.model_validate(created)
            events.record(self.session, self.ctx, EventType.CONTACT_CREATED, resource)
        if updated:
            await self.session.flush()
            for before, contact in updated:
                events.record_update(
                    self.session,
                    self.ctx,
                    EventType.CONTACT_UPDATED,
                    before,
                    ContactRead.model_validate(contact),
                )
        await self.read_models.contacts_written()
        return result

    def _new_contact(self, row: ContactImportRow) -> dict[str, Any]:
        return {
            "owner_id": row.owner_id if row.owner_id is not None else self.ctx.user_id,
            "name": row.name,
            "email": row.email,
            "phone": row.phone,
            "company_id": row.company_id,
            "search_text": fold_fields(row.name, row.email, row.phone),
        }

    async def _update_contact(
        self,
        contact: Contact,
        row: ContactImportRow,
        record: Record,
        result: BatchResult,
        custom_values: dict[str, Any],
    ) -> ContactRead | None:
        """Set the row's fields on `contact` as a PATCH would; what it was before (None:
        nothing changed, or the row was refused)."""
        if contact.owner_id != self.ctx.user_id and not self.ctx.can(Permission.MODIFY_ANY_RECORD):
            _refused(
                result,
                record,
                record.columns.get("email"),
                PermissionDenied("Members may only change their own contacts."),
            )
            return None
        fields = {"name", "email", "phone", "owner_id", "company_id"}
        sent = row.model_dump(include=set(record.values) & fields)
        # The email matched case-insensitively: its case alone is no change.
        sent.pop("email", None)
        changes = {name: value for name, value in sent.items() if value != getattr(contact, name)}
        if custom_values != contact.custom_fields:
            changes["custom_fields"] = custom_values
        if not changes:
            result.progress.skipped += 1
            return None
        before = ContactRead.model_validate(contact)
        for name, value in changes.items():
            setattr(contact, name, value)
        contact.search_text = fold_fields(contact.name, contact.email, contact.phone)
        result.progress.updated += 1
        return before

    # --- deals ------------------------------------------------------------------------------

    async def _deals(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        rows: list[tuple[Record, DealImportRow]] = []
        definitions = await definitions_of(
            self.session, self.ctx.organization_id, CustomFieldEntity.DEAL
        )
        given: dict[int, dict[str, Any] | None] = {}
        for record in records:
            if record.problem is not None:
                result.fail(record, None, "INVALID_ROW", record.problem)
                result.failed_row()
                continue
            fixed, given[record.row] = custom_fields_of(record, definitions)
            try:
                row = DealImportRow.model_validate(fixed)
            except ValidationError as exc:
                _validation_errors(result, record, exc)
                continue
            if row.contact_id is None and row.contact_email is None:
                result.fail(
                    record, None, "VALIDATION_ERROR", "contact_id or contact_email is required."
                )
                result.failed_row()
                continue
            rows.append((record, row))
        by_email: dict[str, int] = {}
        emails = {
            row.contact_email.lower()
            for _, row in rows
            if row.contact_id is None and row.contact_email
        }
        for contact in await self.contacts.by_emails(emails):
            by_email.setdefault((contact.email or "").lower(), contact.id)
        service = DealService(self.session, self.ctx, self.cache)
        for record, row in rows:
            contact_id = row.contact_id
            if contact_id is None:
                contact_id = by_email.get((row.contact_email or "").lower())
                if contact_id is None:
                    _refused(
                        result,
                        record,
                        record.columns.get("contact_email"),
                        ContactReferenceInvalid(
                            "contact_email is not the email of a contact of this organization."
                        ),
                    )
                    continue
            data = DealCreate(
                contact_id=contact_id,
                title=row.title,
                amount=row.amount,
                currency=row.currency,
                company_id=row.company_id,
                custom_fields={**row.custom_fields, **(given.get(record.row) or {})},
                pipeline_id=row.pipeline_id,
            )
            savepoint = await self.session.begin_nested()
            try:
                await service.create(
                    data, status=row.status, stage=row.stage, owner_id=row.owner_id
                )
            except AppError as exc:
                await savepoint.rollback()
                _refused(result, record, _deal_column(exc, record, row), exc)
                continue
            await savepoint.commit()
            result.progress.created += 1
        result.progress.rows = len(records)
        return result


def _deal_column(exc: AppError, record: Record, row: DealImportRow) -> str | None:
    if isinstance(exc, ContactReferenceInvalid):
        name = "contact_id" if row.contact_id is not None else "contact_email"
    elif isinstance(exc, CompanyReferenceInvalid):
        name = "company_id"
    elif isinstance(exc, OwnerNotAMember | PermissionDenied):
        name = "owner_id"
    elif isinstance(exc, DealWonRequiresAmount):
        name = "status"
    elif isinstance(exc, StageRollbackForbidden | StageNotInPipeline | UnknownStage):
        name = "stage"
    elif isinstance(exc, PipelineReferenceInvalid):
        name = "pipeline_id"
    else:
        return None
    return record.columns.get(name, name)


def _filename(name: str | None) -> str | None:
    """The file's name as sent, without control characters, at most 255 characters."""
    cleaned = "".join(ch for ch in name or "" if ch.isprintable())[:255]
    return cleaned or None
