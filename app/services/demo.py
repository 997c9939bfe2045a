"""Demo data: a sales team's last six months, for a newcomer to look at.

An organization with one login per role, a few hundred contacts and deals created over the last
months, each deal's timeline (status and stage changes one step at a time, comments, tasks) at
plausible moments, and tasks with varied texts and due dates, some overdue. Deals are mostly in
one currency, so the summary across currencies still reads as money. Most deals are in the
default "Sales pipeline"; some are in a second pipeline, "Partnerships", with stages of its own
(fewer, other names and probabilities, the same keys where they mean the same).

The users, the organization and the memberships go through the same services as the API. The
history is written in bulk (rows with their past timestamps, a few statements instead of
thousands of requests), so it follows the same rules as the services by construction: a won
deal has an amount, stages only move forward, every status or stage change has its timeline
entry. The analytics running totals are then recomputed from the deals in the same
transaction (`ReadModels.rebuild`), so they equal a fresh GROUP BY exactly.

Content is drawn from a seeded random generator: the same on every run, relative to today."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.contact_keys import match_key_columns
from app.core.resources import Resources
from app.core.tenancy import TenantContext
from app.core.text import fold, fold_fields
from app.models import (
    Activity,
    ActivityType,
    Company,
    Contact,
    CustomFieldDefinition,
    CustomFieldEntity,
    CustomFieldType,
    Deal,
    DealStage,
    DealStatus,
    Pipeline,
    PipelineStage,
    Role,
    Task,
)
from app.repositories.custom_fields import CustomFieldRepository
from app.repositories.pipelines import PipelineRepository
from app.repositories.users import UserRepository
from app.schemas.auth import RegisterRequest
from app.schemas.organization import AssignableRole
from app.services import events
from app.services.auth import AuthService
from app.services.organizations import OrganizationService
from app.services.read_models import ReadModels

DEMO_PASSWORD = "StrongPassword123"  # noqa: S105 - the documented demo login
DEMO_OWNER_EMAIL = "owner@example.com"
# (email, name, role): the owner first.
DEMO_LOGINS: tuple[tuple[str, str, Role], ...] = (
    (DEMO_OWNER_EMAIL, "Olivia Owner", Role.OWNER),
    ("admin@example.com", "Alice Admin", Role.ADMIN),
    ("manager@example.com", "Max Manager", Role.MANAGER),
    ("member@example.com", "Mia Member", Role.MEMBER),
)
DEMO_ORGANIZATION = "Demo Company"
CONTACT_COUNT = 320
HISTORY_DAYS = 180
MAIN_CURRENCY = "EUR"
OTHER_CURRENCY = "USD"  # a few deals with overseas clients
OTHER_CURRENCY_SHARE = 0.06
SEED = 20_260_115
SALES_STAGES: tuple[str, ...] = tuple(DealStage)
# The second pipeline: (key, name, probability). Deals of some products are partnerships.
PARTNERSHIP_PIPELINE = "Partnerships"
PARTNERSHIP_STAGES = (
    ("qualification", "Intro call", 20),
    ("negotiation", "Terms", 60),
    ("closed", "Signed", 100),
)
PARTNERSHIP_SHARE = 0.15

# --- the vocabulary -----------------------------------------------------------------------------

# (first name, last name, the same in Latin letters for the email address)
_PEOPLE: tuple[tuple[str, str, str, str], ...] = (
    ("Иван", "Петров", "ivan", "petrov"),
    ("Мария", "Смирнова", "maria", "smirnova"),
    ("Олег", "Кузнецов", "oleg", "kuznetsov"),
    ("Анна", "Соколова", "anna", "sokolova"),
    ("Hans", "Müller", "hans", "mueller"),
    ("José", "García", "jose", "garcia"),
    ("Ana", "Souza", "ana", "souza"),
    ("Li", "Wei", "li", "wei"),
    ("Emma", "Johnson", "emma", "johnson"),
    ("Zoë", "Lefèvre", "zoe", "lefevre"),
)
_FIRST_NAMES = (
    "Liam", "Olivia", "Noah", "Emma", "Lukas", "Sofia", "Mateo", "Mia", "Leon", "Chloé",
    "Jonas", "Lucía", "Elias", "Giulia", "Finn", "Hannah", "Hugo", "Ingrid", "Pierre", "Marta",
    "Tomasz", "Agnieszka", "Lars", "Freya", "Diego", "Camille", "Felix", "Nora", "Andrea",
    "Jakub", "Sara", "Matteo", "Elena", "Oscar", "Julia", "Henrik", "Paula", "Marco", "Alice",
)  # fmt: skip
_LAST_NAMES = (
    "Schmidt", "Rossi", "Dubois", "Novak", "Jensen", "Fernández", "Bianchi", "Kowalski",
    "Andersson", "Moreau", "Weber", "Romano", "Lindqvist", "Horvat", "Costa", "Nieminen",
    "Wagner", "Bakker", "Murphy", "Silva", "Fischer", "Laurent", "Svoboda", "Hansen", "Ricci",
    "Brennan", "Vogel", "Marino", "Olsen", "Keller",
)  # fmt: skip
# (company, email domain, phone prefix)
_COMPANIES = (
    ("Nordwind GmbH", "nordwind.de", "+49 30"),
    ("Lumen Analytics", "lumen-analytics.com", "+1 415"),
    ("Baltic Freight", "balticfreight.eu", "+371 67"),
    ("Casa Verde", "casaverde.es", "+34 91"),
    ("Atelier Morel", "ateliermorel.fr", "+33 1"),
    ("Polar Systems", "polarsystems.fi", "+358 9"),
    ("Greenfield Farms", "greenfield.ie", "+353 1"),
    ("Vistula Soft", "vistulasoft.pl", "+48 22"),
    ("Alpenblick Hotels", "alpenblick.at", "+43 1"),
    ("Oceanic Trade", "oceanictrade.pt", "+351 21"),
    ("Meridian Health", "meridianhealth.nl", "+31 20"),
    ("Fjord Logistics", "fjordlog.no", "+47 22"),
    ("Tessera Design", "tessera.it", "+39 02"),
    ("Brightline Media", "brightline.co.uk", "+44 20"),
    ("Kite Robotics", "kiterobotics.se", "+46 8"),
    ("Danube Energy", "danube-energy.hu", "+36 1"),
    ("Sokol Retail", "sokol-retail.ru", "+7 495"),
    ("Helix Biotech", "helixbio.ch", "+41 44"),
    ("Urban Bakery", "urbanbakery.be", "+32 2"),
    ("Quantum Legal", "quantumlegal.lu", "+352 26"),
    ("Orbit Travel", "orbittravel.gr", "+30 21"),
    ("Maple Education", "mapleedu.ca", "+1 604"),
    ("Riverstone Capital", "riverstone.com", "+1 212"),
    ("Cobalt Print", "cobaltprint.cz", "+420 2"),
)
# (what is sold, lowest and highest usual amount)
_PRODUCTS = (
    ("Website redesign", 4_000, 25_000), ("CRM rollout", 12_000, 60_000),
    ("Annual licences", 6_000, 90_000), ("Support contract", 3_000, 18_000),
    ("Data migration", 5_000, 30_000), ("Training package", 1_500, 8_000),
    ("Mobile app", 20_000, 120_000), ("Security audit", 7_000, 28_000),
    ("Cloud hosting", 2_400, 36_000), ("Consulting days", 2_000, 15_000),
    ("Integration work", 6_000, 40_000), ("Hardware bundle", 8_000, 55_000),
    ("Analytics dashboard", 9_000, 35_000), ("Pilot project", 2_500, 10_000),
)  # fmt: skip
_TASKS = (
    ("Call {first} about the proposal", "Walk through the options and the timeline."),
    ("Send the revised quote to {first}", "Include the volume discount we discussed."),
    ("Prepare the demo for {company}", "Use their own data where possible."),
    ("Book an onsite meeting with {first}", None),
    ("Follow up on the signed contract", "Legal wanted one more look at clause 7."),
    ("Check references for {company}", None),
    ("Draft the statement of work", "Scope, milestones and acceptance criteria."),
    ("Ask {first} for the technical contact", None),
    ("Review the {product} pricing", "Compare with last year's offer."),
    ("Send the case study to {first}", None),
    ("Schedule the kick-off call", "Project manager and both tech leads."),
    ("Confirm the budget with {company}", "They mentioned a freeze until next quarter."),
    ("Update the proposal after the call", None),
    ("Introduce {first} to our support lead", None),
)
_COMMENTS = (
    "First call with {first}: they outgrew their spreadsheet and want a decision this quarter.",
    "{first} asked for references from a company of similar size.",
    "Budget confirmed at around {amount} {currency}.",
    "Procurement joined the thread; they need our security questionnaire.",
    "Demo went well. The team liked the reporting, less so the import.",
    "{company} is also talking to a competitor; price will matter.",
    "Sent the proposal. {first} will present it internally next week.",
    "They asked for a two-year term with a discount.",
    "Technical review passed; one question left about single sign-on.",
    "{first} is on holiday for two weeks, picking this up afterwards.",
    "Legal comments received, nothing blocking.",
    "Good news: the board approved the project.",
    "They postponed: new priorities after a reorganisation.",
    "Call moved to Thursday at {first}'s request.",
    "Negotiated the payment terms to 45 days.",
    "Asked for a smaller pilot first, then the full {product}.",
)
_LOST_REASONS = (
    "Lost on price: they went with a cheaper offer.",
    "Project cancelled on their side.",
    "They chose to build it in-house.",
    "No budget this year; revisit in the spring.",
)
_WON_NOTES = (
    "Signed! Kick-off planned for next month.",
    "Contract signed by {first}; invoice sent.",
    "Closed: {company} signed the order form.",
)


@dataclass(frozen=True, slots=True)
class DemoResult:
    created: bool
    organization_id: int
    counts: dict[str, int] = field(default_factory=dict)


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
    owner_email, owner_name, _ = DEMO_LOGINS[0]
    owner = await auth.register(
        RegisterRequest(
            email=owner_email,
            password=DEMO_PASSWORD,
            name=owner_name,
            organization_name=DEMO_ORGANIZATION,
        )
    )
    org_id = owner.organization.id
    owner_ctx = TenantContext(owner.user.id, org_id, Role.OWNER)
    user_ids = [owner.user.id]
    memberships = OrganizationService(session)
    for email, name, role in DEMO_LOGINS[1:]:
        member = await users.get_by_email(email)
        if member is None:
            registration = await auth.register(
                RegisterRequest(
                    email=email,
                    password=DEMO_PASSWORD,
                    name=name,
                    organization_name=f"{name}'s workspace",
                )
            )
            member = registration.user
        await memberships.add_member(owner_ctx, email, AssignableRole(role.value))
        user_ids.append(member.id)

    now = datetime.now(UTC).replace(microsecond=0)
    history = History(random.Random(SEED), now, org_id, user_ids)  # noqa: S311 - not secret
    # Six months of backdated history, not changes happening now: no events (see the README).
    events.backfill(session)
    counts = await history.write(session)
    # Written in bulk, not through the contact and deal services: the contacts' version moves,
    # and the deals' precomputed figures are recomputed from the deals, in this transaction.
    read_models = ReadModels(session, org_id, resources.cache)
    await read_models.contacts_written()
    await read_models.rebuild()
    return DemoResult(created=True, organization_id=org_id, counts=counts)


# --- the history --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Person:
    name: str
    first: str
    company: str
    email: str | None
    phone: str | None
    owner_id: int
    created_at: datetime


@dataclass(slots=True)
class _DealPlan:
    contact: int  # index into the contacts
    person: _Person
    owner_id: int
    title: str
    product: str
    amount: Decimal
    currency: str
    created_at: datetime
    partnership: bool = False
    status: DealStatus = DealStatus.NEW
    stage: str = DealStage.QUALIFICATION
    updated_at: datetime | None = None
    # (when, type, payload, author)
    events: list[tuple[datetime, ActivityType, dict[str, Any], int]] = field(default_factory=list)
    # (title, description, due date, done, created at, author)
    tasks: list[tuple[str, str | None, date | None, bool, datetime, int]] = field(
        default_factory=list
    )


class History:
    """Plans the demo's rows with a seeded generator, then writes them in bulk."""

    def __init__(
        self, rng: random.Random, now: datetime, organization_id: int, user_ids: Sequence[int]
    ) -> None:
        self.rng = rng
        self.now = now
        self.today = now.date()
        self.organization_id = organization_id
        self.user_ids = list(user_ids)  # owner, admin, manager, member
        self.start = now - timedelta(days=HISTORY_DAYS)

    # -- times

    def _working_time(self, moment: datetime, low: datetime, high: datetime) -> datetime:
        """The same day between 08:00 and 18:59 when that stays within [low, high]."""
        candidate = datetime.combine(
            moment.date(), time(self.rng.randint(8, 18), self.rng.randint(0, 59)), tzinfo=UTC
        )
        return candidate if low <= candidate <= high else moment

    def _moments(self, low: datetime, high: datetime, count: int) -> list[datetime]:
        """`count` increasing moments in (low, high], at working hours where possible."""
        span = max((high - low).total_seconds(), float(count))
        offsets = sorted(self.rng.uniform(1, span) for _ in range(count))
        moments = sorted(
            self._working_time(min(low + timedelta(seconds=o), high), low, high) for o in offsets
        )
        # Strictly increasing, so the timeline's order is the order of events.
        for index in range(1, len(moments)):
            if moments[index] <= moments[index - 1]:
                moments[index] = moments[index - 1] + timedelta(minutes=1)
        return moments

    # -- people

    def _people(self) -> list[_Person]:
        rng = self.rng
        names: list[tuple[str, str, str, str]] = list(_PEOPLE)
        seen = {(first, last) for first, last, _, _ in names}
        while len(names) < CONTACT_COUNT:
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            if (first, last) not in seen:
                seen.add((first, last))
                names.append((first, last, _ascii(first), _ascii(last)))
        people = []
        # More contacts recently: the team is growing.
        created = sorted(
            self.start + timedelta(days=HISTORY_DAYS * (1 - rng.random() ** 1.3))
            for _ in range(len(names))
        )
        # Keep the first (hand-picked) people among the oldest contacts.
        for (first, last, latin_first, latin_last), day in zip(names, created, strict=True):
            company, domain, prefix = rng.choice(_COMPANIES)
            email = f"{latin_first}.{latin_last}@{domain}" if rng.random() < 0.88 else None
            phone = (
                f"{prefix} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
                if rng.random() < 0.7
                else None
            )
            people.append(
                _Person(
                    name=f"{first} {last}",
                    first=first,
                    company=company,
                    email=email,
                    phone=phone,
                    owner_id=self._owner(),
                    created_at=self._working_time(day, self.start, self.now),
                )
            )
        return people

    def _owner(self) -> int:
        # owner, admin, manager, member: the manager and the member sell most.
        return self.rng.choices(self.user_ids, weights=(2, 2, 4, 4))[0]

    # -- deals

    def _deals(self, people: list[_Person]) -> list[_DealPlan]:
        rng = self.rng
        plans: list[_DealPlan] = []
        for index, person in enumerate(people):
            for _ in range(rng.choices((0, 1, 2, 3), weights=(20, 45, 25, 10))[0]):
                product, low, high = rng.choice(_PRODUCTS)
                created = self._moments(person.created_at, self.now, 1)[0]
                currency = MAIN_CURRENCY if rng.random() >= OTHER_CURRENCY_SHARE else OTHER_CURRENCY
                amount = _round_amount(rng.uniform(low, high))
                plan = _DealPlan(
                    contact=index,
                    person=person,
                    owner_id=person.owner_id if rng.random() < 0.8 else self._owner(),
                    title=f"{product} for {person.company}",
                    product=product,
                    amount=amount,
                    currency=currency,
                    created_at=created,
                    partnership=rng.random() < PARTNERSHIP_SHARE,
                )
                self._evolve(plan)
                plans.append(plan)
        plans.sort(key=lambda plan: plan.created_at)
        return plans

    def _evolve(self, plan: _DealPlan) -> None:
        """Choose where the deal stands today and write the timeline that got it there."""
        rng = self.rng
        age = (self.now - plan.created_at).days
        closed = rng.random() < min(0.8, age / 100)
        stages = [key for key, _, _ in PARTNERSHIP_STAGES] if plan.partnership else SALES_STAGES
        last_open = len(stages) - 2  # the stage before the closing one
        if closed:
            final = DealStatus.WON if rng.random() < 0.45 else DealStatus.LOST
            reached = last_open if final is DealStatus.WON else rng.choice((0, 1, 1, 2, 2))
        elif age < 10 and rng.random() < 0.6:
            final, reached = DealStatus.NEW, 0
        else:
            final = DealStatus.IN_PROGRESS if rng.random() < 0.85 else DealStatus.NEW
            reached = rng.choice((0, 1, 1, 2)) if final is DealStatus.IN_PROGRESS else 0
        reached = min(reached, last_open)
        if final is DealStatus.NEW and rng.random() < 0.3:
            plan.amount = Decimal("0.00")  # not estimated yet

        # The deal's changes, in order: (kind, old, new).
        steps: list[tuple[str, str, str]] = []
        if final is not DealStatus.NEW:
            steps.append(("status", DealStatus.NEW, DealStatus.IN_PROGRESS))
        steps += [("stage", stages[r - 1], stages[r]) for r in range(1, reached + 1)]
        if final is DealStatus.WON:
            steps += [
                ("stage", stages[last_open], stages[-1]),
                ("status", DealStatus.IN_PROGRESS, DealStatus.WON),
            ]
        elif final is DealStatus.LOST:
            steps += [
                ("status", DealStatus.IN_PROGRESS, DealStatus.LOST),
                ("stage", stages[reached], stages[-1]),
            ]
        plan.status = final
        plan.stage = stages[-1] if closed else stages[reached]

        # When it ends: a closed deal took 1-12 weeks; an open one was last touched lately.
        if closed:
            end = min(plan.created_at + timedelta(days=rng.uniform(7, 84)), self.now)
        else:
            end = plan.created_at + (self.now - plan.created_at) * rng.uniform(0.5, 1.0)
        comments = rng.choices((0, 1, 2, 3), weights=(25, 35, 25, 15))[0]
        moments = self._moments(plan.created_at, end, len(steps) + comments)
        step_moments = sorted(rng.sample(moments, len(steps)))
        comment_moments = [m for m in moments if m not in step_moments]
        context = {
            "first": plan.person.first,
            "company": plan.person.company,
            "product": plan.product.lower(),
            "amount": f"{plan.amount:,.0f}",
            "currency": plan.currency,
        }
        for moment, (kind, old, new) in zip(step_moments, steps, strict=True):
            if kind == "status":
                payload = {"old_status": str(old), "new_status": str(new)}
                plan.events.append((moment, ActivityType.STATUS_CHANGED, payload, plan.owner_id))
            else:
                payload = {"old_stage": str(old), "new_stage": str(new)}
                plan.events.append((moment, ActivityType.STAGE_CHANGED, payload, plan.owner_id))
        for moment in comment_moments:
            text = rng.choice(_COMMENTS).format(**context)
            plan.events.append((moment, ActivityType.COMMENT, {"text": text}, self._author(plan)))
        if closed and step_moments:
            notes = _WON_NOTES if final is DealStatus.WON else _LOST_REASONS
            moment = min(step_moments[-1] + timedelta(minutes=rng.randint(2, 50)), self.now)
            text = rng.choice(notes).format(**context)
            plan.events.append((moment, ActivityType.COMMENT, {"text": text}, plan.owner_id))
        plan.events.sort(key=lambda event: event[0])
        plan.updated_at = max([plan.created_at, *(e[0] for e in plan.events if e[1] in _MOVES)])

        # Tasks: done on closed deals; open ones on open deals, some overdue, some undated.
        for number in range(1 if closed else rng.choice((1, 1, 2))):
            title, description = rng.choice(_TASKS)
            created = self._moments(plan.created_at, end, 1)[0]
            if closed:
                due: date | None = created.date() + timedelta(days=rng.randint(1, 10))
                done = True
            else:
                due = (
                    None if rng.random() < 0.1 else self.today + timedelta(days=rng.randint(-6, 30))
                )
                if due is not None and due < created.date():
                    due = created.date() + timedelta(days=rng.randint(1, 7))
                done = number == 1 and rng.random() < 0.5
            plan.tasks.append(
                (title.format(**context), description, due, done, created, plan.owner_id)
            )

    def _author(self, plan: _DealPlan) -> int:
        return plan.owner_id if self.rng.random() < 0.7 else self.rng.choice(self.user_ids)

    # -- writing

    async def write(self, session: AsyncSession) -> dict[str, int]:
        org = self.organization_id
        people = self._people()
        plans = self._deals(people)
        await _define_custom_fields(session, org)
        pipelines = PipelineRepository(session, org)
        sales = await pipelines.default()
        assert sales is not None, "every organization has a default pipeline"
        partnerships = await pipelines.add(
            Pipeline(
                name=PARTNERSHIP_PIPELINE,
                is_default=False,
                created_at=self.start,
                updated_at=self.start,
            ),
            [
                PipelineStage(key=key, name=name, position=position, probability=probability)
                for position, (key, name, probability) in enumerate(PARTNERSHIP_STAGES)
            ],
        )

        # Every company the people work for, each contact in theirs, and each deal naming
        # its contact's company (its title says "... for <company>").
        company_ids = dict(
            zip(
                (name for name, _, _ in _COMPANIES),
                await _insert_returning_ids(
                    session,
                    Company,
                    [
                        {
                            "organization_id": org,
                            "owner_id": self.user_ids[index % len(self.user_ids)],
                            "name": name,
                            "domain": domain,
                            "phone": f"{prefix} {100 + index} {1000 + 37 * index}",
                            "address": None,
                            "search_text": fold_fields(name, domain),
                            "custom_fields": {"employees": _EMPLOYEES[index % len(_EMPLOYEES)]},
                            "created_at": self.start,
                            "updated_at": self.start,
                        }
                        for index, (name, domain, prefix) in enumerate(_COMPANIES)
                    ],
                ),
                strict=True,
            )
        )
        contact_ids = await _insert_returning_ids(
            session,
            Contact,
            [
                {
                    "organization_id": org,
                    "owner_id": p.owner_id,
                    "company_id": company_ids[p.company],
                    "name": p.name,
                    "email": p.email,
                    "phone": p.phone,
                    "search_text": fold_fields(p.name, p.email, p.phone),
                    **match_key_columns(p.email, p.phone),
                    # Every other contact has a profile.
                    "custom_fields": (
                        {
                            "linkedin": "https://www.linkedin.com/in/"
                            + "-".join(_ascii(p.name).split())
                        }
                        if index % 2 == 0
                        else {}
                    ),
                    "created_at": p.created_at,
                    "updated_at": p.created_at,
                }
                for index, p in enumerate(people)
            ],
        )
        deal_ids = await _insert_returning_ids(
            session,
            Deal,
            [
                {
                    "organization_id": org,
                    "contact_id": contact_ids[plan.contact],
                    "company_id": company_ids[plan.person.company],
                    "owner_id": plan.owner_id,
                    "title": plan.title,
                    "search_text": fold(plan.title),
                    "amount": plan.amount,
                    "currency": plan.currency,
                    "status": plan.status,
                    "pipeline_id": partnerships.id if plan.partnership else sales.id,
                    "stage": plan.stage,
                    "custom_fields": {"source": _demo_source(index)},
                    "created_at": plan.created_at,
                    "updated_at": plan.updated_at or plan.created_at,
                }
                for index, plan in enumerate(plans)
            ],
        )
        task_rows = [
            (deal_id, task)
            for deal_id, plan in zip(deal_ids, plans, strict=True)
            for task in plan.tasks
        ]
        task_ids = await _insert_returning_ids(
            session,
            Task,
            [
                {
                    "organization_id": org,
                    "deal_id": deal_id,
                    "title": title,
                    "description": description,
                    "due_date": due,
                    "is_done": done,
                    "created_at": created,
                    "updated_at": created,
                }
                for deal_id, (title, description, due, done, created, _) in task_rows
            ],
        )
        activities: list[dict[str, Any]] = [
            {
                "organization_id": org,
                "deal_id": deal_id,
                "author_id": author,
                "type": kind,
                "payload": payload,
                "created_at": moment,
            }
            for deal_id, plan in zip(deal_ids, plans, strict=True)
            for moment, kind, payload, author in plan.events
        ]
        activities += [
            {
                "organization_id": org,
                "deal_id": deal_id,
                "author_id": author,
                "type": ActivityType.TASK_CREATED,
                "payload": {"task_id": task_id, "task_title": title},
                "created_at": created,
            }
            for task_id, (deal_id, (title, _, _, _, created, author)) in zip(
                task_ids, task_rows, strict=True
            )
        ]
        activities.sort(key=lambda row: (row["created_at"], row["deal_id"]))
        await session.execute(insert(Activity), activities)
        return {
            "pipelines": 2,
            "companies": len(company_ids),
            "contacts": len(contact_ids),
            "deals": len(deal_ids),
            "tasks": len(task_ids),
            "activities": len(activities),
        }


_MOVES = (ActivityType.STATUS_CHANGED, ActivityType.STAGE_CHANGED)


# Custom fields (contract section 17): (entity, key, label, type, options). Their values are
# derived from each record's place in the history, not drawn from the generator, so the rest
# of the demo stays what it was.
DemoField = tuple[CustomFieldEntity, str, str, CustomFieldType, list[str] | None]
DEMO_CUSTOM_FIELDS: tuple[DemoField, ...] = (
    (CustomFieldEntity.DEAL, "source", "Lead source", CustomFieldType.SELECT, [
        "website", "referral", "event", "outbound", "partner",
    ]),
    (CustomFieldEntity.CONTACT, "linkedin", "LinkedIn profile", CustomFieldType.TEXT, None),
    (CustomFieldEntity.COMPANY, "employees", "Employees", CustomFieldType.NUMBER, None),
)  # fmt: skip
_EMPLOYEES = (12, 48, 230, 1200, 85, 9, 640, 3100, 27, 410)


async def _define_custom_fields(session: AsyncSession, organization_id: int) -> None:
    fields = CustomFieldRepository(session, organization_id)
    for entity, key, label, kind, options in DEMO_CUSTOM_FIELDS:
        definition = CustomFieldDefinition(
            entity=entity, key=key, label=label, type=kind, options=options, required=False
        )
        await fields.add(definition)


def _demo_source(index: int) -> str:
    options = DEMO_CUSTOM_FIELDS[0][4] or []
    return options[(index * 7) % len(options)]


async def _insert_returning_ids(
    session: AsyncSession,
    model: type[Company | Contact | Deal | Task],
    rows: list[dict[str, Any]],
) -> list[int]:
    """One multi-row INSERT (batched by SQLAlchemy); the new ids in the order of `rows`."""
    if not rows:
        return []
    statement = insert(model).returning(model.id, sort_by_parameter_order=True)
    result = await session.execute(statement, rows)
    return list(result.scalars())


def _round_amount(value: float) -> Decimal:
    """To 50, as people quote."""
    return Decimal(max(50, round(value / 50) * 50)).quantize(Decimal("0.01"))


_TRANSLITERATION = str.maketrans(
    {"é": "e", "è": "e", "ë": "e", "á": "a", "í": "i", "ó": "o", "ú": "u", "ü": "ue", "ö": "oe",
     "ä": "ae", "ç": "c", "ñ": "n", "ø": "o", "å": "a"}
)  # fmt: skip


def _ascii(name: str) -> str:
    return name.lower().translate(_TRANSLITERATION)
