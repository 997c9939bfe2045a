from __future__ import annotations

from tests.support import Api, assert_problem


async def test_health_is_ok_and_carries_a_request_id(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_request_id_is_echoed(api: Api) -> None:
    response = await api.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_unsafe_request_id_is_replaced(api: Api) -> None:
    response = await api.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


async def test_ready_checks_the_database(api: Api) -> None:
    response = await api.client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_unknown_route_is_problem_json(api: Api) -> None:
    assert_problem(await api.client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")


async def test_wrong_method_is_problem_json(api: Api) -> None:
    body = assert_problem(await api.client.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    assert body["detail"]
