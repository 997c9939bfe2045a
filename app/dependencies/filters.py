"""The filters of the company, contact, deal and task lists, read from the query string once.

The list routes and the export routes take the same filters through these dependencies, so an
export answers exactly the rows its list would (the repositories' `_matching` builds the WHERE
clause for both). Sorting (`order_by`, `order`) is the list's own: an export is in id order."""

from __future__ import annotations

import re
from dataclasses import replace
from enum import Enum
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from app.models import DealStatus
from app.repositories.companies import CompanyFilters
from app.repositories.contacts import ContactFilters
from app.repositories.custom_fields import CustomFieldFilter, FilterOp
from app.repositories.deals import DealFilters
from app.repositories.tasks import TaskFilters
from app.schemas.common import DueDate, Id, Money, SearchText, SortOrder
from app.schemas.pipeline import DealStageKey

AmountQuery = Annotated[Money | None, Query(description="Inclusive.")]

# `cf.<key>` (equal; for a multiselect, "holds this option"), `cf.<key>.min`, `cf.<key>.max`
# (inclusive, for number, money and date fields): query names no fixed parameter can declare,
# so they are read from the query string here and described in the list operations' text.
_CUSTOM_FILTER = re.compile(r"^cf\.([a-z][a-z0-9_]{0,39})(?:\.(min|max))?$")
MAX_CUSTOM_FILTERS = 20
MAX_CUSTOM_FILTER_LENGTH = 1000
CUSTOM_FILTERS_HELP = (
    "Custom fields (see `/custom-fields`): `cf.<key>=<value>` keeps records whose field "
    "equals the value (a multiselect: holds the option; a boolean: `true`/`false`); "
    "`cf.<key>.min` and `cf.<key>.max` bound number, money and date fields (inclusive). "
    "`order_by=cf.<key>` sorts by a field (records without a value last; page mode only). "
    "An unknown key or a value not of the field's type: 422."
)


F = TypeVar("F", CompanyFilters, ContactFilters, DealFilters)


def ordered(filters: F, order_by: Enum | str, order: SortOrder) -> F:
    """`filters` with the list's sort: one of its columns, or `cf.<key>`."""
    if isinstance(order_by, Enum):  # the list's own enum (FastAPI validated it)
        column: Any = order_by
        return replace(filters, order_by=column, order=order)
    return replace(filters, custom_order=order_by.removeprefix("cf."), order=order)


async def _custom_filters(request: Request) -> tuple[CustomFieldFilter, ...]:
    found: list[CustomFieldFilter] = []
    errors: list[dict[str, object]] = []
    for name, text in request.query_params.multi_items():
        if not name.startswith("cf."):
            continue
        match = _CUSTOM_FILTER.fullmatch(name)
        if match is None:
            message = "use cf.<key>, cf.<key>.min or cf.<key>.max with a lower-case key"
        elif len(text) > MAX_CUSTOM_FILTER_LENGTH:
            message = f"at most {MAX_CUSTOM_FILTER_LENGTH} characters"
        else:
            found.append(CustomFieldFilter(match[1], FilterOp(match[2] or "eq"), text))
            continue
        errors.append({"loc": ("query", name), "msg": message, "type": "value_error"})
    if len(found) > MAX_CUSTOM_FILTERS:
        errors.append(
            {
                "loc": ("query", "cf"),
                "msg": f"at most {MAX_CUSTOM_FILTERS} custom field filters",
                "type": "value_error",
            }
        )
    if errors:
        raise RequestValidationError(errors)
    return tuple(found)


async def get_contact_filters(
    search: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of name, email or phone (any language)."),
    ] = None,
    owner_id: Annotated[Id | None, Query()] = None,
    company_id: Annotated[Id | None, Query(description="Contacts of this company.")] = None,
    custom: Annotated[tuple[CustomFieldFilter, ...], Depends(_custom_filters)] = (),
) -> ContactFilters:
    return ContactFilters(search=search, owner_id=owner_id, company_id=company_id, custom=custom)


async def get_deal_filters(
    status_: Annotated[
        list[DealStatus] | None, Query(alias="status", description="Repeatable.")
    ] = None,
    stage: Annotated[
        list[DealStageKey] | None,
        Query(
            description="Repeatable. A stage key of one of the organization's pipelines (of "
            "`pipeline_id`, when given); any other is refused (422)."
        ),
    ] = None,
    min_amount: AmountQuery = None,
    max_amount: AmountQuery = None,
    owner_id: Annotated[Id | None, Query()] = None,
    contact_id: Annotated[Id | None, Query()] = None,
    company_id: Annotated[Id | None, Query(description="Deals naming this company.")] = None,
    pipeline_id: Annotated[Id | None, Query(description="Deals of this pipeline.")] = None,
    search: Annotated[
        SearchText | None, Query(description="Case-insensitive substring of the title.")
    ] = None,
    custom: Annotated[tuple[CustomFieldFilter, ...], Depends(_custom_filters)] = (),
) -> DealFilters:
    return DealFilters(
        statuses=tuple(status_ or ()),
        stages=tuple(stage or ()),
        min_amount=min_amount,
        max_amount=max_amount,
        owner_id=owner_id,
        contact_id=contact_id,
        company_id=company_id,
        pipeline_id=pipeline_id,
        search=search,
        custom=custom,
    )


async def get_company_filters(
    search: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of the name or domain (any language)."),
    ] = None,
    owner_id: Annotated[Id | None, Query()] = None,
    custom: Annotated[tuple[CustomFieldFilter, ...], Depends(_custom_filters)] = (),
) -> CompanyFilters:
    return CompanyFilters(search=search, owner_id=owner_id, custom=custom)


async def get_task_filters(
    deal_id: Annotated[Id | None, Query()] = None,
    only_open: Annotated[bool, Query(description="Only tasks not done.")] = False,
    due_before: Annotated[DueDate | None, Query(description="Inclusive.")] = None,
    due_after: Annotated[DueDate | None, Query(description="Inclusive.")] = None,
) -> TaskFilters:
    return TaskFilters(
        deal_id=deal_id, only_open=only_open, due_before=due_before, due_after=due_after
    )


CompanyFilterQuery = Annotated[CompanyFilters, Depends(get_company_filters)]
ContactFilterQuery = Annotated[ContactFilters, Depends(get_contact_filters)]
DealFilterQuery = Annotated[DealFilters, Depends(get_deal_filters)]
TaskFilterQuery = Annotated[TaskFilters, Depends(get_task_filters)]
