"""Request ids, the access log, metrics, CORS and the body-size limit."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from opentelemetry import _logs as otel_logs
from opentelemetry import metrics, trace

from app.core.config import Environment
from app.core.logging import JsonFormatter
from tests.conftest import AppFactory
from tests.support import Api, User, assert_problem


async def test_metrics_count_requests_by_route_template(api: Api, owner: User) -> None:
    await owner.get("/contacts/12345")
    await owner.get("/contacts/67890")
    body = (await api.client.get("/metrics")).text
    assert (
        'minicrm_http_requests_total{method="GET",route="/api/v1/contacts/{contact_id}",'
        'status="404"}' in body
    )
    assert "/contacts/12345" not in body  # raw paths would explode cardinality
    assert "minicrm_http_request_duration_seconds_bucket" in body
    assert "minicrm_db_pool_checked_out" in body


def _other_method_count(exposition: str) -> float:
    prefix = 'minicrm_http_requests_total{method="OTHER",route="/health",status="405"} '
    lines = [line for line in exposition.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_metrics_label_unknown_methods_as_other(api: Api) -> None:
    before = _other_method_count((await api.client.get("/metrics")).text)
    for method in ("PROPFIND", "BREW", "X-ANYTHING"):
        await api.client.request(method, "/health")
    body = (await api.client.get("/metrics")).text
    assert _other_method_count(body) == before + 3
    # any token would otherwise be a new series
    assert not [m for m in ("PROPFIND", "BREW", "X-ANYTHING") if m in body]


@pytest.mark.parametrize("enabled", [False, True])
async def test_opentelemetry_lookups_only_when_enabled(
    make_api: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    """FastAPI looks up the tracer, meter and logger providers on every request while any of
    its telemetry is on; with OPENTELEMETRY off, none of them."""
    lookups: list[str] = []
    for module, name in (
        (trace, "get_tracer_provider"),
        (metrics, "get_meter_provider"),
        (otel_logs, "get_logger_provider"),
    ):
        real_lookup = getattr(module, name)

        def counting_lookup(real: Any = real_lookup, name: str = name) -> Any:
            lookups.append(name)
            return real()

        monkeypatch.setattr(module, name, counting_lookup)
    api = await make_api(database_url, OPENTELEMETRY=enabled)
    lookups.clear()
    assert (await api.client.get("/health")).status_code == 200
    if enabled:
        assert "get_tracer_provider" in lookups
    else:
        assert lookups == []


async def test_access_log_has_ids_but_no_secrets(
    api: Api, owner: User, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        await owner.get("/contacts", headers={"X-Request-ID": "trace-me-1"})
        await owner.get("/deals/987654")
        await api.client.post(
            api.url("/auth/login"), json={"email": owner.email, "password": "Wrong-password-1"}
        )
    records = [r for r in caplog.records if r.name == "app.access"]
    contacts = next(r for r in records if getattr(r, "path", "").endswith("/contacts"))
    assert contacts.__dict__["status"] == 200
    assert contacts.__dict__["request_id"] == "trace-me-1"
    assert contacts.__dict__["user_id"] == owner.id
    assert contacts.__dict__["organization_id"] == owner.organization_id
    assert contacts.__dict__["duration_ms"] >= 0
    missing = next(r for r in records if getattr(r, "path", "").endswith("/deals/987654"))
    assert missing.__dict__["status"] == 404  # the tenant is known even when the deal is not
    assert missing.__dict__["organization_id"] == owner.organization_id
    formatted = "\n".join(JsonFormatter().format(r) for r in records)
    assert owner.access_token not in formatted
    assert "Wrong-password-1" not in formatted


def test_json_formatter_writes_one_json_object_per_line() -> None:
    record = logging.makeLogRecord(
        {"name": "app.access", "msg": "request", "levelname": "INFO", "status": 201}
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["status"] == 201


async def test_production_logs_are_json(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(
        database_url,
        ENVIRONMENT=Environment.PRODUCTION,
        SECRET_KEY="7Hq2-production-like-secret-key-Zx9wLp4Rt6Yb",
    )
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, JsonFormatter)
    assert (await api.client.get("/health")).status_code == 200


async def test_cors_is_off_by_default(api: Api) -> None:
    response = await api.client.options(
        "/health",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_configured_origins(make_api: AppFactory, database_url: str) -> None:
    api = await make_api(database_url, CORS_ORIGINS="https://crm.example.com")
    allowed = await api.client.options(
        "/health",
        headers={"Origin": "https://crm.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert allowed.headers["access-control-allow-origin"] == "https://crm.example.com"
    other = await api.client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_oversized_body_is_413_and_writes_nothing(api: Api, owner: User) -> None:
    response = await owner.post("/contacts", content=b"{" + b" " * 1_100_000 + b"}")
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert (await owner.get("/contacts")).json()["total"] == 0
