"""HEAD is answered wherever GET is: the GET's status and headers, no body, nothing written.

Every GET operation of the OpenAPI document is tried (path parameters filled with real ids of
the caller's organization), and the routes kept out of the document (docs, metrics)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support import Api, User, create_contact, create_deal, snapshot

# Answered by the app but not described in its OpenAPI document.
UNDOCUMENTED_GETS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/metrics")
# Headers that differ between two requests whatever their method (the second read of an
# analytics report is a cache hit).
# `ratelimit` counts the request itself down.
PER_REQUEST = {"x-request-id", "date", "x-cache", "ratelimit"}
# Bodies that change with every request (the request counters), so their length too.
CHANGING = {"/metrics"}


async def fixture_ids(owner: User) -> dict[str, int]:
    company = await owner.post("/companies", json={"name": "Acme"})
    assert company.status_code == 201, company.text
    contact_id = await create_contact(owner)
    deal = await create_deal(owner, contact_id, amount="10")
    task = await owner.post("/tasks", json={"deal_id": deal["id"], "title": "Call"})
    assert task.status_code == 201, task.text
    webhook = await owner.post(
        "/webhooks", json={"url": "https://93.184.215.14/hook", "event_types": ["*"]}
    )
    assert webhook.status_code == 201, webhook.text
    queued = await owner.post(
        "/imports",
        files={"file": ("contacts.csv", b"name\nAnn\n", "text/csv")},
        data={"kind": "contacts"},
    )
    assert queued.status_code == 202, queued.text
    field = await owner.post(
        "/custom-fields", json={"entity": "deal", "key": "notes", "label": "Notes", "type": "text"}
    )
    assert field.status_code == 201, field.text
    pipelines = await owner.get("/pipelines")
    assert pipelines.status_code == 200, pipelines.text
    return {
        "custom_field_id": field.json()["id"],
        "pipeline_id": pipelines.json()[0]["id"],
        "webhook_id": webhook.json()["id"],
        "import_id": queued.json()["id"],
        "company_id": company.json()["id"],
        "contact_id": contact_id,
        "deal_id": deal["id"],
        "task_id": task.json()["id"],
        "organization_id": owner.organization_id,
    }


def get_paths(api: Api) -> list[str]:
    document = api.app.openapi()
    documented = [path for path, operations in document["paths"].items() if "get" in operations]
    assert len(documented) >= 10, documented  # the document is really being iterated
    return [*documented, f"{api.prefix}/openapi.json", *UNDOCUMENTED_GETS]


def same_headers(get: httpx.Response, head: httpx.Response) -> None:
    skip = PER_REQUEST | ({"content-length"} if get.url.path in CHANGING else set())
    for name in set(get.headers) | set(head.headers):
        if name not in skip:
            assert head.headers.get(name) == get.headers.get(name), (name, get.url)


async def test_head_answers_every_get_route_like_get_without_a_body(api: Api, owner: User) -> None:
    ids = await fixture_ids(owner)
    for template in get_paths(api):
        path = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)
        get = await api.client.get(path, headers=owner.headers())
        head = await api.client.head(path, headers=owner.headers())
        assert get.status_code == 200, (path, get.text)
        assert head.status_code == get.status_code, (path, head.status_code)
        assert head.content == b"", path
        same_headers(get, head)


async def test_head_of_a_single_resource_sends_its_etag_and_honours_if_none_match(
    api: Api, owner: User
) -> None:
    ids = await fixture_ids(owner)
    for path in (
        f"/companies/{ids['company_id']}",
        f"/contacts/{ids['contact_id']}",
        f"/deals/{ids['deal_id']}",
        f"/tasks/{ids['task_id']}",
    ):
        head = await api.client.head(api.url(path), headers=owner.headers())
        assert head.status_code == 200
        etag = head.headers["etag"]
        assert etag == (await owner.get(path)).headers["etag"]
        again = await api.client.head(
            api.url(path), headers={**owner.headers(), "If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.headers["etag"] == etag


@pytest.mark.parametrize(
    ("path", "status"),
    [("/deals/999999", 404), ("/deals", 401), ("/deals/0", 422), ("/nowhere", 404)],
)
async def test_head_of_a_failing_get_answers_its_status(
    api: Api, owner: User, path: str, status: int
) -> None:
    headers = {} if status == 401 else owner.headers()
    url = path if path == "/nowhere" else api.url(path)
    get = await api.client.get(url, headers=headers)
    head = await api.client.head(url, headers=headers)
    assert get.status_code == status
    assert head.status_code == status
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_head_writes_nothing(api: Api, owner: User) -> None:
    ids = await fixture_ids(owner)
    engine = api.app.state.resources.engine
    before = await snapshot(engine)
    for template in get_paths(api):
        path = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)
        await api.client.head(path, headers=owner.headers())
    assert await snapshot(engine) == before


async def test_head_is_not_a_documented_operation_and_405_names_it(api: Api, owner: User) -> None:
    document = api.app.openapi()
    assert not [path for path, operations in document["paths"].items() if "head" in operations]
    ids = await fixture_ids(owner)
    response = await api.client.put(api.url(f"/deals/{ids['deal_id']}"), headers=owner.headers())
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, PATCH, DELETE"
    response = await api.client.head(api.url("/auth/login"))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
