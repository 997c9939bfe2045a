"""One error hierarchy for the whole service; the HTTP status lives on the class.

Services raise these; `app.core.handlers` renders every one of them (and FastAPI's own
validation and routing errors) as RFC 9457 problem+json.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any


class AppError(Exception):
    status: int = 500
    code: str = "INTERNAL_ERROR"
    title: str = "Internal Server Error"
    detail: str = "An unexpected error occurred."
    # Per-field errors (`[{loc, msg, type}]`, as a 422 of request validation lists them).
    errors: list[dict[str, Any]] | None = None
    # The session dependency commits instead of rolling back when this is set (used when the
    # refusal itself must be recorded, e.g. revoking a session on refresh-token reuse).
    keep_changes: bool = False

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        self.detail = detail or type(self).detail
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class BadRequest(AppError):
    status = 400
    code = "BAD_REQUEST"
    title = "Bad Request"


class BusinessRuleViolation(BadRequest):
    code = "BUSINESS_RULE_VIOLATION"


class Unauthenticated(AppError):
    status = 401
    code = "UNAUTHENTICATED"
    title = "Unauthorized"
    detail = "Missing, invalid or expired credentials."

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer", **(headers or {})})


class Forbidden(AppError):
    status = 403
    code = "FORBIDDEN"
    title = "Forbidden"
    detail = "You are not allowed to do this."


class NotFound(AppError):
    status = 404
    code = "NOT_FOUND"
    title = "Not Found"
    detail = "The resource was not found."


class Conflict(AppError):
    status = 409
    code = "CONFLICT"
    title = "Conflict"


class PreconditionFailed(AppError):
    """A conditional write (`If-Match`) whose resource has changed since the client read it."""

    status = 412
    code = "PRECONDITION_FAILED"
    title = "Precondition Failed"
    detail = (
        "The resource has changed since you read it (If-Match does not match its ETag); "
        "read it again and retry."
    )


class PayloadTooLarge(AppError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    title = "Payload Too Large"
    detail = "The request body is too large."


class UnsupportedMediaType(AppError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    title = "Unsupported Media Type"
    detail = "The request body must be JSON, sent with Content-Type: application/json."


class TooManyRequests(AppError):
    status = 429
    code = "TOO_MANY_REQUESTS"
    title = "Too Many Requests"


# --- authentication ---------------------------------------------------------------------


class InvalidCredentials(Unauthenticated):
    code = "INVALID_CREDENTIALS"
    detail = "Email or password is incorrect."


class InvalidToken(Unauthenticated):
    code = "INVALID_TOKEN"
    detail = "The token is invalid or has expired."


class RefreshTokenReused(InvalidToken):
    code = "REFRESH_TOKEN_REUSED"
    detail = "This refresh token was already used; the login session has been revoked."
    keep_changes = True


class RateLimited(TooManyRequests):
    code = "RATE_LIMITED"
    detail = "Too many requests. Try again after the number of seconds in Retry-After."


class LoginThrottled(TooManyRequests):
    code = "LOGIN_THROTTLED"
    detail = "Too many failed login attempts. Try again later."


class EmailTaken(Conflict):
    code = "EMAIL_TAKEN"
    detail = "An account with this email already exists."


# --- tenancy and roles ------------------------------------------------------------------


class NotAMember(Forbidden):
    code = "NOT_A_MEMBER"
    detail = "You are not a member of this organization."


class PermissionDenied(Forbidden):
    code = "PERMISSION_DENIED"


class ApiKeyNotAllowed(Forbidden):
    code = "API_KEY_NOT_ALLOWED"
    detail = "An API key acts only in its organization's data; this route is for people."


class ApiKeyNotFound(NotFound):
    code = "API_KEY_NOT_FOUND"
    detail = "No such API key in this organization."


class WebhookNotFound(NotFound):
    code = "WEBHOOK_NOT_FOUND"
    detail = "No such webhook endpoint in this organization."


class WebhookDeliveryNotFound(NotFound):
    code = "WEBHOOK_DELIVERY_NOT_FOUND"
    detail = "No such delivery of this webhook endpoint."


class WebhookUrlNotAllowed(BusinessRuleViolation):
    code = "WEBHOOK_URL_NOT_ALLOWED"
    detail = (
        "A webhook URL must be https and resolve only to public addresses "
        "(not loopback, private, link-local, multicast or metadata addresses)."
    )


class OrganizationNotFound(NotFound):
    code = "ORGANIZATION_NOT_FOUND"
    detail = "Organization not found."


class UserNotFound(NotFound):
    code = "USER_NOT_FOUND"
    detail = "No user with this email exists."


class MemberNotFound(NotFound):
    code = "MEMBER_NOT_FOUND"
    detail = "This user is not a member of the organization."


class AlreadyMember(Conflict):
    code = "ALREADY_MEMBER"
    detail = "This user is already a member of the organization."


class OwnerImmutable(Conflict):
    code = "OWNER_IMMUTABLE"
    detail = "The organization's owner cannot be removed or have their role changed."


# --- CRM --------------------------------------------------------------------------------


class ContactNotFound(NotFound):
    code = "CONTACT_NOT_FOUND"
    detail = "Contact not found."


class DealNotFound(NotFound):
    code = "DEAL_NOT_FOUND"
    detail = "Deal not found."


class TaskNotFound(NotFound):
    code = "TASK_NOT_FOUND"
    detail = "Task not found."


class CompanyNotFound(NotFound):
    code = "COMPANY_NOT_FOUND"
    detail = "Company not found."


class CompanyReferenceInvalid(BadRequest):
    """A contact or deal refers to a company that is not a company of this organization (400,
    as for a deal's contact)."""

    code = "COMPANY_NOT_FOUND"
    detail = "company_id does not refer to a company of this organization."


class CompanyHasContacts(Conflict):
    code = "COMPANY_HAS_CONTACTS"
    detail = "The company has contacts and cannot be deleted: move or delete them first."


class CompanyHasDeals(Conflict):
    code = "COMPANY_HAS_DEALS"
    detail = (
        "Deals name the company, so it cannot be deleted: change their company_id or delete "
        "them first."
    )


class ContactReferenceInvalid(BadRequest):
    """A deal refers to a contact that is not a contact of this organization (400, not 404)."""

    code = "CONTACT_NOT_FOUND"
    detail = "contact_id does not refer to a contact of this organization."


class ContactHasDeals(Conflict):
    code = "CONTACT_HAS_DEALS"
    detail = "The contact is referenced by deals and cannot be deleted."


class ContactInTrash(Conflict):
    """Restoring a deal whose contact is in the trash: restore the contact first."""

    code = "CONTACT_IN_TRASH"
    detail = "The deal's contact is in the trash: restore the contact first."


class DealInTrash(Conflict):
    """Restoring a task whose deal is in the trash: restore the deal first."""

    code = "DEAL_IN_TRASH"
    detail = "The task's deal is in the trash: restore the deal first."


class DealWonRequiresAmount(BusinessRuleViolation):
    code = "DEAL_WON_REQUIRES_AMOUNT"
    detail = "A deal can only be won with an amount greater than 0."


class StageRollbackForbidden(Forbidden):
    code = "STAGE_ROLLBACK_FORBIDDEN"
    detail = "Only an owner or admin may move a deal to an earlier stage."


class OwnerNotAMember(BusinessRuleViolation):
    code = "OWNER_NOT_A_MEMBER"
    detail = "owner_id must be a member of this organization."


class DueDateInPast(BusinessRuleViolation):
    code = "DUE_DATE_IN_PAST"
    detail = "due_date cannot be before today (UTC)."


# --- pipelines (contract section 17) --------------------------------------------------------


class PipelineNotFound(NotFound):
    code = "PIPELINE_NOT_FOUND"
    detail = "Pipeline not found."


class PipelineReferenceInvalid(BadRequest):
    """A deal (or an import row) names a pipeline that is not one of this organization (400,
    as for a deal's contact)."""

    code = "PIPELINE_NOT_FOUND"
    detail = "pipeline_id does not refer to a pipeline of this organization."


class StageNotFound(NotFound):
    code = "STAGE_NOT_FOUND"
    detail = "The pipeline has no stage with this key."


class UnknownStage(AppError):
    """A stage key that none of the organization's pipelines has (or, where one pipeline is
    meant, not that one's): refused as a value outside a schema's enum always was, 422
    `VALIDATION_ERROR` with the place in `errors`. A key of another of its pipelines is a
    400 `STAGE_NOT_IN_PIPELINE` instead."""

    status = 422
    code = "VALIDATION_ERROR"
    title = HTTPStatus(422).phrase
    detail = "The request does not match the expected schema."

    def __init__(self, loc: tuple[str | int, ...], key: str, where: str) -> None:
        super().__init__()
        self.errors = [
            {
                "loc": list(loc),
                "msg": f"Input should be a stage key of {where}, not {key!r}",
                "type": "enum",  # as the enum of the four stages answered before pipelines
            }
        ]


class StageNotInPipeline(BusinessRuleViolation):
    code = "STAGE_NOT_IN_PIPELINE"
    detail = "stage must be the key of a stage of the deal's pipeline."


class StageKeyTaken(Conflict):
    code = "STAGE_KEY_TAKEN"
    detail = "The pipeline already has a stage with this key."


class StageHasDeals(Conflict):
    code = "STAGE_HAS_DEALS"
    detail = (
        "Deals (live or in the trash) are at this stage: name the stage they move to with "
        "move_deals_to."
    )


class StageMoveTargetInvalid(BusinessRuleViolation):
    code = "STAGE_MOVE_TARGET_INVALID"
    detail = "move_deals_to must be the key of another stage of the same pipeline."


class LastStage(Conflict):
    code = "LAST_STAGE"
    detail = "A pipeline keeps at least one stage: this is its last one."


class StageLimitReached(Conflict):
    code = "STAGE_LIMIT_REACHED"
    detail = "A pipeline has at most 50 stages."


class PipelineIsDefault(Conflict):
    code = "PIPELINE_IS_DEFAULT"
    detail = "The default pipeline cannot be deleted: make another pipeline the default first."


class DefaultPipelineRequired(BusinessRuleViolation):
    code = "DEFAULT_PIPELINE_REQUIRED"
    detail = (
        "An organization always has a default pipeline: make another one the default instead "
        "of unsetting this one."
    )


class PipelineHasDeals(Conflict):
    code = "PIPELINE_HAS_DEALS"
    detail = (
        "Deals (live or in the trash) are in this pipeline, so it cannot be deleted: move them "
        "to another pipeline, or delete them and empty the trash, first."
    )


class MergeSourceNotFound(NotFound):
    """A contact named in a merge's `source_ids` is missing (or another organization's)."""

    code = "CONTACT_NOT_FOUND"
    detail = "A contact in source_ids was not found."


class MergeIntoItself(BusinessRuleViolation):
    code = "MERGE_TARGET_IN_SOURCES"
    detail = "source_ids must not contain the contact they are merged into."


class InvalidCursor(AppError):
    status = 422
    code = "INVALID_CURSOR"
    title = "Invalid Cursor"
    detail = (
        "The cursor was not issued for this list, its filters and sort order, and this "
        "organization, or it was altered. Start again without `cursor`."
    )


class CursorExpired(AppError):
    """A change-feed cursor from before events that retention has since deleted."""

    status = 410
    code = "CURSOR_EXPIRED"
    title = "Gone"
    detail = (
        "Events after this cursor were deleted by retention (EVENTS_RETENTION_DAYS); "
        "start again without `after` (from the oldest retained event)."
    )


# --- safe retries -------------------------------------------------------------------------


class IdempotencyKeyInUse(Conflict):
    code = "IDEMPOTENCY_KEY_IN_USE"
    detail = "A request with this Idempotency-Key is still running; retry once it has finished."


class IdempotencyKeyReused(AppError):
    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    title = "Unprocessable Content"
    detail = "This Idempotency-Key was already used with a different request body."


class DatabaseBusy(AppError):
    """Every pooled connection stayed in use for `DB_POOL_TIMEOUT_SECONDS`."""

    status = 503
    code = "DATABASE_BUSY"
    title = "Service Unavailable"
    detail = "The service is too busy to reach its database; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class WriteConflict(AppError):
    """The database rolled this request's transaction back to let a concurrent one through (a
    deadlock between two writes to the same records, or a serialization failure): nothing of
    it was kept, and the same request is expected to succeed when sent again."""

    status = 503
    code = "WRITE_CONFLICT"
    title = "Service Unavailable"
    detail = (
        "A concurrent write to the same records got in the way; nothing was changed: try again."
    )

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class DatabaseUnavailable(AppError):
    """The database could not be reached, or the connection was lost mid-request (a restart,
    a failover, an ended backend). What the request had begun was rolled back with the
    connection, unless it was the commit itself that was lost on its way: then it may have
    landed, and a client that retries should be able to tell (an Idempotency-Key)."""

    status = 503
    code = "DATABASE_UNAVAILABLE"
    title = "Service Unavailable"
    detail = "The database is unavailable right now; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


# --- custom fields -------------------------------------------------------------------------


class CustomFieldNotFound(NotFound):
    code = "CUSTOM_FIELD_NOT_FOUND"
    detail = "Custom field not found."


class CustomFieldKeyTaken(Conflict):
    code = "CUSTOM_FIELD_KEY_TAKEN"
    detail = "This organization already has a custom field with this key on this entity."


class CustomFieldLimitReached(Conflict):
    code = "CUSTOM_FIELD_LIMIT_REACHED"
    detail = "This entity has as many custom fields as an organization may define (100)."


class CustomFieldOptionInUse(Conflict):
    code = "CUSTOM_FIELD_OPTION_IN_USE"
    detail = "A record still holds an option this change removes; change those records first."


class CustomFieldsInvalid(AppError):
    """Custom field values (or `cf.<key>` filters) that the organization's definitions refuse:
    answered like a request validation error, with each field's key in its `loc`."""

    status = 422
    code = "VALIDATION_ERROR"
    title = HTTPStatus.UNPROCESSABLE_ENTITY.phrase  # as a request validation error's
    detail = "The request does not match the expected schema."

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__()
        self.errors = errors


class CustomFieldOrderNotScrollable(AppError):
    status = 422
    code = "CUSTOM_FIELD_ORDER_NOT_SCROLLABLE"
    title = "Unprocessable Content"
    detail = "Sorting by a custom field is available in page mode only (`page`, `page_size`)."


# --- imports ------------------------------------------------------------------------------


class ImportNotFound(NotFound):
    code = "IMPORT_NOT_FOUND"
    detail = "Import not found."


class ImportAlreadyFinished(Conflict):
    code = "IMPORT_FINISHED"
    detail = "The import has already finished; there is nothing to cancel."


class ImportFileTooLarge(PayloadTooLarge):
    detail = "The file is larger than IMPORT_MAX_BYTES."


class ImportFormatUnsupported(UnsupportedMediaType):
    code = "IMPORT_FORMAT_UNSUPPORTED"
    detail = (
        "Send the file as multipart/form-data field `file`: CSV (.csv, text/csv) or "
        "JSON Lines (.jsonl, .ndjson, application/x-ndjson)."
    )


class ImportFileInvalid(AppError):
    """The file as a whole cannot be read (not UTF-8, no header row, no column the kind
    needs, a mapping that names unknown fields): nothing is stored."""

    status = 422
    code = "IMPORT_FILE_INVALID"
    title = "Unprocessable Content"
    detail = "The file cannot be imported."
