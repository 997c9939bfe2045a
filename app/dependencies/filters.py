"""The filters of the company, contact, deal and task lists, read from the query string once.

The list routes and the export routes take the same filters through these dependencies, so an
export answers exactly the rows its list would (the repositories' `_matching` builds the WHERE
clause for both). Sorting (`order_by`, `order`) is the list's own: an export is in id order."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from app.models import DealStatus
from app.repositories.companies import CompanyFilters
from app.repositories.contacts import ContactFilters
from app.repositories.deals import DealFilters
from app.repositories.tasks import TaskFilters
from app.schemas.common import DueDate, Id, Money, SearchText
from app.schemas.pipeline import DealStageKey

AmountQuery = Annotated[Money | None, Query(description="Inclusive.")]


async def get_contact_filters(
    search: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of name, email or phone (any language)."),
    ] = None,
    owner_id: Annotated[Id | None, Query()] = None,
    company_id: Annotated[Id | None, Query(description="Contacts of this company.")] = None,
) -> ContactFilters:
    return ContactFilters(search=search, owner_id=owner_id, company_id=company_id)


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
    )


async def get_company_filters(
    search: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of the name or domain (any language)."),
    ] = None,
    owner_id: Annotated[Id | None, Query()] = None,
) -> CompanyFilters:
    return CompanyFilters(search=search, owner_id=owner_id)


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
