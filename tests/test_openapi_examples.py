"""Swagger's "Try it out" starts from real examples, and Authorize holds the organization id.

Every request body in the OpenAPI document has an example that its own schema accepts, and the
examples, sent in order (register → log in → organization → member → contact → deal → task →
comment → refresh → logout), are all accepted by the API; only ids the database chose and
tokens are put in."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema_rs

from tests.support import Api, assert_problem

PLACEHOLDERS = {"string", "user@example.com", 0}


async def openapi(api: Api) -> dict[str, Any]:
    response = await api.client.get(api.url("/openapi.json"))
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def request_bodies(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(method, path) -> the name of its request body's component schema."""
    bodies = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                # JSON, or a form (file uploads: `multipart/form-data`).
                [content] = operation["requestBody"]["content"].values()
                schema = content["schema"]
                bodies[(method.upper(), path)] = schema["$ref"].rsplit("/", 1)[1]
    return bodies


def examples_of(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = document["components"]["schemas"][name].get("examples", [])
    return copy.deepcopy(examples)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


async def test_every_request_body_has_examples_its_schema_accepts(api: Api) -> None:
    document = await openapi(api)
    bodies = request_bodies(document)
    assert len(bodies) >= 15
    for (method, path), name in sorted(bodies.items()):
        examples = examples_of(document, name)
        assert examples, f"{method} {path}: {name} has no example"
        validator = jsonschema_rs.validator_for(
            {"$ref": f"#/components/schemas/{name}", "components": document["components"]},
            validate_formats=True,
        )
        for example in examples:
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, (name, example, errors)
            assert not PLACEHOLDERS & set(_leaves(example)), (name, example)


async def test_the_examples_sent_in_order_are_all_accepted(api: Api) -> None:
    document = await openapi(api)
    [register] = examples_of(document, "RegisterRequest")
    [login] = examples_of(document, "LoginRequest")

    registered = await api.client.post(api.url("/auth/register"), json=register)
    assert registered.status_code == 201, registered.text
    logged_in = await api.client.post(api.url("/auth/login"), json=login)
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}

    async def send(method: str, path: str, body: dict[str, Any], **headers: str) -> Any:
        response = await api.client.request(
            method, api.url(path), json=body, headers={**auth, **headers}
        )
        assert 200 <= response.status_code < 300, (method, path, body, response.text)
        return response.json() if response.content else None

    [create_org] = examples_of(document, "OrganizationCreate")
    organization = await send("POST", "/organizations", create_org)
    org_id = organization["id"]
    [update_org] = examples_of(document, "OrganizationUpdate")
    await send("PATCH", f"/organizations/{org_id}", update_org)

    # The member example names a user who must exist first: they register themselves.
    [add_member] = examples_of(document, "MemberAdd")
    await api.client.post(
        api.url("/auth/register"),
        json={**register, "email": add_member["email"], "organization_name": "Own"},
    )
    member = await send("POST", f"/organizations/{org_id}/members", add_member)
    [update_member] = examples_of(document, "MemberUpdate")
    await send("PATCH", f"/organizations/{org_id}/members/{member['user_id']}", update_member)

    tenant = {"X-Organization-Id": str(org_id)}
    [create_contact] = examples_of(document, "ContactCreate")
    contact = await send("POST", "/contacts", create_contact, **tenant)
    [update_contact] = examples_of(document, "ContactUpdate")
    await send("PATCH", f"/contacts/{contact['id']}", update_contact, **tenant)

    [create_deal] = examples_of(document, "DealCreate")
    deal = await send("POST", "/deals", {**create_deal, "contact_id": contact["id"]}, **tenant)
    [update_deal] = examples_of(document, "DealUpdate")
    await send("PATCH", f"/deals/{deal['id']}", update_deal, **tenant)

    [create_task] = examples_of(document, "TaskCreate")
    task = await send("POST", "/tasks", {**create_task, "deal_id": deal["id"]}, **tenant)
    [update_task] = examples_of(document, "TaskUpdate")
    await send("PATCH", f"/tasks/{task['id']}", update_task, **tenant)

    [comment] = examples_of(document, "ActivityCreate")
    await send("POST", f"/deals/{deal['id']}/activities", comment, **tenant)

    [refresh] = examples_of(document, "RefreshRequest")
    assert set(refresh) == {"refresh_token"}
    rotated = await send("POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    await send("POST", "/auth/logout", {"refresh_token": rotated["refresh_token"]})


async def test_authorize_holds_the_organization_id(api: Api) -> None:
    document = await openapi(api)
    assert document["components"]["securitySchemes"]["OrganizationId"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Organization-Id",
        "description": document["components"]["securitySchemes"]["OrganizationId"]["description"],
    }
    contacts = document["paths"]["/api/v1/contacts"]["get"]
    # Both needed (one requirement object), and no second copy of the header to fill in.
    assert contacts["security"] == [{"HTTPBearer": [], "OrganizationId": []}]
    assert all(p["name"].lower() != "x-organization-id" for p in contacts["parameters"])
    read_deal = document["paths"]["/api/v1/deals/{deal_id}"]["get"]
    assert read_deal["security"] == [{"HTTPBearer": [], "OrganizationId": []}]
    mine = document["paths"]["/api/v1/organizations/me"]["get"]
    assert mine["security"] == [{"HTTPBearer": []}]


async def test_the_organization_header_is_still_required_and_validated(api: Api) -> None:
    owner = await api.register(organization_name="Acme")
    stranger = await api.register(organization_name="Other")
    auth = {"Authorization": f"Bearer {owner.access_token}"}
    for path in ("/contacts", "/deals/1", "/analytics/deals/summary"):
        missing = await api.client.get(api.url(path), headers=auth)
        body = assert_problem(missing, 422, "VALIDATION_ERROR")
        assert body["errors"] == [
            {"loc": ["header", "x-organization-id"], "msg": "Field required", "type": "missing"}
        ]
        for bad, kind in (
            ("abc", "int_parsing"),
            ("0", "greater_than_equal"),
            ("1.5", "int_parsing"),
            (str(2**63), "less_than_equal"),
        ):
            response = await api.client.get(
                api.url(path), headers={**auth, "X-Organization-Id": bad}
            )
            body = assert_problem(response, 422, "VALIDATION_ERROR")
            assert [(e["loc"], e["type"]) for e in body["errors"]] == [
                (["header", "x-organization-id"], kind)
            ], (path, bad)
        other = await api.client.get(
            api.url(path), headers={**auth, "X-Organization-Id": str(stranger.organization_id)}
        )
        assert_problem(other, 403, "NOT_A_MEMBER")
        anonymous = await api.client.get(api.url(path), headers={"X-Organization-Id": "abc"})
        assert_problem(anonymous, 401)
