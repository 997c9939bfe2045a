"""Bulk loader for the benchmark dataset (asyncpg COPY into a throwaway PostgreSQL database).

    .venv/bin/python -m bench.load [--fresh] [--skip-timeline] [--deals N] [--orgs N]

- creates the database (default `minicrm_bench`, or BENCH_DATABASE_URL) and runs
  `alembic upgrade head` on it;
- one big organization (id 1): 100 members, 100,000 contacts, 1,000,000 deals spread over
  three pipelines (the default "Sales pipeline" holds 80 %, "Partnerships" with 4 stages of
  its own 12 %, "Renewals" with 3 8 %), and (unless --skip-timeline) 300,000 tasks and
  2,000,000 activities; plus 100 smaller organizations with their default pipeline only,
  5-13 members and 200-3,000 deals each (about 1,000 users in all, one membership each: the
  many-token scenarios of `bench.run` use one access token per user);
- 200,000 events of the big organization (one `deal.updated` per deal, fewer with fewer
  deals), for the change-feed scenario;
- rebuilds `deal_stats` for every organization, then VACUUM ANALYZE.

`--deals` (big organization; contacts, tasks and activities scale with it) and `--orgs`
(smaller organizations) make a smaller dataset for trying the harness out; the environment
variables BENCH_DEALS and BENCH_ORGS do the same for every `bench` module.

The data is generated from a fixed seed, so every load is identical. A completed load is
marked with a comment on the database; when the marker and the row counts match, loading is
skipped (`--fresh` drops and recreates the database regardless).

Speed-ups, all undone before the load finishes: secondary (non-constraint) indexes are dropped
during COPY and recreated from their exact `pg_indexes` definitions afterwards; foreign-key
triggers are skipped (`session_replication_role = replica`, superuser only) and referential
integrity is verified with anti-joins after the load instead.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from app.core.config import Environment, Settings
from app.core.contact_keys import match_keys
from app.core.security import PasswordHasher
from app.core.text import fold, fold_fields
from app.db.session import create_engine, create_session_factory
from app.models import CustomFieldEntity
from app.models.pipeline import DEFAULT_PIPELINE_NAME, DEFAULT_STAGES
from app.repositories.custom_fields import index_ddl
from app.repositories.read_models import ReadModelRepository
from bench.common import (
    BENCH_PASSWORD,
    BENCH_SECRET_KEY,
    BIG_DEFAULT_PIPELINE_ID,
    BIG_ORG_ID,
    OWNER_EMAIL,
    PARTNERSHIPS_PIPELINE_ID,
    SEED,
    asyncpg_dsn,
    database_name,
    database_url,
    maintenance_dsn,
    run_alembic_upgrade,
    schema_fingerprint,
)

MARKER_PREFIX = "minicrm-bench-dataset"
# A deal custom field of the big organization (contract section 17): a select whose options
# each hold about 1/30 of its deals (`bench.run`'s `cf.<key>` filter scenario).
CUSTOM_FIELD_KEY = "source"
CUSTOM_FIELD_OPTIONS = tuple(f"source_{n:02d}" for n in range(1, 31))
CHUNK = 50_000
SPAN = timedelta(days=730)
BULK_TABLES = ("contacts", "deals", "tasks", "activities", "events")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


STATUSES = ("new", "in_progress", "won", "lost")
STATUS_WEIGHTS = (0.25, 0.35, 0.22, 0.18)
# P(stage | status): new deals sit early in the pipeline, won deals are mostly closed.
STAGES = ("qualification", "proposal", "negotiation", "closed")
STAGE_GIVEN_STATUS = {
    "new": (0.85, 0.15, 0.0, 0.0),
    "in_progress": (0.25, 0.40, 0.35, 0.0),
    "won": (0.0, 0.0, 0.10, 0.90),
    "lost": (0.35, 0.30, 0.20, 0.15),
}
# The big organization's other pipelines: (id, name, share of its deals, (key, name,
# probability) per stage, P(stage | status) as above).
OTHER_PIPELINES = (
    (
        PARTNERSHIPS_PIPELINE_ID,
        "Partnerships",
        0.12,
        (("intro", "Intro call", 20), ("pilot", "Pilot", 50), ("terms", "Terms", 80),
         ("signed", "Signed", 100)),
        {
            "new": (0.9, 0.1, 0.0, 0.0),
            "in_progress": (0.3, 0.4, 0.3, 0.0),
            "won": (0.0, 0.0, 0.2, 0.8),
            "lost": (0.4, 0.3, 0.2, 0.1),
        },
    ),
    (
        PARTNERSHIPS_PIPELINE_ID + 1,
        "Renewals",
        0.08,
        (("due", "Due", 60), ("quoted", "Quoted", 80), ("renewed", "Renewed", 100)),
        {
            "new": (1.0, 0.0, 0.0),
            "in_progress": (0.4, 0.6, 0.0),
            "won": (0.0, 0.1, 0.9),
            "lost": (0.5, 0.4, 0.1),
        },
    ),
)  # fmt: skip
CURRENCIES = ("USD", "EUR", "GBP")
CURRENCY_WEIGHTS = (0.80, 0.15, 0.05)
ACTIVITY_TYPES = ("comment", "status_changed", "stage_changed", "task_created", "system")
ACTIVITY_WEIGHTS = (0.45, 0.20, 0.20, 0.10, 0.05)

FIRST_NAMES = _words(
    "Anna James Maria Robert Linda Michael Sarah David Laura Daniel Emma Thomas Olivia Lukas "
    "Sofia Jonas Mia Felix Lea Paul Chloe Hugo Ines Mateo Julia Noah Elena Marco Chiara Luca"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Miller Davis Garcia Wilson Taylor Anderson Thomas Moore "
    "Martin Jackson White Harris Clark Lewis Walker Müller Schmidt Schneider Fischer Weber "
    "Meyer Wagner Becker Dubois Laurent Moreau Rossi Russo Bianchi Novak Kowalski"
)
CYRILLIC_NAMES = (
    ("Иван", "Петров"),
    ("Мария", "Иванова"),
    ("Алексей", "Смирнов"),
    ("Ольга", "Кузнецова"),
    ("Дмитрий", "Попов"),
    ("Елена", "Соколова"),
    ("Сергей", "Лебедев"),
    ("Наталья", "Козлова"),
)
DOMAINS = ("example.com", "acme.test", "globex.test", "initech.test", "umbrella.test")
COMPANY_ROOTS = _words(
    "Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Tyrell Cyberdyne Soylent Wonka "
    "Massive Dynamic Aperture Nakatomi Oscorp Gringotts Monarch Virtucon Zorg Duff Krusty "
    "Prestige Sterling Pied Piper Bluth Dunder Mifflin Los Pollos Nordwind Bergmann Kaiser "
    "Северсталь Росток Альфа Вектор Лотос"
)
COMPANY_SUFFIXES = ("Inc", "GmbH", "Ltd", "LLC", "SA", "Group", "Holdings", "AG")
PRODUCTS = (
    "annual licence",
    "enterprise upgrade",
    "support renewal",
    "pilot project",
    "onboarding package",
    "consulting hours",
    "hardware refresh",
    "cloud migration",
    "data platform",
    "security audit",
    "training programme",
    "expansion seats",
    "API add-on",
    "managed service",
    "Lizenzverlängerung",
    "внедрение CRM",
)
TASK_TITLES = (
    "Call back",
    "Send proposal",
    "Prepare demo",
    "Follow up by email",
    "Schedule meeting",
    "Review contract",
    "Send invoice",
    "Check budget",
    "Ask for referral",
    "Update pricing",
)
COMMENTS = (
    "Spoke with procurement, waiting for budget approval.",
    "Customer asked for a discount on the second year.",
    "Demo went well; technical team is convinced.",
    "Legal review in progress.",
    "Need to loop in the CFO.",
    "Competitor offered a lower price.",
    "Sent the revised quote.",
    "Клиент просит перенести встречу на следующую неделю.",
    "Rückruf vereinbart für Donnerstag.",
    "Champion left the company, need a new contact.",
)


# Bump when the generated data changes in a way the other fields of `Plan` do not show:
# an older dataset is then reloaded. 2: 100 smaller organizations, about 1,000 users.
# 3: pipelines (the big organization's deals over three of them).
LAYOUT = 3
BIG_DEALS = 1_000_000
MAX_EVENTS = 200_000
SMALL_ORGS = 100


@dataclass(frozen=True)
class Plan:
    """Every number that determines the dataset; its hash is part of the completion marker."""

    layout: int = LAYOUT
    big_deals: int = BIG_DEALS
    big_contacts: int = 100_000
    big_tasks: int = 300_000
    big_activities: int = 2_000_000
    big_members: int = 100
    # The change feed's events, all of the big organization (one per deal, at most 200,000:
    # enough for the feed scenario of `bench.run`, which reads them 1,000 at a time).
    big_events: int = MAX_EVENTS
    small_orgs: int = SMALL_ORGS
    seed: int = SEED
    schema: str = ""  # hash of the migrations (an edited migration forces a reload)
    # The big organization's deal custom field: its key and options (a change reloads).
    custom_field: tuple[str, ...] = (CUSTOM_FIELD_KEY, *CUSTOM_FIELD_OPTIONS)
    # per smaller organization: (members, contacts, deals, tasks, activities), from the seed
    small_sizes: tuple[tuple[int, int, int, int, int], ...] = field(default=())

    @classmethod
    def build(cls, *, timeline: bool, deals: int | None = None, orgs: int | None = None) -> Plan:
        """The full dataset, or the sizes of `deals`/`orgs` (else BENCH_DEALS/BENCH_ORGS)."""
        big_deals = deals or int(os.environ.get("BENCH_DEALS") or BIG_DEALS)
        small_orgs = orgs if orgs is not None else int(os.environ.get("BENCH_ORGS") or SMALL_ORGS)
        if big_deals < 1000 or small_orgs < 1:
            raise SystemExit("the dataset needs at least 1,000 deals and 1 smaller organization")
        rng = random.Random(SEED)
        sizes = []
        for _ in range(small_orgs):
            n_deals = rng.randint(200, 3000)
            sizes.append(
                (
                    rng.randint(5, 13),
                    rng.randint(n_deals // 8, n_deals // 3),
                    n_deals,
                    rng.randint(n_deals // 10, n_deals // 4) if timeline else 0,
                    rng.randint(n_deals // 2, n_deals * 2) if timeline else 0,
                )
            )
        return cls(
            big_deals=big_deals,
            big_contacts=max(100, big_deals // 10),
            big_tasks=big_deals * 3 // 10 if timeline else 0,
            big_activities=big_deals * 2 if timeline else 0,
            big_events=min(MAX_EVENTS, big_deals),
            small_orgs=small_orgs,
            schema=schema_fingerprint(),
            small_sizes=tuple(sizes),
        )

    @property
    def signature(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    @property
    def marker(self) -> str:
        return f"{MARKER_PREFIX}:{self.signature}:complete"

    @property
    def users(self) -> int:
        return self.big_members + sum(s[0] for s in self.small_sizes)

    def describe(self) -> str:
        return (
            f"{self.big_deals:,} deals in organization {BIG_ORG_ID} and "
            f"{sum(s[2] for s in self.small_sizes):,} in {self.small_orgs} smaller ones, "
            f"{self.users:,} users (marker {self.signature})"
        )

    def expected_counts(self) -> dict[str, int]:
        """Rows of the seed dataset per table (the benchmark may add rows with larger ids)."""
        return {
            "organizations": 1 + self.small_orgs,
            "pipelines": 1 + len(OTHER_PIPELINES) + self.small_orgs,
            "users": self.users,
            "memberships": self.users,
            "contacts": self.big_contacts + sum(s[1] for s in self.small_sizes),
            "deals": self.big_deals + sum(s[2] for s in self.small_sizes),
            "tasks": self.big_tasks + sum(s[3] for s in self.small_sizes),
            "activities": self.big_activities + sum(s[4] for s in self.small_sizes),
            "events": self.big_events,
        }


def _weighted(
    rng: random.Random, population: Sequence[Any], weights: Sequence[float], k: int
) -> list[Any]:
    return rng.choices(population, weights=weights, k=k)


class Generator:
    """Produces the rows, table by table, in id order (ids are assigned here, not by sequences)."""

    def __init__(self, plan: Plan, password_hash: str, now: datetime) -> None:
        self.plan = plan
        self.password_hash = password_hash
        self.now = now
        self.start = now - SPAN
        self.rng = random.Random(plan.seed + 1)
        # filled while generating: the ids each organization owns
        self.org_users: dict[int, list[int]] = {}
        self.org_contacts: dict[int, range] = {}
        self.org_deals: dict[int, range] = {}
        self.deal_created: list[float] = []  # seconds after `start`, indexed by deal id - 1
        self.default_pipeline: dict[int, int] = {}  # organization id -> its default pipeline
        self._titles = [f"{c} {s}" for c in COMPANY_ROOTS for s in COMPANY_SUFFIXES]

    def _at(self, offset: float) -> datetime:
        return self.start + timedelta(seconds=offset)

    def _sorted_offsets(self, n: int) -> list[float]:
        """n creation times (seconds after `start`), sorted: ids grow with creation time."""
        span = SPAN.total_seconds()
        rnd = self.rng.random
        return sorted(rnd() * span for _ in range(n))

    # --- tenants -----------------------------------------------------------------------------
    def organizations(self) -> list[tuple[Any, ...]]:
        rows = [(BIG_ORG_ID, "Bench Big Corp", self.start)]
        for k in range(self.plan.small_orgs):
            rows.append((BIG_ORG_ID + 1 + k, f"Bench Small Org {k + 1:02d}", self.start))
        return rows

    def pipelines(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Every organization's default pipeline (the big organization's first, with its other
        two after it: ids 1-3, then the smaller organizations' in order), and their stages."""
        pipelines: list[tuple[Any, ...]] = []
        stages: list[tuple[Any, ...]] = []

        def add(org_id: int, name: str, default: bool, own: Sequence[tuple[str, str, int]]) -> None:
            pipeline_id = len(pipelines) + 1
            pipelines.append((pipeline_id, org_id, name, default, self.start, self.start))
            for position, (key, stage_name, probability) in enumerate(own):
                stages.append(
                    (len(stages) + 1, org_id, pipeline_id, key, stage_name, position, probability)
                )

        add(BIG_ORG_ID, DEFAULT_PIPELINE_NAME, True, DEFAULT_STAGES)
        assert len(pipelines) == BIG_DEFAULT_PIPELINE_ID
        for _, name, _, own, _ in OTHER_PIPELINES:
            add(BIG_ORG_ID, name, False, own)
        for k in range(self.plan.small_orgs):
            org_id = BIG_ORG_ID + 1 + k
            self.default_pipeline[org_id] = len(pipelines) + 1
            add(org_id, DEFAULT_PIPELINE_NAME, True, DEFAULT_STAGES)
        self.default_pipeline[BIG_ORG_ID] = BIG_DEFAULT_PIPELINE_ID
        return pipelines, stages

    def users_and_memberships(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        users: list[tuple[Any, ...]] = []
        memberships: list[tuple[Any, ...]] = []
        user_id = 0
        for n in range(self.plan.big_members):
            user_id += 1
            email = OWNER_EMAIL if n == 0 else f"user{n}@big.bench.example.com"
            users.append((user_id, email, f"Big User {n}", self.password_hash, self.start))
            role = ("owner", "admin", "manager", "manager")[n] if n < 4 else "member"
            memberships.append((BIG_ORG_ID, user_id, role, self.start))
            self.org_users.setdefault(BIG_ORG_ID, []).append(user_id)
        for k, (members, *_) in enumerate(self.plan.small_sizes):
            org_id = BIG_ORG_ID + 1 + k
            for n in range(members):
                user_id += 1
                local = "owner" if n == 0 else f"member{n}"
                email = f"{local}@small{k + 1}.bench.example.com"
                users.append(
                    (user_id, email, f"Small {k + 1} User {n}", self.password_hash, self.start)
                )
                memberships.append((org_id, user_id, "owner" if n == 0 else "member", self.start))
                self.org_users.setdefault(org_id, []).append(user_id)
        return users, memberships

    def _org_sizes(self) -> Iterator[tuple[int, int, int, int, int]]:
        p = self.plan
        yield BIG_ORG_ID, p.big_contacts, p.big_deals, p.big_tasks, p.big_activities
        for k, (_, c, d, t, a) in enumerate(p.small_sizes):
            yield BIG_ORG_ID + 1 + k, c, d, t, a

    # --- contacts ----------------------------------------------------------------------------
    def contacts(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = self.rng
        next_id = 1
        for org_id, n, *_ in self._org_sizes():
            owners = self.org_users[org_id]
            self.org_contacts[org_id] = range(next_id, next_id + n)
            offsets = self._sorted_offsets(n)
            chunk: list[tuple[Any, ...]] = []
            for i, offset in enumerate(offsets):
                cid = next_id + i
                if rng.random() < 0.1:
                    first, last = rng.choice(CYRILLIC_NAMES)
                    email = f"client{cid}@{rng.choice(DOMAINS)}"
                else:
                    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                    email = f"{first.lower()}.{last.lower()}{cid}@{rng.choice(DOMAINS)}"
                name = f"{first} {last}"
                if rng.random() < 0.15:
                    email = None
                phone = f"+1-555-{cid:07d}" if rng.random() < 0.7 else None
                created = self._at(offset)
                chunk.append(
                    (
                        cid,
                        org_id,
                        rng.choice(owners),
                        name,
                        email,
                        phone,
                        fold_fields(name, email, phone),
                        *match_keys(email, phone),
                        created,
                        created,
                    )
                )
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            next_id += n

    # --- deals -------------------------------------------------------------------------------
    def deals(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = self.rng
        span = SPAN.total_seconds()
        folded: dict[str, str] = {}
        stage_choices = {
            status: list(
                itertools.accumulate(weights)  # cumulative weights for rng.choices
            )
            for status, weights in STAGE_GIVEN_STATUS.items()
        }
        # (pipeline id, its stage keys, cumulative weights per status) of the big
        # organization's other pipelines, and the cumulative shares that pick them.
        others = [
            (
                pipeline_id,
                [key for key, _, _ in own],
                {status: list(itertools.accumulate(w)) for status, w in given.items()},
            )
            for pipeline_id, _, _, own, given in OTHER_PIPELINES
        ]
        shares = list(itertools.accumulate(share for _, _, share, _, _ in OTHER_PIPELINES))
        next_id = 1
        for org_id, _, n, *_ in self._org_sizes():
            owners = self.org_users[org_id]
            # members own more deals than the owner/admins
            owner_weights = [1.0] * min(2, len(owners)) + [3.0] * max(0, len(owners) - 2)
            contacts = self.org_contacts[org_id]
            self.org_deals[org_id] = range(next_id, next_id + n)
            offsets = self._sorted_offsets(n)
            statuses = _weighted(rng, STATUSES, STATUS_WEIGHTS, n)
            currencies = _weighted(rng, CURRENCIES, CURRENCY_WEIGHTS, n)
            owner_ids = _weighted(rng, owners, owner_weights, n)
            chunk: list[tuple[Any, ...]] = []
            for i in range(n):
                did = next_id + i
                status = statuses[i]
                pipeline_id = self.default_pipeline[org_id]
                stage = rng.choices(STAGES, cum_weights=stage_choices[status])[0]
                if org_id == BIG_ORG_ID:
                    pick = rng.random()
                    for share, (other_id, keys, weights) in zip(shares, others, strict=True):
                        if pick < share:
                            pipeline_id = other_id
                            stage = rng.choices(keys, cum_weights=weights[status])[0]
                            break
                # log-normal amounts around ~8,000 (a few zero-amount early deals)
                if status == "new" and rng.random() < 0.08:
                    cents = 0
                else:
                    cents = max(100, min(int(rng.lognormvariate(13.6, 1.3)), 99_999_999_99))
                title = f"{rng.choice(self._titles)} {rng.choice(PRODUCTS)}"
                search = folded.get(title)
                if search is None:
                    search = folded[title] = fold(title)
                offset = offsets[i]
                self.deal_created.append(offset)
                created = self._at(offset)
                if status == "new" and rng.random() < 0.7:
                    updated = created
                else:
                    updated = self._at(offset + rng.random() * (span - offset))
                chunk.append(
                    (
                        did,
                        org_id,
                        rng.choice(contacts),
                        owner_ids[i],
                        title,
                        search,
                        Decimal(cents).scaleb(-2),
                        currencies[i],
                        status,
                        pipeline_id,
                        stage,
                        created,
                        updated,
                        _custom_fields(org_id, did),
                    )
                )
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            next_id += n

    # --- tasks -------------------------------------------------------------------------------
    def tasks(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = self.rng
        span = SPAN.total_seconds()
        today = self.now.date()
        next_id = 1
        for org_id, _, _, n, _ in self._org_sizes():
            if n == 0:
                continue
            deals = self.org_deals[org_id]
            picks = sorted(
                (o + rng.random() * (span - o), d)
                for d in (rng.choice(deals) for _ in range(n))
                for o in (self.deal_created[d - 1],)
            )
            chunk: list[tuple[Any, ...]] = []
            for i, (offset, deal_id) in enumerate(picks):
                created = self._at(offset)
                due: date | None = None
                if rng.random() < 0.85:
                    due = created.date() + timedelta(days=rng.randint(0, 45))
                done = rng.random() < (0.75 if due is not None and due < today else 0.15)
                description = rng.choice(COMMENTS) if rng.random() < 0.4 else None
                chunk.append(
                    (
                        next_id + i,
                        org_id,
                        deal_id,
                        rng.choice(TASK_TITLES),
                        description,
                        due,
                        done,
                        created,
                        created,
                    )
                )
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            next_id += n

    # --- activities --------------------------------------------------------------------------
    def activities(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = self.rng
        span = SPAN.total_seconds()
        payloads = {
            "comment": [json.dumps({"text": c}, ensure_ascii=False) for c in COMMENTS],
            "status_changed": [
                json.dumps({"old_status": a, "new_status": b})
                for a in STATUSES
                for b in STATUSES
                if a != b
            ],
            "stage_changed": [
                json.dumps({"old_stage": a, "new_stage": b}) for a, b in itertools.pairwise(STAGES)
            ],
            "task_created": [
                json.dumps({"task_id": 1000 + i, "task_title": t})
                for i, t in enumerate(TASK_TITLES)
            ],
            "system": [json.dumps({"text": "Deal imported from spreadsheet."})],
        }
        next_id = 1
        for org_id, _, _, _, n in self._org_sizes():
            if n == 0:
                continue
            deals = self.org_deals[org_id]
            authors = self.org_users[org_id]
            picks = sorted(
                (o + rng.random() * (span - o), d)
                for d in (rng.choice(deals) for _ in range(n))
                for o in (self.deal_created[d - 1],)
            )
            types = _weighted(rng, ACTIVITY_TYPES, ACTIVITY_WEIGHTS, n)
            chunk: list[tuple[Any, ...]] = []
            for i, (offset, deal_id) in enumerate(picks):
                kind = types[i]
                author = None if kind == "system" else rng.choice(authors)
                chunk.append(
                    (
                        next_id + i,
                        org_id,
                        deal_id,
                        author,
                        kind,
                        rng.choice(payloads[kind]),
                        self._at(offset),
                    )
                )
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            next_id += n


def _custom_fields(org_id: int, deal_id: int) -> str:
    """A deal's `custom_fields` (JSON text): the big organization's deals each hold one option
    of its select, spread evenly by id (no draw from the generator: the rest of the dataset
    stays what it was); the others have none."""
    if org_id != BIG_ORG_ID:
        return "{}"
    option = CUSTOM_FIELD_OPTIONS[(deal_id * 7919) % len(CUSTOM_FIELD_OPTIONS)]
    return json.dumps({CUSTOM_FIELD_KEY: option})


async def _define_custom_field(conn: asyncpg.Connection) -> None:
    """The big organization's definition, and its per-key index as the app makes it."""
    await conn.execute(
        "INSERT INTO custom_field_definitions "
        "(organization_id, entity, key, label, type, options, required, created_at, updated_at) "
        "VALUES ($1, 'deal', $2, 'Lead source', 'select', $3::jsonb, false, now(), now())",
        BIG_ORG_ID,
        CUSTOM_FIELD_KEY,
        json.dumps(list(CUSTOM_FIELD_OPTIONS)),
    )
    await conn.execute(index_ddl(CustomFieldEntity.DEAL, CUSTOM_FIELD_KEY))


COLUMNS = {
    "organizations": ("id", "name", "created_at"),
    "pipelines": ("id", "organization_id", "name", "is_default", "created_at", "updated_at"),
    "pipeline_stages": (
        "id",
        "organization_id",
        "pipeline_id",
        "key",
        "name",
        "position",
        "probability",
    ),
    "users": ("id", "email", "name", "password_hash", "created_at"),
    "memberships": ("organization_id", "user_id", "role", "created_at"),
    "contacts": (
        "id",
        "organization_id",
        "owner_id",
        "name",
        "email",
        "phone",
        "search_text",
        "email_key",
        "phone_key",
        "created_at",
        "updated_at",
    ),
    "deals": (
        "id",
        "organization_id",
        "contact_id",
        "owner_id",
        "title",
        "search_text",
        "amount",
        "currency",
        "status",
        "pipeline_id",
        "stage",
        "created_at",
        "updated_at",
        "custom_fields",
    ),
    "tasks": (
        "id",
        "organization_id",
        "deal_id",
        "title",
        "description",
        "due_date",
        "is_done",
        "created_at",
        "updated_at",
    ),
    "activities": (
        "id",
        "organization_id",
        "deal_id",
        "author_id",
        "type",
        "payload",
        "created_at",
    ),
}

INTEGRITY_CHECKS = {
    "deals without a contact of their organization": (
        "SELECT count(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM contacts c "
        "WHERE c.organization_id = d.organization_id AND c.id = d.contact_id)"
    ),
    "tasks without a deal of their organization": (
        "SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM deals d "
        "WHERE d.organization_id = t.organization_id AND d.id = t.deal_id)"
    ),
    "activities without a deal of their organization": (
        "SELECT count(*) FROM activities a WHERE NOT EXISTS (SELECT 1 FROM deals d "
        "WHERE d.organization_id = a.organization_id AND d.id = a.deal_id)"
    ),
    "deals at a stage that is not one of their pipeline's": (
        "SELECT count(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM pipeline_stages s "
        "WHERE s.organization_id = d.organization_id AND s.pipeline_id = d.pipeline_id "
        "AND s.key = d.stage)"
    ),
    "deal owners that are not members": (
        "SELECT count(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM memberships m "
        "WHERE m.organization_id = d.organization_id AND m.user_id = d.owner_id)"
    ),
}


async def rebuild_deal_stats(url: str, organization_ids: list[int]) -> None:
    """The application's own rebuild (`ReadModelRepository.rebuild_deal_figures`: running
    totals, daily creation counts and custom field value counts), one transaction per
    organization, so the figures
    follow whatever the application keeps in them."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ENVIRONMENT=Environment.TEST,
        SECRET_KEY=BENCH_SECRET_KEY,
        DATABASE_URL=url,
    )
    engine = create_engine(settings)
    try:
        session_factory = create_session_factory(engine)
        for organization_id in organization_ids:
            async with session_factory() as session, session.begin():
                await ReadModelRepository(session, organization_id).rebuild_deal_figures()
    finally:
        await engine.dispose()


async def _database_state(url: str, plan: Plan) -> str:
    """'missing', 'complete' (marker and counts match) or 'partial'."""
    admin = await asyncpg.connect(maintenance_dsn(url))
    try:
        comment = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            database_name(url),
        )
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", database_name(url)
        )
    finally:
        await admin.close()
    if not exists:
        return "missing"
    if comment != plan.marker:
        return "partial"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        counts = await seed_counts(conn, plan)
    finally:
        await conn.close()
    return "complete" if counts == plan.expected_counts() else "partial"


async def seed_counts(conn: asyncpg.Connection, plan: Plan) -> dict[str, int]:
    """Rows with seed ids per table (rows the benchmark added later have larger ids)."""
    expected = plan.expected_counts()
    counts: dict[str, int] = {}
    for name, n in expected.items():
        if name == "memberships":
            counts[name] = await conn.fetchval(
                "SELECT count(*) FROM memberships WHERE user_id <= $1", expected["users"]
            )
        else:
            counts[name] = await conn.fetchval(f"SELECT count(*) FROM {name} WHERE id <= $1", n)
    return counts


async def _recreate_database(url: str) -> None:
    name = database_name(url)
    admin = await asyncpg.connect(maintenance_dsn(url))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {quoted}")
    finally:
        await admin.close()


async def _mark_complete(url: str, plan: Plan) -> None:
    admin = await asyncpg.connect(maintenance_dsn(url))
    try:
        quoted = '"' + database_name(url).replace('"', '""') + '"'
        await admin.execute(f"COMMENT ON DATABASE {quoted} IS '{plan.marker}'")
    finally:
        await admin.close()


async def _password_hash() -> str:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ENVIRONMENT=Environment.TEST,
        SECRET_KEY=BENCH_SECRET_KEY,
        DATABASE_URL="sqlite+aiosqlite:///:memory:",
    )
    return await PasswordHasher(settings).hash(BENCH_PASSWORD)


async def _copy(
    conn: asyncpg.Connection, name: str, chunks: Iterator[list[tuple[Any, ...]]]
) -> tuple[int, float]:
    started = time.perf_counter()
    rows = 0
    for chunk in chunks:
        await conn.copy_records_to_table(name, records=chunk, columns=COLUMNS[name])
        rows += len(chunk)
    return rows, time.perf_counter() - started


async def _load(url: str, plan: Plan) -> dict[str, float]:
    timings: dict[str, float] = {}
    password_hash = await _password_hash()
    gen = Generator(plan, password_hash, datetime.now(UTC))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        try:
            await conn.execute("SET session_replication_role = replica")
            fk_checks = False
        except asyncpg.InsufficientPrivilegeError:
            fk_checks = True
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET synchronous_commit = off")
        indexes = await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "JOIN pg_class c ON c.relname = i.indexname AND c.relkind = 'i' "
            "WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[]) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)",
            list(BULK_TABLES),
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')

        users, memberships = gen.users_and_memberships()
        pipelines, stages = gen.pipelines()
        for name, rows in (
            ("organizations", gen.organizations()),
            ("pipelines", pipelines),
            ("pipeline_stages", stages),
            ("users", users),
            ("memberships", memberships),
        ):
            await conn.copy_records_to_table(name, records=rows, columns=COLUMNS[name])
        for name, chunks in (
            ("contacts", gen.contacts()),
            ("deals", gen.deals()),
            ("tasks", gen.tasks()),
            ("activities", gen.activities()),
        ):
            n, seconds = await _copy(conn, name, chunks)
            timings[f"copy {name} ({n:,} rows)"] = seconds
            print(f"  copied {n:>9,} {name:<10} in {seconds:6.1f} s", flush=True)

        started = time.perf_counter()
        n = await _load_events(conn, plan)
        timings[f"insert events ({n:,} rows)"] = time.perf_counter() - started
        print(f"  inserted {n:>7,} events     in {time.perf_counter() - started:6.1f} s")

        started = time.perf_counter()
        for row in indexes:
            await conn.execute(row["indexdef"])
        timings[f"recreate {len(indexes)} secondary indexes"] = time.perf_counter() - started
        print(f"  recreated {len(indexes)} indexes in {time.perf_counter() - started:.1f} s")

        for name in (
            "organizations",
            "pipelines",
            "pipeline_stages",
            "users",
            "contacts",
            "deals",
            "tasks",
            "activities",
            "events",
        ):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {name}), false)"
            )

        started = time.perf_counter()
        await _define_custom_field(conn)
        timings["custom field definition + index"] = time.perf_counter() - started

        started = time.perf_counter()
        organization_ids = [r["id"] for r in await conn.fetch("SELECT id FROM organizations")]
        await rebuild_deal_stats(url, organization_ids)
        timings["rebuild deal_stats, daily and value counts"] = time.perf_counter() - started

        if not fk_checks:
            await conn.execute("SET session_replication_role = origin")
            started = time.perf_counter()
            for label, sql in INTEGRITY_CHECKS.items():
                bad = await conn.fetchval(sql)
                if bad:
                    raise SystemExit(f"integrity check failed: {bad} {label}")
            timings["verify referential integrity"] = time.perf_counter() - started

        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        timings["VACUUM ANALYZE"] = time.perf_counter() - started
    finally:
        await conn.close()
    return timings


# One `deal.updated` event per deal of the big organization (oldest deals first), a second
# apart and ending now (well within the retention), shaped as the app writes them: the deal
# as its GET answers it and the stage change.
_EVENTS_FROM_DEALS = """
INSERT INTO events (id, organization_id, type, occurred_at, actor_type, actor_id, data)
SELECT n, d.organization_id, 'deal.updated', now() - ($2 - n) * interval '1 second', 'user',
       d.owner_id,
       json_build_object(
           'object', json_build_object(
               'id', d.id, 'organization_id', d.organization_id, 'contact_id', d.contact_id,
               'owner_id', d.owner_id, 'title', d.title, 'amount', d.amount::float8,
               'currency', d.currency, 'status', d.status, 'stage', d.stage,
               'created_at', d.created_at, 'updated_at', d.updated_at,
               'pipeline_id', d.pipeline_id, 'company_id', d.company_id,
               'custom_fields', d.custom_fields),
           'changes', json_build_object('stage', json_build_array('qualification', d.stage))
       )::text
FROM (
    SELECT deals.*, row_number() OVER (ORDER BY id) AS n
    FROM deals WHERE organization_id = $1 ORDER BY id LIMIT $2
) AS d
"""


async def _load_events(conn: asyncpg.Connection, plan: Plan) -> int:
    await conn.execute(_EVENTS_FROM_DEALS, BIG_ORG_ID, plan.big_events)
    return int(await conn.fetchval("SELECT count(*) FROM events"))


async def ensure_dataset(
    *, fresh: bool = False, timeline: bool = True, deals: int | None = None, orgs: int | None = None
) -> Plan:
    """Create and load the benchmark database unless an identical load is already there."""
    url = database_url()
    plan = Plan.build(timeline=timeline, deals=deals, orgs=orgs)
    state = "missing" if fresh else await _database_state(url, plan)
    if state == "complete":
        run_alembic_upgrade(url)  # no-op at head; applies migrations added since the load
        print(f"dataset present in {database_name(url)}: {plan.describe()}; not reloading")
        return plan
    print(f"loading {plan.describe()} into {database_name(url)} (state: {state}) ...", flush=True)
    started = time.perf_counter()
    await _recreate_database(url)
    run_alembic_upgrade(url)
    migrated = time.perf_counter()
    timings = {"create database + alembic upgrade head": migrated - started}
    timings.update(await _load(url, plan))
    await _mark_complete(url, plan)
    total = time.perf_counter() - started
    for label, seconds in timings.items():
        print(f"  {label:<45} {seconds:7.1f} s")
    print(f"load complete in {total:.1f} s")
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database")
    parser.add_argument(
        "--skip-timeline", action="store_true", help="no tasks/activities (faster load)"
    )
    add_size_options(parser)
    args = parser.parse_args()
    asyncio.run(
        ensure_dataset(
            fresh=args.fresh, timeline=not args.skip_timeline, deals=args.deals, orgs=args.orgs
        )
    )


def add_size_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deals",
        type=int,
        help=f"deals of the big organization (default BENCH_DEALS or {BIG_DEALS:,})",
    )
    parser.add_argument(
        "--orgs",
        type=int,
        help=f"smaller organizations (default BENCH_ORGS or {SMALL_ORGS})",
    )


if __name__ == "__main__":
    main()
