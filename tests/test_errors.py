"""Every error leaves as RFC 9457 problem+json with a stable code, and leaks nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory
from tests.support import PASSWORD, Api, User, assert_problem, count_rows

UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


def assert_clean_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    body = assert_problem(response, status, code)
    assert UPPER_SNAKE.match(body["code"]), body["code"]
    assert isinstance(body["type"], str)
    for leak in ("Traceback", "sqlalchemy", "asyncpg", 'File "', "SELECT "):
        assert leak not in response.text, response.text
    return body


async def test_unknown_route_is_404_problem(
    api: Api, owner: User, subtests: pytest.Subtests
) -> None:
    for path in (
        "/api/v1/nothing-here",
        "/nothing",
        f"/api/v1/organizations/{owner.organization_id}/x",
    ):
        with subtests.test(path):
            response = await api.client.get(path, headers=owner.headers())
            assert_clean_problem(response, 404, "NOT_FOUND")


async def test_wrong_method_is_405_problem_with_allow(api: Api, subtests: pytest.Subtests) -> None:
    # every method the path answers to, not only those of the first route that matched it
    for method, path, allowed in [
        # HEAD is answered wherever GET is
        ("GET", "/api/v1/auth/login", "POST"),
        ("DELETE", "/api/v1/auth/me", "GET, HEAD"),
        ("PUT", "/api/v1/deals/1", "GET, HEAD, PATCH, DELETE"),
        ("DELETE", "/api/v1/deals", "GET, HEAD, POST"),
        ("PUT", "/api/v1/deals/1/activities", "GET, HEAD, POST"),
        ("POST", "/health", "GET, HEAD"),
        ("BREW", "/api/v1/contacts/7", "GET, HEAD, PATCH, DELETE"),
    ]:
        with subtests.test(f"{method} {path}"):
            response = await api.client.request(method, path)
            assert_clean_problem(response, 405, "METHOD_NOT_ALLOWED")
            assert response.headers["allow"] == allowed


async def test_validation_error_lists_each_problem(api: Api, engine: AsyncEngine) -> None:
    response = await api.client.post(
        api.url("/auth/register"),
        json={"email": "not-an-email", "password": "short", "name": "Ann", "extra": 1},
    )

    body = assert_clean_problem(response, 422, "VALIDATION_ERROR")
    errors = body["errors"]
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert all(isinstance(error["msg"], str) and error["msg"] for error in errors)
    assert all(isinstance(error["type"], str) and error["type"] for error in errors)
    locations = {tuple(error["loc"]) for error in errors}
    assert locations == {
        ("body", "email"),
        ("body", "password"),
        ("body", "organization_name"),
        ("body", "extra"),
    }
    assert await count_rows(engine, "users") == 0


async def test_validation_error_never_echoes_the_input(api: Api) -> None:
    secret_password = "Sup3r-Secret-" + "p" * 120  # too long, so refused
    response = await api.client.post(
        api.url("/auth/register"),
        json={
            "email": "ann@example.com",
            "password": secret_password,
            "name": "Ann",
            "organization_name": "Acme",
        },
    )

    assert_clean_problem(response, 422, "VALIDATION_ERROR")
    assert "Sup3r-Secret" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"email": "a@example.com", "password": ', "application/json", id="cut-off"),
        pytest.param(b"{'email': 'a@example.com'}", "application/json", id="single-quotes"),
        pytest.param(b"", "application/json", id="empty"),
        pytest.param(b'["a@example.com", "secret"]', "application/json", id="array"),
        pytest.param(b"null", "application/json", id="null"),
    ],
)
async def test_body_that_is_not_a_json_object_is_422(
    api: Api, content: bytes, content_type: str
) -> None:
    response = await api.client.post(
        api.url("/auth/login"), content=content, headers={"Content-Type": content_type}
    )

    body = assert_clean_problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"]
    assert all(error["loc"][0] == "body" for error in body["errors"])


async def test_malformed_json_reports_json_invalid(api: Api) -> None:
    response = await api.client.post(
        api.url("/auth/register"),
        content=b'{"email": ',
        headers={"Content-Type": "application/json"},
    )

    body = assert_clean_problem(response, 422, "VALIDATION_ERROR")
    assert [error["type"] for error in body["errors"]] == ["json_invalid"]


@pytest.mark.parametrize(
    "name", ["Ann\x00Smith", "Ann\ud800"], ids=["nul-character", "lone-surrogate"]
)
async def test_text_a_database_cannot_store_is_422_not_500(
    api: Api, engine: AsyncEngine, name: str
) -> None:
    # json.dumps escapes both as \\u sequences, which is how a client would send them.
    content = json.dumps(
        {"email": "ann@example.com", "password": PASSWORD, "name": name, "organization_name": "A"}
    )

    response = await api.client.post(
        api.url("/auth/register"),
        content=content.encode(),
        headers={"Content-Type": "application/json"},
    )

    assert_clean_problem(response, 422, "VALIDATION_ERROR")
    assert await count_rows(engine, "users") == 0


async def test_unauthenticated_is_401_problem_with_www_authenticate(api: Api) -> None:
    response = await api.client.get(api.url("/organizations/me"))

    assert_clean_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_problem_carries_the_callers_request_id(api: Api) -> None:
    response = await api.client.get(api.url("/auth/me"), headers={"X-Request-ID": "trace-42"})

    body = assert_clean_problem(response, 401)
    assert body["request_id"] == "trace-42"
    assert response.headers["x-request-id"] == "trace-42"


async def test_unhandled_exception_is_a_bare_500_problem(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("connection to postgres://admin:hunter2@db failed")

    api.app.add_api_route("/test-explode", explode)

    with caplog.at_level("ERROR"):
        response = await api.client.get("/test-explode", headers={"X-Request-ID": "boom-1"})

    body = assert_clean_problem(response, 500, "INTERNAL_ERROR")
    assert body["request_id"] == "boom-1"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    # ...but the operator can find it in the log by its request id.
    assert "hunter2" in caplog.text


async def test_oversized_body_is_413_problem(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(database_url, MAX_REQUEST_BODY_BYTES=1024)
    body = {
        "email": "ann@example.com",
        "password": PASSWORD,
        "name": "A" * 2000,
        "organization_name": "Acme",
    }

    response = await api.client.post(api.url("/auth/register"), json=body)

    assert_clean_problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert await count_rows(api.app.state.resources.engine, "users") == 0
