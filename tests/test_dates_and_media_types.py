"""Dates sent as ISO datetimes are read as their UTC date; bodies that are not JSON are 415."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.policies import utc_today
from tests.support import (
    Api,
    User,
    assert_problem,
    create_contact,
    create_deal,
    snapshot,
)

NEXT_YEAR = utc_today().year + 1


@pytest.fixture
async def deal_id(owner: User) -> int:
    deal: int = (await create_deal(owner, await create_contact(owner)))["id"]
    return deal


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (f"{NEXT_YEAR}-01-15", f"{NEXT_YEAR}-01-15"),
        (f"{NEXT_YEAR}-01-15T10:00:00", f"{NEXT_YEAR}-01-15"),  # naive: taken as UTC
        (f"{NEXT_YEAR}-01-15T10:00:00.000Z", f"{NEXT_YEAR}-01-15"),  # toISOString()
        (f"{NEXT_YEAR}-01-15T23:30:00-05:00", f"{NEXT_YEAR}-01-16"),  # 04:30 UTC next day
        (f"{NEXT_YEAR}-01-15T01:00:00+02:00", f"{NEXT_YEAR}-01-14"),  # 23:00 UTC day before
        (f"{NEXT_YEAR}-01-15T10:00", f"{NEXT_YEAR}-01-15"),
    ],
)
async def test_due_date_takes_an_iso_datetime_by_its_utc_date(
    owner: User, deal_id: int, sent: str, stored: str
) -> None:
    created = await owner.post("/tasks", json={"deal_id": deal_id, "title": "T", "due_date": sent})
    assert created.status_code == 201, created.text
    assert created.json()["due_date"] == stored

    task_id = created.json()["id"]
    changed = await owner.patch(f"/tasks/{task_id}", json={"due_date": sent.replace("-15", "-20")})
    assert changed.status_code == 200, changed.text
    assert changed.json()["due_date"] == stored.replace(stored[-2:], f"{int(stored[-2:]) + 5:02d}")
    read = await owner.get(f"/tasks/{task_id}")
    assert read.json()["due_date"] == changed.json()["due_date"]


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "2026-01-15T25:00:00",
        "2026-02-30T10:00:00Z",
        "2026-01-15T10",
        "2026-01-15 10:00:00",
        "15/01/2026",
        "9999-12-31T23:00:00-05:00",
        1767225600,
    ],
)
async def test_due_date_still_refuses_what_is_not_a_date(
    owner: User, deal_id: int, garbage: object, engine: AsyncEngine
) -> None:
    before = await snapshot(engine)
    response = await owner.post(
        "/tasks", json={"deal_id": deal_id, "title": "T", "due_date": garbage}
    )
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "due_date"]
    assert await snapshot(engine) == before


async def test_due_date_filters_take_iso_datetimes(owner: User, deal_id: int) -> None:
    today = utc_today()
    for days in (1, 2, 3):
        due = (today + timedelta(days=days)).isoformat()
        response = await owner.post(
            "/tasks", json={"deal_id": deal_id, "title": f"in {days}", "due_date": due}
        )
        assert response.status_code == 201, response.text
    day2 = today + timedelta(days=2)

    async def titles(**query: str) -> list[str]:
        response = await owner.get("/tasks", params=query)
        assert response.status_code == 200, response.text
        return sorted(item["title"] for item in response.json()["items"])

    assert await titles(due_before=f"{day2}T10:00:00.000Z") == ["in 1", "in 2"]
    assert await titles(due_after=f"{day2}T00:00:00") == ["in 2", "in 3"]
    # 2 days ahead at 22:00 in UTC-05:00 is already the 3rd day in UTC.
    assert await titles(due_after=f"{day2}T22:00:00-05:00") == ["in 3"]
    response = await owner.get("/tasks", params={"due_before": "soon"})
    assert_problem(response, 422, "VALIDATION_ERROR")


# --- 415 for bodies that are not JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"name": "Bob"}'),
        ("text/plain; charset=utf-8", b'{"name": "Bob"}'),
        ("application/x-www-form-urlencoded", b"name=Bob"),
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nBob\r\n--XyZ--\r\n',
        ),
        ("application/xml", b"<name>Bob</name>"),
    ],
)
async def test_a_body_that_is_not_json_is_415_and_writes_nothing(
    owner: User, engine: AsyncEngine, content_type: str, content: bytes
) -> None:
    before = await snapshot(engine)
    response = await owner.post(
        "/contacts", content=content, headers={"Content-Type": content_type}
    )
    body = assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in body["detail"]
    assert await snapshot(engine) == before


async def test_415_on_login_register_and_patch(api: Api, owner: User, deal_id: int) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    login = await api.client.post(
        api.url("/auth/login"), content=b"email=a%40example.com&password=x", headers=form
    )
    assert_problem(login, 415, "UNSUPPORTED_MEDIA_TYPE")
    patch = await owner.patch(f"/deals/{deal_id}", content=b"status=won", headers=form)
    assert_problem(patch, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_json_media_types_and_a_missing_content_type_still_work(owner: User) -> None:
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ):
        response = await owner.post(
            "/contacts", content=b'{"name": "Bob"}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)
    # Malformed JSON sent as JSON stays a 422 telling what is wrong.
    response = await owner.post(
        "/contacts", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_authentication_and_membership_are_checked_before_the_media_type(
    api: Api, owner: User
) -> None:
    text = {"Content-Type": "text/plain"}
    anonymous = await api.client.post(api.url("/contacts"), content=b"Bob", headers=text)
    assert_problem(anonymous, 401)
    stranger = await api.register(organization_name="Other")
    elsewhere = await stranger.post(
        "/contacts",
        content=b"Bob",
        headers={**text, "X-Organization-Id": str(owner.organization_id)},
    )
    assert_problem(elsewhere, 403, "NOT_A_MEMBER")


async def test_openapi_documents_the_415(api: Api) -> None:
    document = (await api.client.get(api.url("/openapi.json"))).json()
    assert "415" in document["paths"]["/api/v1/contacts"]["post"]["responses"]
    assert "415" not in document["paths"]["/api/v1/contacts"]["get"]["responses"]
