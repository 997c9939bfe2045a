"""Authorization matrix: every route of the app x every role, tenant isolation by id.

The table `ROUTES` maps each (method, path template) of the API to a request builder and the
status each kind of caller must get (CONTRACT sections 2-4). Routes are enumerated from the
running app, so a route added without an entry here fails the suite. Every refused request is
checked to have written nothing (a snapshot of every table before and after).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import PASSWORD, Api, User, assert_problem, snapshot

# Recent FastAPI keeps included routers lazily in `app.routes`; this flattens them (older
# versions list every APIRoute in `app.routes` directly).
iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)

MEMBER_ROLES = ("owner", "admin", "manager", "member")
# outsider: a logged-in owner of *another* organization; anonymous: no Authorization header.
ROLES = (*MEMBER_ROLES, "outsider", "anonymous")
# API keys of each role a key may have, created by the organization's admin: each must get
# what a person of its role gets (the same table), except on the routes only people may use.
KEY_ROLES = ("key_admin", "key_manager", "key_member")
EXCLUDED_PREFIXES = ("/docs", "/redoc", "/openapi.json", "/metrics", "/health", "/static")
Expected = int | tuple[int, str]


# --- the world: two organizations, a user of every role in each, data owned by the owner ---


@dataclass
class Org:
    id: int
    users: dict[str, User]
    contact_id: int
    deal_id: int
    task_id: int
    comment_id: int
    company_id: int

    @property
    def owner(self) -> User:
        return self.users["owner"]


@dataclass
class World:
    api: Api
    engine: AsyncEngine
    a: Org
    b: Org

    def other(self, org: Org) -> Org:
        return self.b if org is self.a else self.a

    async def new_user(self) -> User:
        return await self.api.register(email=unique_email(), organization_name="Side org")

    async def new_member(self, org: Org, role: str) -> User:
        return await self.api.member_of(org.owner, role, email=unique_email())

    async def new_company(self, by: User) -> int:
        return await created(by.post("/companies", json={"name": "Fresh company"}))

    async def new_contact(self, by: User) -> int:
        return await created(by.post("/contacts", json={"name": "Fresh contact"}))

    async def new_deal(self, by: User, *, amount: str = "100.00") -> int:
        contact_id = await self.new_contact(by)
        return await created(
            by.post(
                "/deals", json={"contact_id": contact_id, "title": "Fresh deal", "amount": amount}
            )
        )

    async def new_task(self, by: User, deal_id: int | None = None) -> int:
        deal_id = deal_id or await self.new_deal(by)
        return await created(by.post("/tasks", json={"deal_id": deal_id, "title": "Fresh task"}))

    async def login(self, user: User) -> dict[str, Any]:
        response = await self.api.client.post(
            self.api.url("/auth/login"), json={"email": user.email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def unique_email() -> str:
    return f"matrix-{uuid.uuid4().hex[:12]}@example.com"


async def created(request: Awaitable[httpx.Response]) -> int:
    response = await request
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def build_org(api: Api, name: str) -> Org:
    owner = await api.register(email=unique_email(), organization_name=name)
    users = {"owner": owner}
    for role in ("admin", "manager", "member"):
        users[role] = await api.member_of(owner, role, email=unique_email())
    contact_id = await created(
        owner.post(
            "/contacts", json={"name": f"{name} contact", "email": "c@example.com", "phone": "1"}
        )
    )
    deal_id = await created(
        owner.post(
            "/deals", json={"contact_id": contact_id, "title": f"{name} deal", "amount": "100"}
        )
    )
    task_id = await created(owner.post("/tasks", json={"deal_id": deal_id, "title": "Call"}))
    comment_id = await created(
        owner.post(
            f"/deals/{deal_id}/activities", json={"type": "comment", "payload": {"text": "Hi"}}
        )
    )
    company_id = await created(
        owner.post("/companies", json={"name": f"{name} company", "domain": "example.com"})
    )
    admin = users["admin"]
    for role in ("admin", "manager", "member"):
        response = await admin.post(
            f"/organizations/{owner.organization_id}/api-keys", json={"name": role, "role": role}
        )
        assert response.status_code == 201, response.text
        # The key stands in for its creator's token: it is sent as `Bearer <key>`.
        users[f"key_{role}"] = dataclasses.replace(admin, access_token=response.json()["key"])
    return Org(owner.organization_id, users, contact_id, deal_id, task_id, comment_id, company_id)


@pytest.fixture
async def world(make_api: Callable[..., Awaitable[Api]], database_url: str) -> World:
    api = await make_api(database_url)
    a = await build_org(api, "Alpha")
    b = await build_org(api, "Beta")
    engine = api.app.state.resources.engine
    # No key's use is recorded while the matrix runs (a refused request must leave every
    # table as it was): each counts as used just now, for the next day.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE api_keys SET last_used_at = :at"), {"at": _TOMORROW})
    return World(api=api, engine=engine, a=a, b=b)


_TOMORROW = datetime.now(UTC) + timedelta(days=1)


# --- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    json: Any = None
    actor: User | None = None  # overrides the role's user (e.g. a fresh user who leaves)
    files: Any = None  # a multipart form (file uploads) instead of `json`
    data: Any = None


@dataclass
class Ctx:
    """`org` is the organization the caller acts in (header); `target` owns the ids used."""

    world: World
    org: Org
    target: Org
    role: str
    actor: User


Builder = Callable[[Ctx], Awaitable[Req]]


def caller(world: World, org: Org, role: str) -> User:
    if role == "outsider":
        return world.other(org).owner
    if role == "anonymous":
        return org.owner  # identity used only for bodies (login); no token is sent
    return org.users[role]


async def send(ctx: Ctx, req: Req) -> httpx.Response:
    actor = req.actor or ctx.actor
    headers = {"X-Organization-Id": str(ctx.org.id)}
    if ctx.role != "anonymous":
        headers["Authorization"] = f"Bearer {actor.access_token}"
    api = ctx.world.api
    return await api.client.request(
        req.method,
        api.url(req.path),
        json=req.json,
        files=req.files,
        data=req.data,
        headers=headers,
    )


def fixed(method: str, template: str, body: Any = None) -> Builder:
    """A request on the target organization's standing data ({org}, {contact}, {deal}, ...)."""

    async def build(ctx: Ctx) -> Req:
        t = ctx.target
        path = template.format(
            org=t.id,
            contact=t.contact_id,
            deal=t.deal_id,
            task=t.task_id,
            company=t.company_id,
            user=ctx.actor.id,
        )
        payload = body(ctx) if callable(body) else body
        return Req(method, path, payload)

    return build


async def register(ctx: Ctx) -> Req:
    body = {
        "email": unique_email(),
        "password": PASSWORD,
        "name": "New user",
        "organization_name": "New org",
    }
    return Req("POST", "/auth/register", body)


async def login(ctx: Ctx) -> Req:
    return Req("POST", "/auth/login", {"email": ctx.actor.email, "password": PASSWORD})


async def refresh(ctx: Ctx) -> Req:
    tokens = await ctx.world.login(ctx.actor)
    return Req("POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]})


async def logout(ctx: Ctx) -> Req:
    tokens = await ctx.world.login(ctx.actor)
    return Req("POST", "/auth/logout", {"refresh_token": tokens["refresh_token"]})


async def add_member(ctx: Ctx) -> Req:
    user = await ctx.world.new_user()
    path = f"/organizations/{ctx.target.id}/members"
    return Req("POST", path, {"email": user.email, "role": "member"})


async def change_member_role(ctx: Ctx) -> Req:
    user = await ctx.world.new_member(ctx.target, "member")
    path = f"/organizations/{ctx.target.id}/members/{user.id}"
    return Req("PATCH", path, {"role": "manager"})


async def remove_member(ctx: Ctx) -> Req:
    user = await ctx.world.new_member(ctx.target, "member")
    return Req("DELETE", f"/organizations/{ctx.target.id}/members/{user.id}")


async def delete_contact(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.target.owner)
    return Req("DELETE", f"/contacts/{contact_id}")


async def delete_company(ctx: Ctx) -> Req:
    company_id = await ctx.world.new_company(ctx.target.owner)
    return Req("DELETE", f"/companies/{company_id}")


async def merge_contact(ctx: Ctx) -> Req:
    """A fresh duplicate of the target organization's standing contact, merged into it."""
    source_id = await ctx.world.new_contact(ctx.target.owner)
    return Req("POST", f"/contacts/{ctx.target.contact_id}/merge", {"source_ids": [source_id]})


async def delete_deal(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.target.owner)
    return Req("DELETE", f"/deals/{deal_id}")


async def delete_task(ctx: Ctx) -> Req:
    task_id = await ctx.world.new_task(ctx.target.owner)
    return Req("DELETE", f"/tasks/{task_id}")


async def trashed(by: User, path: str) -> None:
    response = await by.delete(path)
    assert response.status_code == 204, response.text


async def restore_contact(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.target.owner)
    await trashed(ctx.target.owner, f"/contacts/{contact_id}")
    return Req("POST", f"/contacts/{contact_id}/restore")


async def restore_deal(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.target.owner)
    await trashed(ctx.target.owner, f"/deals/{deal_id}")
    return Req("POST", f"/deals/{deal_id}/restore")


async def restore_task(ctx: Ctx) -> Req:
    task_id = await ctx.world.new_task(ctx.target.owner)
    await trashed(ctx.target.owner, f"/tasks/{task_id}")
    return Req("POST", f"/tasks/{task_id}/restore")


# --- expectations ------------------------------------------------------------------------

NOT_A_MEMBER: Expected = (403, "NOT_A_MEMBER")


def public(status: int) -> dict[str, Expected]:
    """No authentication needed (the body carries the credentials)."""
    return dict.fromkeys(ROLES, status)


def authenticated(status: int) -> dict[str, Expected]:
    """Any logged-in user, whatever organization."""
    return {**dict.fromkeys((*MEMBER_ROLES, "outsider"), status), "anonymous": 401}


def in_org(
    owner: Expected,
    admin: Expected | None = None,
    manager: Expected | None = None,
    member: Expected | None = None,
) -> dict[str, Expected]:
    """Members of the organization, by role; a non-member gets 403 NOT_A_MEMBER."""
    admin = owner if admin is None else admin
    manager = admin if manager is None else manager
    member = manager if member is None else member
    return {
        "owner": owner,
        "admin": admin,
        "manager": manager,
        "member": member,
        "outsider": NOT_A_MEMBER,
        "anonymous": 401,
    }


@dataclass(frozen=True)
class Route:
    build: Builder
    expected: dict[str, Expected]
    # What every API key gets instead, on a route only people may use.
    keys: Expected | None = None

    def expected_for(self, role: str) -> Expected:
        if role in KEY_ROLES:
            return self.keys if self.keys is not None else self.expected[role.removeprefix("key_")]
        return self.expected[role]


API_KEY_NOT_ALLOWED: Expected = (403, "API_KEY_NOT_ALLOWED")
PEOPLE_ONLY: Expected = (403, "PERMISSION_DENIED")


async def revoke_api_key(ctx: Ctx) -> Req:
    owner = ctx.target.owner
    response = await owner.post(
        f"/organizations/{ctx.target.id}/api-keys", json={"name": "To revoke", "role": "member"}
    )
    assert response.status_code == 201, response.text
    return Req("DELETE", f"/organizations/{ctx.target.id}/api-keys/{response.json()['id']}")


def new_field_body() -> dict[str, Any]:
    key = f"k{uuid.uuid4().hex[:12]}"
    return {"entity": "deal", "key": key, "label": "Field", "type": "text"}


async def create_custom_field(ctx: Ctx) -> Req:
    return Req("POST", "/custom-fields", new_field_body())


def on_custom_field(method: str, body: Any = None) -> Builder:
    """A request on a fresh custom field of the target organization."""

    async def build(ctx: Ctx) -> Req:
        field_id = await created(ctx.target.owner.post("/custom-fields", json=new_field_body()))
        return Req(method, f"/custom-fields/{field_id}", body)

    return build


COMMENT = {"type": "comment", "payload": {"text": "A comment"}}
# A public address given as such: nothing is resolved, and no test sends to it.
WEBHOOK = {"url": "https://93.184.215.14/hooks", "event_types": ["deal.*"]}


async def new_webhook(ctx: Ctx) -> int:
    return await created(ctx.target.owner.post("/webhooks", json=WEBHOOK))


def on_webhook(method: str, suffix: str = "", body: Any = None) -> Builder:
    """A request on a fresh webhook endpoint of the target organization."""

    async def build(ctx: Ctx) -> Req:
        return Req(method, f"/webhooks/{await new_webhook(ctx)}{suffix}", body)

    return build


async def retry_delivery(ctx: Ctx) -> Req:
    webhook_id = await new_webhook(ctx)
    async with ctx.world.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_deliveries (organization_id, endpoint_id, event_id, "
                "event_type, status, attempts, failures, created_at) VALUES "
                "(:org, :endpoint, 1, 'deal.created', 'failed', 8, 8, :at)"
            ),
            {"org": ctx.target.id, "endpoint": webhook_id, "at": datetime.now(UTC)},
        )
        delivery_id = (
            await conn.execute(
                text("SELECT max(id) FROM webhook_deliveries WHERE endpoint_id = :endpoint"),
                {"endpoint": webhook_id},
            )
        ).scalar_one()
    return Req("POST", f"/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")


IMPORT_FILE = {"file": ("contacts.csv", b"name,email\nImported,imported@example.com\n", "text/csv")}


async def new_import(ctx: Ctx) -> Req:
    return Req("POST", "/imports", files=IMPORT_FILE, data={"kind": "contacts"})


def on_import(method: str, suffix: str = "") -> Builder:
    """A request on a fresh (queued) import of the target organization, by its owner."""

    async def build(ctx: Ctx) -> Req:
        owner = ctx.target.owner
        response = await owner.post("/imports", files=IMPORT_FILE, data={"kind": "contacts"})
        assert response.status_code == 202, response.text
        return Req(method, f"/imports/{response.json()['id']}{suffix}")

    return build


PIPELINE = {
    "name": "Partners",
    "stages": [
        {"key": "intro", "name": "Intro", "probability": 10},
        {"key": "signed", "name": "Signed", "probability": 100},
    ],
}


async def new_pipeline(ctx: Ctx) -> int:
    """A fresh pipeline of the target organization (two stages: `intro`, `signed`)."""
    return await created(ctx.target.owner.post("/pipelines", json=PIPELINE))


def on_pipeline(method: str, suffix: str = "", body: Any = None) -> Builder:
    """A request on a fresh pipeline of the target organization."""

    async def build(ctx: Ctx) -> Req:
        return Req(method, f"/pipelines/{await new_pipeline(ctx)}{suffix}", body)

    return build


ROUTES: dict[tuple[str, str], Route] = {
    # auth (section 2)
    ("POST", "/auth/register"): Route(register, public(201)),
    ("POST", "/auth/login"): Route(login, public(200)),
    ("POST", "/auth/refresh"): Route(refresh, public(200)),
    ("POST", "/auth/logout"): Route(logout, public(204)),
    ("GET", "/auth/me"): Route(
        fixed("GET", "/auth/me"), authenticated(200), keys=API_KEY_NOT_ALLOWED
    ),
    # organizations and members (section 4)
    ("GET", "/organizations/me"): Route(
        fixed("GET", "/organizations/me"), authenticated(200), keys=API_KEY_NOT_ALLOWED
    ),
    ("POST", "/organizations"): Route(
        fixed("POST", "/organizations", {"name": "Another org"}),
        authenticated(201),
        keys=API_KEY_NOT_ALLOWED,
    ),
    ("GET", "/organizations/{organization_id}"): Route(
        fixed("GET", "/organizations/{org}"), in_org(200)
    ),
    ("PATCH", "/organizations/{organization_id}"): Route(
        fixed("PATCH", "/organizations/{org}", {"name": "Renamed"}), in_org(200, 200, 403)
    ),
    ("GET", "/organizations/{organization_id}/members"): Route(
        fixed("GET", "/organizations/{org}/members"), in_org(200)
    ),
    ("POST", "/organizations/{organization_id}/members"): Route(
        add_member, in_org(201, 201, 403), keys=PEOPLE_ONLY
    ),
    ("PATCH", "/organizations/{organization_id}/members/{user_id}"): Route(
        change_member_role, in_org(200, 200, 403), keys=PEOPLE_ONLY
    ),
    ("DELETE", "/organizations/{organization_id}/members/{user_id}"): Route(
        remove_member, in_org(204, 204, 403), keys=PEOPLE_ONLY
    ),
    # API keys (section 11): people only
    ("POST", "/organizations/{organization_id}/api-keys"): Route(
        fixed("POST", "/organizations/{org}/api-keys", {"name": "CI", "role": "member"}),
        in_org(201, 201, 403),
        keys=PEOPLE_ONLY,
    ),
    ("GET", "/organizations/{organization_id}/api-keys"): Route(
        fixed("GET", "/organizations/{org}/api-keys"), in_org(200, 200, 403), keys=PEOPLE_ONLY
    ),
    ("DELETE", "/organizations/{organization_id}/api-keys/{api_key_id}"): Route(
        revoke_api_key, in_org(204, 204, 403), keys=PEOPLE_ONLY
    ),
    # contacts (section 5): the record belongs to the organization's owner
    ("GET", "/contacts"): Route(fixed("GET", "/contacts"), in_org(200)),
    ("GET", "/contacts/export"): Route(fixed("GET", "/contacts/export"), in_org(200)),
    ("POST", "/contacts"): Route(fixed("POST", "/contacts", {"name": "New"}), in_org(201)),
    ("GET", "/contacts/{contact_id}"): Route(fixed("GET", "/contacts/{contact}"), in_org(200)),
    ("PATCH", "/contacts/{contact_id}"): Route(
        fixed("PATCH", "/contacts/{contact}", {"name": "Renamed"}), in_org(200, 200, 200, 403)
    ),
    ("DELETE", "/contacts/{contact_id}"): Route(delete_contact, in_org(204, 204, 204, 403)),
    ("POST", "/contacts/{contact_id}/restore"): Route(restore_contact, in_org(200, 200, 200, 403)),
    ("GET", "/contacts/duplicates"): Route(fixed("GET", "/contacts/duplicates"), in_org(200)),
    ("POST", "/contacts/{contact_id}/merge"): Route(merge_contact, in_org(200, 200, 200, 403)),
    # companies (section 17): as contacts; the record belongs to the organization's owner
    ("GET", "/companies"): Route(fixed("GET", "/companies"), in_org(200)),
    ("POST", "/companies"): Route(fixed("POST", "/companies", {"name": "New"}), in_org(201)),
    ("GET", "/companies/{company_id}"): Route(fixed("GET", "/companies/{company}"), in_org(200)),
    ("PATCH", "/companies/{company_id}"): Route(
        fixed("PATCH", "/companies/{company}", {"name": "Renamed"}), in_org(200, 200, 200, 403)
    ),
    ("DELETE", "/companies/{company_id}"): Route(delete_company, in_org(204, 204, 204, 403)),
    # custom fields (section 17): every member reads; owners and admins manage
    ("GET", "/custom-fields"): Route(fixed("GET", "/custom-fields"), in_org(200)),
    ("POST", "/custom-fields"): Route(create_custom_field, in_org(201, 201, 403)),
    ("GET", "/custom-fields/{custom_field_id}"): Route(on_custom_field("GET"), in_org(200)),
    ("PATCH", "/custom-fields/{custom_field_id}"): Route(
        on_custom_field("PATCH", {"label": "Renamed"}), in_org(200, 200, 403)
    ),
    ("DELETE", "/custom-fields/{custom_field_id}"): Route(
        on_custom_field("DELETE"), in_org(204, 204, 403)
    ),
    # deals (section 6)
    ("GET", "/deals"): Route(fixed("GET", "/deals"), in_org(200)),
    ("GET", "/deals/export"): Route(fixed("GET", "/deals/export"), in_org(200)),
    ("POST", "/deals"): Route(
        fixed("POST", "/deals", lambda ctx: {"contact_id": ctx.target.contact_id, "title": "D"}),
        in_org(201),
    ),
    ("GET", "/deals/{deal_id}"): Route(fixed("GET", "/deals/{deal}"), in_org(200)),
    ("PATCH", "/deals/{deal_id}"): Route(
        fixed("PATCH", "/deals/{deal}", {"title": "Renamed"}), in_org(200, 200, 200, 403)
    ),
    ("DELETE", "/deals/{deal_id}"): Route(delete_deal, in_org(204, 204, 204, 403)),
    ("POST", "/deals/{deal_id}/restore"): Route(restore_deal, in_org(200, 200, 200, 403)),
    ("GET", "/deals/{deal_id}/activities"): Route(
        fixed("GET", "/deals/{deal}/activities"), in_org(200)
    ),
    ("POST", "/deals/{deal_id}/activities"): Route(
        fixed("POST", "/deals/{deal}/activities", COMMENT), in_org(201)
    ),
    # tasks (section 7): on the owner's deal
    ("GET", "/tasks"): Route(fixed("GET", "/tasks"), in_org(200)),
    ("GET", "/tasks/export"): Route(fixed("GET", "/tasks/export"), in_org(200)),
    ("POST", "/tasks"): Route(
        fixed("POST", "/tasks", lambda ctx: {"deal_id": ctx.target.deal_id, "title": "T"}),
        in_org(201, 201, 201, 403),
    ),
    ("GET", "/tasks/{task_id}"): Route(fixed("GET", "/tasks/{task}"), in_org(200)),
    ("PATCH", "/tasks/{task_id}"): Route(
        fixed("PATCH", "/tasks/{task}", {"is_done": True}), in_org(200, 200, 200, 403)
    ),
    ("DELETE", "/tasks/{task_id}"): Route(delete_task, in_org(204, 204, 204, 403)),
    ("POST", "/tasks/{task_id}/restore"): Route(restore_task, in_org(200, 200, 200, 403)),
    # the trash (section 16): restoring needs what deleting needs
    ("GET", "/trash"): Route(fixed("GET", "/trash"), in_org(200)),
    # analytics (section 9)
    ("GET", "/analytics/deals/summary"): Route(
        fixed("GET", "/analytics/deals/summary"), in_org(200)
    ),
    ("GET", "/analytics/deals/funnel"): Route(fixed("GET", "/analytics/deals/funnel"), in_org(200)),
    # events (section 12): any member reads the feed
    ("GET", "/events"): Route(fixed("GET", "/events"), in_org(200)),
    # webhooks (section 13): owner and admin; the secret is for people only
    ("POST", "/webhooks"): Route(
        fixed("POST", "/webhooks", WEBHOOK), in_org(201, 201, 403), keys=PEOPLE_ONLY
    ),
    ("GET", "/webhooks"): Route(fixed("GET", "/webhooks"), in_org(200, 200, 403)),
    ("GET", "/webhooks/{webhook_id}"): Route(on_webhook("GET"), in_org(200, 200, 403)),
    ("PATCH", "/webhooks/{webhook_id}"): Route(
        on_webhook("PATCH", body={"description": "Renamed"}), in_org(200, 200, 403)
    ),
    ("DELETE", "/webhooks/{webhook_id}"): Route(on_webhook("DELETE"), in_org(204, 204, 403)),
    ("POST", "/webhooks/{webhook_id}/rotate-secret"): Route(
        on_webhook("POST", "/rotate-secret"), in_org(200, 200, 403), keys=PEOPLE_ONLY
    ),
    ("POST", "/webhooks/{webhook_id}/ping"): Route(
        on_webhook("POST", "/ping"), in_org(202, 202, 403)
    ),
    ("GET", "/webhooks/{webhook_id}/deliveries"): Route(
        on_webhook("GET", "/deliveries"), in_org(200, 200, 403)
    ),
    ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): Route(
        retry_delivery, in_org(202, 202, 403)
    ),
    # pipelines (section 17): owner and admin manage them (API keys of those roles too),
    # everyone reads them
    ("GET", "/pipelines"): Route(fixed("GET", "/pipelines"), in_org(200)),
    ("POST", "/pipelines"): Route(fixed("POST", "/pipelines", PIPELINE), in_org(201, 201, 403)),
    ("GET", "/pipelines/{pipeline_id}"): Route(on_pipeline("GET"), in_org(200)),
    ("PATCH", "/pipelines/{pipeline_id}"): Route(
        on_pipeline("PATCH", body={"name": "Renamed"}), in_org(200, 200, 403)
    ),
    ("DELETE", "/pipelines/{pipeline_id}"): Route(on_pipeline("DELETE"), in_org(204, 204, 403)),
    ("POST", "/pipelines/{pipeline_id}/stages"): Route(
        on_pipeline("POST", "/stages", {"key": "demo", "name": "Demo", "probability": 30}),
        in_org(201, 201, 403),
    ),
    ("PATCH", "/pipelines/{pipeline_id}/stages/{key}"): Route(
        on_pipeline("PATCH", "/stages/intro", {"name": "First call"}), in_org(200, 200, 403)
    ),
    ("DELETE", "/pipelines/{pipeline_id}/stages/{key}"): Route(
        on_pipeline("DELETE", "/stages/intro"), in_org(200, 200, 403)
    ),
    # imports (section 16): anyone who may create records imports them (each row under the
    # rules of its role); the starter or a manager and above cancels
    ("POST", "/imports"): Route(new_import, in_org(202)),
    ("GET", "/imports"): Route(fixed("GET", "/imports"), in_org(200)),
    ("GET", "/imports/{import_id}"): Route(on_import("GET"), in_org(200)),
    ("GET", "/imports/{import_id}/errors"): Route(on_import("GET", "/errors"), in_org(200)),
    ("POST", "/imports/{import_id}/cancel"): Route(
        on_import("POST", "/cancel"), in_org(200, 200, 200, 403)
    ),
}


def app_routes(app: FastAPI, prefix: str) -> set[tuple[str, str]]:
    """(method, path template without the API prefix) of every API route of the app."""

    def api_routes() -> Iterator[tuple[APIRoute, str]]:
        if iter_route_contexts is None:  # pragma: no cover
            for route in app.routes:
                if isinstance(route, APIRoute):
                    yield route, route.path
            return
        for context in iter_route_contexts(app.routes):
            if isinstance(context.original_route, APIRoute) and context.path:
                yield context.original_route, context.path

    found: set[tuple[str, str]] = set()
    for route, path in api_routes():
        if path.startswith(EXCLUDED_PREFIXES):
            continue
        assert path.startswith(prefix), path
        for method in route.methods or ():
            found.add((method, path.removeprefix(prefix)))
    return found


async def check(
    ctx: Ctx, req: Req, expected: Expected, failures: list[str], *, label: str = ""
) -> httpx.Response | None:
    """Send `req`; record a failure unless it gets `expected` (and, if refused, writes nothing)."""
    status, code = expected if isinstance(expected, tuple) else (expected, None)
    before = await snapshot(ctx.world.engine) if status >= 400 else None
    response = await send(ctx, req)
    where = f"{ctx.role:<9} {req.method:<6} {label or req.path}"
    if response.status_code != status:
        failures.append(f"{where}: expected {status}, got {response.status_code} {response.text}")
        return None
    if before is not None:
        try:
            assert_problem(response, status, code)
            if status == 401:
                assert response.headers.get("www-authenticate") == "Bearer"
        except AssertionError as exc:
            failures.append(f"{where}: bad problem response: {exc}")
        if await snapshot(ctx.world.engine) != before:
            failures.append(f"{where}: refused with {status} but the database changed")
    return response


# --- the tests ---------------------------------------------------------------------------


async def test_every_route_has_an_entry_in_the_matrix(world: World) -> None:
    routes = app_routes(world.api.app, world.api.prefix)
    missing = sorted(routes - ROUTES.keys())
    stale = sorted(ROUTES.keys() - routes)
    assert not missing, f"new route without an entry in ROUTES: {missing}"
    assert not stale, f"ROUTES has entries for routes the app no longer has: {stale}"


async def test_role_matrix(world: World) -> None:
    """Every route x owner/admin/manager/member/outsider/anonymous in organization A, on data
    that belongs to A's owner; and x an API key of each role (created by A's admin), which
    gets what a person of its role gets, except on the routes only people may use."""
    failures: list[str] = []
    routes = app_routes(world.api.app, world.api.prefix)
    missing = routes - ROUTES.keys()
    assert not missing, f"new route without an entry in ROUTES: {sorted(missing)}"
    org = world.a
    for key in sorted(routes):
        route = ROUTES[key]
        for role in (*ROLES, *KEY_ROLES):
            ctx = Ctx(world, org, org, role, caller(world, org, role))
            req = await route.build(ctx)
            await check(ctx, req, route.expected_for(role), failures, label=key[1])
    assert not failures, "\n".join(failures)


# Role-specific rules the plain matrix cannot show: records the caller owns, stage rollback,
# owner reassignment, and the limits of admins over admins and the owner.


@dataclass(frozen=True)
class Case:
    name: str
    build: Builder
    expected: dict[str, Expected]
    roles: tuple[str, ...] = field(default=MEMBER_ROLES)


def someone_else(ctx: Ctx) -> User:
    """Another member of the caller's organization to hand a record to."""
    return ctx.org.users["admin" if ctx.role == "owner" else "owner"]


async def own_contact_patch(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.actor)
    return Req("PATCH", f"/contacts/{contact_id}", {"name": "Mine", "phone": "+1 555"})


async def own_contact_delete(ctx: Ctx) -> Req:
    return Req("DELETE", f"/contacts/{await ctx.world.new_contact(ctx.actor)}")


async def own_contacts_merge(ctx: Ctx) -> Req:
    target_id = await ctx.world.new_contact(ctx.actor)
    source_id = await ctx.world.new_contact(ctx.actor)
    await created(ctx.actor.post("/deals", json={"contact_id": source_id, "title": "Mine"}))
    return Req("POST", f"/contacts/{target_id}/merge", {"source_ids": [source_id]})


async def own_contacts_merge_moving_anothers_deal(ctx: Ctx) -> Req:
    """The contacts are the caller's, but a deal on the source is someone else's."""
    target_id = await ctx.world.new_contact(ctx.actor)
    source_id = await ctx.world.new_contact(ctx.actor)
    await created(
        someone_else(ctx).post("/deals", json={"contact_id": source_id, "title": "Theirs"})
    )
    return Req("POST", f"/contacts/{target_id}/merge", {"source_ids": [source_id]})


async def own_company_patch(ctx: Ctx) -> Req:
    company_id = await ctx.world.new_company(ctx.actor)
    return Req("PATCH", f"/companies/{company_id}", {"name": "Mine", "domain": "mine.example"})


async def own_company_delete(ctx: Ctx) -> Req:
    return Req("DELETE", f"/companies/{await ctx.world.new_company(ctx.actor)}")


async def own_company_reassign(ctx: Ctx) -> Req:
    company_id = await ctx.world.new_company(ctx.actor)
    return Req("PATCH", f"/companies/{company_id}", {"owner_id": someone_else(ctx).id})


async def own_contact_into_anothers_company(ctx: Ctx) -> Req:
    """Joining a company is a change of the contact: the company's owner has no say."""
    contact_id = await ctx.world.new_contact(ctx.actor)
    return Req("PATCH", f"/contacts/{contact_id}", {"company_id": ctx.org.company_id})


async def own_deal_patch(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    body = {"title": "Mine", "status": "in_progress", "stage": "proposal", "amount": "5"}
    return Req("PATCH", f"/deals/{deal_id}", body)


async def own_deal_delete(ctx: Ctx) -> Req:
    return Req("DELETE", f"/deals/{await ctx.world.new_deal(ctx.actor)}")


async def own_deal_comment(ctx: Ctx) -> Req:
    return Req("POST", f"/deals/{await ctx.world.new_deal(ctx.actor)}/activities", COMMENT)


async def task_on_own_deal_create(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("POST", "/tasks", {"deal_id": deal_id, "title": "Mine", "description": "d"})


async def task_on_own_deal_patch(ctx: Ctx) -> Req:
    task_id = await ctx.world.new_task(ctx.actor)
    return Req("PATCH", f"/tasks/{task_id}", {"is_done": True, "title": "Done"})


async def task_on_own_deal_delete(ctx: Ctx) -> Req:
    return Req("DELETE", f"/tasks/{await ctx.world.new_task(ctx.actor)}")


async def task_by_owner_on_own_deal_patch(ctx: Ctx) -> Req:
    """The task was written by the org owner, but on the caller's deal: "task: own deal"."""
    deal_id = await ctx.world.new_deal(ctx.actor)
    task_id = await ctx.world.new_task(ctx.org.owner, deal_id)
    return Req("PATCH", f"/tasks/{task_id}", {"is_done": True})


async def own_task_on_reassigned_deal_patch(ctx: Ctx) -> Req:
    """The caller wrote the task on their deal, then the deal was handed to someone else."""
    deal_id = await ctx.world.new_deal(ctx.actor)
    task_id = await ctx.world.new_task(ctx.actor, deal_id)
    response = await ctx.org.owner.patch(
        f"/deals/{deal_id}", json={"owner_id": someone_else(ctx).id}
    )
    assert response.status_code == 200, response.text
    return Req("PATCH", f"/tasks/{task_id}", {"is_done": True})


async def own_deal_stage_backwards(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    forward = await ctx.actor.patch(f"/deals/{deal_id}", json={"stage": "negotiation"})
    assert forward.status_code == 200, forward.text
    return Req("PATCH", f"/deals/{deal_id}", {"stage": "proposal"})


async def own_deal_stage_skip_forward(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("PATCH", f"/deals/{deal_id}", {"stage": "closed", "status": "won"})


async def own_contact_reassign(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.actor)
    return Req("PATCH", f"/contacts/{contact_id}", {"owner_id": someone_else(ctx).id})


async def own_deal_reassign(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("PATCH", f"/deals/{deal_id}", {"owner_id": someone_else(ctx).id})


async def others_deal_reassign_to_self(ctx: Ctx) -> Req:
    """Taking over someone else's deal is a reassignment too."""
    deal_id = await ctx.world.new_deal(someone_else(ctx))
    return Req("PATCH", f"/deals/{deal_id}", {"owner_id": ctx.actor.id})


async def grant_admin_on_add(ctx: Ctx) -> Req:
    user = await ctx.world.new_user()
    return Req(
        "POST", f"/organizations/{ctx.org.id}/members", {"email": user.email, "role": "admin"}
    )


async def grant_admin_on_change(ctx: Ctx) -> Req:
    user = await ctx.world.new_member(ctx.org, "member")
    return Req("PATCH", f"/organizations/{ctx.org.id}/members/{user.id}", {"role": "admin"})


async def change_an_admin(ctx: Ctx) -> Req:
    user = await ctx.world.new_member(ctx.org, "admin")
    return Req("PATCH", f"/organizations/{ctx.org.id}/members/{user.id}", {"role": "member"})


async def remove_an_admin(ctx: Ctx) -> Req:
    user = await ctx.world.new_member(ctx.org, "admin")
    return Req("DELETE", f"/organizations/{ctx.org.id}/members/{user.id}")


async def change_the_owner(ctx: Ctx) -> Req:
    path = f"/organizations/{ctx.org.id}/members/{ctx.org.owner.id}"
    return Req("PATCH", path, {"role": "member"})


async def remove_the_owner(ctx: Ctx) -> Req:
    return Req("DELETE", f"/organizations/{ctx.org.id}/members/{ctx.org.owner.id}")


async def leave(ctx: Ctx) -> Req:
    """A fresh user of the role leaves (so the shared users stay members)."""
    user = ctx.actor if ctx.role == "owner" else await ctx.world.new_member(ctx.org, ctx.role)
    return Req("DELETE", f"/organizations/{ctx.org.id}/members/{user.id}", actor=user)


FORBIDDEN = (403, "PERMISSION_DENIED")
ROLLBACK = (403, "STAGE_ROLLBACK_FORBIDDEN")
OWNER_IMMUTABLE = (409, "OWNER_IMMUTABLE")

CASES = [
    Case("edit a contact you own", own_contact_patch, in_org(200)),
    Case("delete a contact you own", own_contact_delete, in_org(204)),
    Case("merge contacts you own, with your deals", own_contacts_merge, in_org(200)),
    Case(
        "merge contacts you own, moving another's deal",
        own_contacts_merge_moving_anothers_deal,
        in_org(200, 200, 200, FORBIDDEN),
    ),
    Case("edit a company you own", own_company_patch, in_org(200)),
    Case("delete a company you own", own_company_delete, in_org(204)),
    Case("reassign a company you own", own_company_reassign, in_org(200, 200, 200, FORBIDDEN)),
    Case("put your contact in another's company", own_contact_into_anothers_company, in_org(200)),
    Case("edit a deal you own", own_deal_patch, in_org(200)),
    Case("delete a deal you own", own_deal_delete, in_org(204)),
    Case("comment on a deal you own", own_deal_comment, in_org(201)),
    Case("create a task on your deal", task_on_own_deal_create, in_org(201)),
    Case("edit a task on your deal", task_on_own_deal_patch, in_org(200)),
    Case("delete a task on your deal", task_on_own_deal_delete, in_org(204)),
    Case("edit another's task on your deal", task_by_owner_on_own_deal_patch, in_org(200)),
    Case(
        "edit your task on a deal handed to someone else",
        own_task_on_reassigned_deal_patch,
        in_org(200, 200, 200, FORBIDDEN),
    ),
    Case(
        "move your deal's stage backwards",
        own_deal_stage_backwards,
        in_org(200, 200, ROLLBACK, ROLLBACK),
    ),
    Case("skip your deal forward to closed", own_deal_stage_skip_forward, in_org(200)),
    Case("reassign a contact you own", own_contact_reassign, in_org(200, 200, 200, FORBIDDEN)),
    Case("reassign a deal you own", own_deal_reassign, in_org(200, 200, 200, FORBIDDEN)),
    Case(
        "take over someone else's deal",
        others_deal_reassign_to_self,
        in_org(200, 200, 200, FORBIDDEN),
    ),
    Case("add a member as admin", grant_admin_on_add, in_org(201, FORBIDDEN, FORBIDDEN)),
    Case("promote a member to admin", grant_admin_on_change, in_org(200, FORBIDDEN, FORBIDDEN)),
    Case("change an admin's role", change_an_admin, in_org(200, FORBIDDEN, FORBIDDEN)),
    Case("remove an admin", remove_an_admin, in_org(204, FORBIDDEN, FORBIDDEN)),
    Case(
        "change the owner's role",
        change_the_owner,
        in_org(OWNER_IMMUTABLE, OWNER_IMMUTABLE, FORBIDDEN),
    ),
    Case("remove the owner", remove_the_owner, in_org(OWNER_IMMUTABLE, OWNER_IMMUTABLE, FORBIDDEN)),
    Case("leave the organization", leave, in_org(OWNER_IMMUTABLE, 204)),
]


async def test_role_specific_rules(world: World) -> None:
    failures: list[str] = []
    org = world.a
    for case in CASES:
        for role in case.roles:
            ctx = Ctx(world, org, org, role, caller(world, org, role))
            req = await case.build(ctx)
            await check(ctx, req, case.expected[role], failures, label=case.name)
    assert not failures, "\n".join(failures)


async def test_ids_of_another_organization_are_404_and_change_nothing(world: World) -> None:
    """Users of B, acting in B, name A's records: exactly like ids that do not exist. On the
    organization routes A's id means "not a member" (403)."""
    failures: list[str] = []
    routes = app_routes(world.api.app, world.api.prefix)
    with_ids = sorted(key for key in routes if "{" in key[1])
    assert with_ids, "no route with an id?"
    home, foreign = world.b, world.a
    for key in with_ids:
        expected: Expected = NOT_A_MEMBER if key[1].startswith("/organizations/") else 404
        for role in MEMBER_ROLES:
            ctx = Ctx(world, home, foreign, role, home.users[role])
            req = await ROUTES[key].build(ctx)
            await check(ctx, req, expected, failures, label=f"{key[1]} (A's id)")
    assert not failures, "\n".join(failures)


async def references_contact(ctx: Ctx) -> Req:
    return Req("POST", "/deals", {"contact_id": ctx.target.contact_id, "title": "Stolen"})


async def repoints_deal(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("PATCH", f"/deals/{deal_id}", {"contact_id": ctx.target.contact_id})


async def merges_contact_of_a(ctx: Ctx) -> Req:
    target_id = await ctx.world.new_contact(ctx.actor)
    return Req("POST", f"/contacts/{target_id}/merge", {"source_ids": [ctx.target.contact_id]})


async def contact_in_company_of_a(ctx: Ctx) -> Req:
    return Req("POST", "/contacts", {"name": "Stolen", "company_id": ctx.target.company_id})


async def moves_contact_to_company_of_a(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.actor)
    return Req("PATCH", f"/contacts/{contact_id}", {"company_id": ctx.target.company_id})


async def deal_naming_company_of_a(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.actor)
    body = {"contact_id": contact_id, "title": "Stolen", "company_id": ctx.target.company_id}
    return Req("POST", "/deals", body)


async def repoints_deal_to_company_of_a(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("PATCH", f"/deals/{deal_id}", {"company_id": ctx.target.company_id})


async def references_deal(ctx: Ctx) -> Req:
    return Req("POST", "/tasks", {"deal_id": ctx.target.deal_id, "title": "Stolen"})


async def hands_contact_to_stranger(ctx: Ctx) -> Req:
    contact_id = await ctx.world.new_contact(ctx.actor)
    return Req("PATCH", f"/contacts/{contact_id}", {"owner_id": ctx.target.users["member"].id})


async def hands_deal_to_stranger(ctx: Ctx) -> Req:
    deal_id = await ctx.world.new_deal(ctx.actor)
    return Req("PATCH", f"/deals/{deal_id}", {"owner_id": ctx.target.users["member"].id})


async def changes_stranger_role(ctx: Ctx) -> Req:
    path = f"/organizations/{ctx.org.id}/members/{ctx.target.users['member'].id}"
    return Req("PATCH", path, {"role": "manager"})


async def removes_stranger(ctx: Ctx) -> Req:
    return Req("DELETE", f"/organizations/{ctx.org.id}/members/{ctx.target.users['member'].id}")


MEMBER_NOT_FOUND = (404, "MEMBER_NOT_FOUND")
OWNER_NOT_A_MEMBER = (400, "OWNER_NOT_A_MEMBER")
COMPANY_NOT_FOUND = (400, "COMPANY_NOT_FOUND")

REFERENCE_CASES = [
    Case("deal for A's contact", references_contact, in_org((400, "CONTACT_NOT_FOUND"))),
    Case("deal moved to A's contact", repoints_deal, in_org((400, "CONTACT_NOT_FOUND"))),
    Case("task on A's deal", references_deal, in_org((404, "DEAL_NOT_FOUND"))),
    Case("contact in A's company", contact_in_company_of_a, in_org(COMPANY_NOT_FOUND)),
    Case("contact moved to A's company", moves_contact_to_company_of_a, in_org(COMPANY_NOT_FOUND)),
    Case("deal naming A's company", deal_naming_company_of_a, in_org(COMPANY_NOT_FOUND)),
    Case("deal moved to A's company", repoints_deal_to_company_of_a, in_org(COMPANY_NOT_FOUND)),
    Case("A's contact merged into yours", merges_contact_of_a, in_org((404, "CONTACT_NOT_FOUND"))),
    Case(
        "contact handed to A's member",
        hands_contact_to_stranger,
        in_org(OWNER_NOT_A_MEMBER, OWNER_NOT_A_MEMBER, OWNER_NOT_A_MEMBER, FORBIDDEN),
    ),
    Case(
        "deal handed to A's member",
        hands_deal_to_stranger,
        in_org(OWNER_NOT_A_MEMBER, OWNER_NOT_A_MEMBER, OWNER_NOT_A_MEMBER, FORBIDDEN),
    ),
    Case(
        "role of A's member",
        changes_stranger_role,
        in_org(MEMBER_NOT_FOUND, MEMBER_NOT_FOUND, FORBIDDEN),
    ),
    Case(
        "removal of A's member",
        removes_stranger,
        in_org(MEMBER_NOT_FOUND, MEMBER_NOT_FOUND, FORBIDDEN),
    ),
]


async def test_references_to_another_organization_are_refused(world: World) -> None:
    failures: list[str] = []
    home, foreign = world.b, world.a
    for case in REFERENCE_CASES:
        for role in case.roles:
            ctx = Ctx(world, home, foreign, role, home.users[role])
            req = await case.build(ctx)
            await check(ctx, req, case.expected[role], failures, label=case.name)
    assert not failures, "\n".join(failures)


async def test_lists_and_analytics_never_show_another_organization(world: World) -> None:
    home, foreign = world.b, world.a
    for role in MEMBER_ROLES:
        user = home.users[role]
        for path in ("/companies", "/contacts", "/deals", "/tasks"):
            body = (await user.get(path, params={"page_size": 100})).json()
            assert body["items"], path
            if path != "/tasks":
                assert {item["organization_id"] for item in body["items"]} == {home.id}, path
        tasks = (await user.get("/tasks", params={"page_size": 100})).json()["items"]
        assert foreign.task_id not in {task["id"] for task in tasks}
        for path, params in [
            ("/deals", {"contact_id": foreign.contact_id}),
            ("/deals", {"owner_id": foreign.owner.id}),
            ("/contacts", {"owner_id": foreign.owner.id}),
            ("/contacts", {"company_id": foreign.company_id}),
            ("/deals", {"company_id": foreign.company_id}),
            ("/companies", {"owner_id": foreign.owner.id}),
            ("/tasks", {"deal_id": foreign.deal_id}),
        ]:
            response = await user.get(path, params=params)
            assert response.status_code == 200, response.text
            assert response.json()["items"] == [], (path, params)
            assert response.json()["total"] == 0
        timeline = (await user.get(f"/deals/{home.deal_id}/activities")).json()["items"]
        assert foreign.comment_id not in {activity["id"] for activity in timeline}
        summary = (await user.get("/analytics/deals/summary")).json()
        deals = (await user.get("/deals", params={"page_size": 100})).json()
        assert summary["total"]["count"] == deals["total"]
