"""Demo data: an organization with members of every role, contacts (some Cyrillic), deals in
every stage and status, tasks and timelines, created through the same services as the API so
every rule, timeline entry and running total is real."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.resources import Resources
from app.core.tenancy import TenantContext
from app.models import DealStage, DealStatus, Role
from app.repositories.users import UserRepository
from app.schemas.activity import ActivityCreate, CommentPayload
from app.schemas.auth import RegisterRequest
from app.schemas.contact import ContactCreate
from app.schemas.deal import DealCreate, DealUpdate
from app.schemas.organization import AssignableRole
from app.schemas.task import TaskCreate, TaskUpdate
from app.services.activities import ActivityService
from app.services.auth import AuthService
from app.services.contacts import ContactService
from app.services.deals import DealService
from app.services.organizations import OrganizationService
from app.services.policies import utc_today
from app.services.tasks import TaskService

DEMO_PASSWORD = "StrongPassword123"  # noqa: S105 - the documented demo login
DEMO_OWNER_EMAIL = "owner@example.com"
DEMO_MEMBERS = (
    ("admin@example.com", "Alice Admin", AssignableRole.ADMIN),
    ("manager@example.com", "Max Manager", AssignableRole.MANAGER),
    ("member@example.com", "Mia Member", AssignableRole.MEMBER),
)
DEMO_CONTACTS = (
    ("Иван Петров", "ivan.petrov@example.ru", "+7 495 123-45-67"),
    ("Мария Смирнова", "maria@example.ru", "+7 812 765-43-21"),
    ("Hans Müller", "hans.mueller@example.de", "+49 30 1234567"),
    ("José García", "jose@example.es", None),
    ("Ana Souza", "ana.souza@example.com.br", "+55 11 91234-5678"),
    ("Li Wei", "li.wei@example.cn", None),
    ("Emma Johnson", "emma@example.com", "+1 415 555 0100"),
    ("Олег Кузнецов", None, "+7 343 222-33-44"),
)
# (title, contact index, owner index: 0 owner, 1 admin, 2 manager, 3 member, amount, currency,
#  final stage, final status)
DEMO_DEALS: tuple[tuple[str, int, int, str, str, DealStage, DealStatus], ...] = (
    ("CRM rollout", 0, 0, "48000.00", "EUR", DealStage.CLOSED, DealStatus.WON),
    ("Support contract", 1, 3, "12000.00", "EUR", DealStage.NEGOTIATION, DealStatus.IN_PROGRESS),
    ("Website redesign", 2, 2, "15500.50", "EUR", DealStage.PROPOSAL, DealStatus.IN_PROGRESS),
    ("Data migration", 3, 1, "7200.00", "EUR", DealStage.CLOSED, DealStatus.LOST),
    ("Training package", 4, 3, "3000.00", "USD", DealStage.QUALIFICATION, DealStatus.NEW),
    ("Annual licences", 5, 0, "96000.00", "USD", DealStage.CLOSED, DealStatus.WON),
    ("Pilot project", 6, 2, "0.00", "USD", DealStage.QUALIFICATION, DealStatus.NEW),
    ("Integration work", 7, 3, "22000.00", "RUB", DealStage.PROPOSAL, DealStatus.NEW),
    ("Consulting days", 0, 1, "5400.00", "EUR", DealStage.NEGOTIATION, DealStatus.IN_PROGRESS),
    ("Hardware bundle", 6, 0, "18750.00", "USD", DealStage.CLOSED, DealStatus.LOST),
)


@dataclass(frozen=True, slots=True)
class DemoResult:
    created: bool
    organization_id: int


async def seed_demo(session: AsyncSession, resources: Resources) -> DemoResult:
    """Create the demo organization unless the demo owner already exists (idempotent).

    The caller commits (and then runs the session's after-commit hooks)."""
    users = UserRepository(session)
    existing = await users.get_by_email(DEMO_OWNER_EMAIL)
    if existing is not None:
        organizations = await OrganizationService(session).list_mine(existing.id)
        return DemoResult(
            created=False, organization_id=organizations[0].id if organizations else 0
        )

    auth = AuthService(session, resources.tokens, resources.passwords, resources.login_throttle)
    owner = await auth.register(
        RegisterRequest(
            email=DEMO_OWNER_EMAIL,
            password=DEMO_PASSWORD,
            name="Olivia Owner",
            organization_name="Demo Company",
        )
    )
    org_id = owner.organization.id
    contexts = [TenantContext(owner.user.id, org_id, Role.OWNER)]
    memberships = OrganizationService(session)
    for member_email, name, role in DEMO_MEMBERS:
        member = await users.get_by_email(member_email)
        if member is None:
            registration = await auth.register(
                RegisterRequest(
                    email=member_email,
                    password=DEMO_PASSWORD,
                    name=name,
                    organization_name=f"{name}'s workspace",
                )
            )
            member = registration.user
        await memberships.add_member(contexts[0], member_email, role)
        contexts.append(TenantContext(member.id, org_id, Role(role)))

    contact_ids: list[int] = []
    for index, (name, email, phone) in enumerate(DEMO_CONTACTS):
        ctx = contexts[index % len(contexts)]
        contact = await ContactService(session, ctx, resources.cache).create(
            ContactCreate(name=name, email=email, phone=phone)
        )
        contact_ids.append(contact.id)

    today = utc_today()
    for number, (title, contact_index, owner_index, amount, currency, stage, status) in enumerate(
        DEMO_DEALS
    ):
        ctx = contexts[owner_index]
        deals = DealService(session, ctx, resources.cache)
        deal = await deals.create(
            DealCreate(
                contact_id=contact_ids[contact_index],
                title=title,
                amount=Decimal(amount),
                currency=currency,
            )
        )
        # Walk the pipeline one step at a time, so the timeline shows each move.
        for next_stage in DealStage:
            if 0 < next_stage.rank <= stage.rank:
                if next_stage.rank == 1 and status is not DealStatus.NEW:
                    await deals.update(deal.id, DealUpdate(status=DealStatus.IN_PROGRESS))
                await deals.update(deal.id, DealUpdate(stage=next_stage))
        if status is not deal.status:
            await deals.update(deal.id, DealUpdate(status=status))

        tasks = TaskService(session, ctx)
        task = await tasks.create(
            TaskCreate(
                deal_id=deal.id,
                title=f"Follow up: {title}",
                description="Call the contact and agree on next steps.",
                due_date=today + timedelta(days=3 + number),
            )
        )
        if status in (DealStatus.WON, DealStatus.LOST):
            await tasks.update(task.id, TaskUpdate(is_done=True))
        await ActivityService(session, contexts[number % len(contexts)]).comment(
            deal.id,
            ActivityCreate(
                type="comment", payload=CommentPayload(text=f"Notes on {title.lower()}.")
            ),
        )
    return DemoResult(created=True, organization_id=org_id)
