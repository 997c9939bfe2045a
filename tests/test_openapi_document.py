"""The OpenAPI document is valid, lints clean, and says exactly what the server does.

Integrators generate clients from `/api/v1/openapi.json`; what the document gets wrong becomes
a wrong type in every generated SDK. The generated client itself is exercised against a live
server in `test_generated_client`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, ValidationError

from app.api.responses import problem_codes
from app.core.errors import AppError
from app.main import create_app
from app.models import DealStatus
from app.schemas.common import NotNullOnPatch
from tests.conftest import make_settings, skip_or_fail
from tests.support import Api, assert_problem

# Pinned, as CI installs it (`.ci/run`): a new release may bring new rules.
REDOCLY_CLI = "@redocly/cli@2.77.0"
DOCUMENT = create_app(make_settings("sqlite+aiosqlite://")).openapi()
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
PUBLIC = {"register", "login", "refresh", "logout", "read_health", "read_readiness"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]


def validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(
        {**schema, "components": DOCUMENT["components"]}, validate_formats=True
    )


def component(name: str) -> jsonschema_rs.Validator:
    return validator({"$ref": f"#/components/schemas/{name}"})


async def test_the_served_document_is_this_one(api: Api) -> None:
    response = await api.client.get(api.url("/openapi.json"))
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(DOCUMENT))


def test_the_document_is_valid_openapi() -> None:
    validate(json.loads(json.dumps(DOCUMENT)))


def test_redocly_recommended_rules_find_no_error(tmp_path: Path) -> None:
    npx = shutil.which("npx")
    if npx is None:
        skip_or_fail("Node.js (npx) is not installed: Redocly CLI cannot run")
    assert npx is not None
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(DOCUMENT))
    result = subprocess.run(  # noqa: S603 - a pinned linter on our own document
        [npx, "--yes", REDOCLY_CLI, "lint", "--format=json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert not errors, json.dumps(errors, indent=1)[:4000]
    assert report["totals"]["errors"] == 0
    assert result.returncode == 0, result.stderr[-2000:]
    # The only warnings: liveness and readiness have no 4XX answer to document.
    warnings = {
        (p["ruleId"], p["location"][0]["pointer"])
        for p in report["problems"]
        if p["severity"] == "warn"
    }
    assert warnings <= {
        ("operation-4xx-response", "#/paths/~1health/get/responses"),
        ("operation-4xx-response", "#/paths/~1health~1ready/get/responses"),
    }


def test_operations_are_named_after_their_functions() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    assert DOCUMENT["paths"]["/api/v1/deals/{deal_id}"]["patch"]["operationId"] == "update_deal"
    assert DOCUMENT["paths"]["/api/v1/deals"]["get"]["operationId"] == "list_deals"


def test_security_is_required_unless_an_operation_is_public() -> None:
    assert DOCUMENT["security"] == [{"HTTPBearer": []}]
    assert DOCUMENT["servers"]
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["bearerFormat"] == "JWT"
    for method, path, operation in operations():
        if operation["operationId"] in PUBLIC:
            assert operation["security"] == [], (method, path)
        else:
            [requirement] = operation["security"]
            assert "HTTPBearer" in requirement, (method, path)
            # The organization travels in one place only: the OrganizationId scheme.
            assert all(
                p["name"].lower() != "x-organization-id" for p in operation.get("parameters", [])
            )


def test_parameters_are_never_null() -> None:
    for method, path, operation in operations():
        for parameter in operation.get("parameters", []):
            assert "null" not in json.dumps(parameter["schema"]), (method, path, parameter)
    deals = {p["name"]: p for p in DOCUMENT["paths"]["/api/v1/deals"]["get"]["parameters"]}
    assert deals["owner_id"]["schema"]["type"] == "integer"
    assert deals["status"]["schema"]["type"] == "array"
    assert "oneOf" in deals["min_amount"]["schema"]


def test_errors_are_only_problem_details() -> None:
    for method, path, operation in operations():
        responses = operation["responses"]
        assert "default" in responses, (method, path)
        if "requestBody" in operation:
            assert {"413", "415", "422"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")) or status == "default":
                content = response["content"]
                if path == "/health/ready" and status == "503":
                    assert list(content) == ["application/json"]  # the readiness body
                    continue
                assert list(content) == ["application/problem+json"], (method, path, status)
                assert "X-Request-ID" in response["headers"]
    for status in ("429", "503"):
        response = DOCUMENT["paths"]["/api/v1/auth/login"]["post"]["responses"][status]
        assert "Retry-After" in response["headers"]


def _codes_of(error: type[AppError]) -> set[str]:
    return {error.code}.union(*(_codes_of(sub) for sub in error.__subclasses__()))


def test_problem_codes_list_every_error_class_but_stay_open() -> None:
    code = SCHEMAS["Problem"]["properties"]["code"]
    assert "enum" not in code  # a generated client must read codes added later
    enum = code["examples"]
    assert enum == problem_codes()
    assert all(f"`{c}`" in code["description"] for c in enum)
    assert _codes_of(AppError) <= set(enum)
    assert {"VALIDATION_ERROR", "METHOD_NOT_ALLOWED", "INTERNAL_ERROR"} <= set(enum)


async def test_problems_the_server_sends_match_the_schema(api: Api) -> None:
    problem = component("Problem")
    owner = await api.register()
    answers = [
        await api.client.get(api.url("/contacts")),  # 401
        await owner.get("/deals/12345"),  # 404 DEAL_NOT_FOUND
        await owner.post("/contacts", json={"name": ""}),  # 422 with errors
        await api.client.delete("/health"),  # 405 from the router
    ]
    for response in answers:
        assert response.status_code >= 400
        assert response.headers["content-type"] == "application/problem+json"
        errors = [e.message for e in problem.iter_errors(response.json())]
        assert not errors, (response.json(), errors)


def _accepts(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def _patch_models() -> list[type[NotNullOnPatch]]:
    found: list[type[NotNullOnPatch]] = []
    pending = list(NotNullOnPatch.__subclasses__())
    while pending:
        model = pending.pop()
        found.append(model)
        pending.extend(model.__subclasses__())
    return found


def test_patch_fields_are_nullable_exactly_when_the_server_takes_null() -> None:
    models = {model.__name__: model for model in _patch_models()}
    assert {"DealUpdate", "ContactUpdate", "TaskUpdate", "OrganizationUpdate"} <= set(models)
    for name, model in models.items():
        schema = component(name)
        for field in model.model_fields:
            documented = schema.is_valid({field: None})
            assert documented == _accepts(model, {field: None}), (name, field)
            assert documented == (field not in model._not_null), (name, field)
            assert "default" not in SCHEMAS[name]["properties"][field] or documented


async def test_organization_name_null_is_refused(api: Api) -> None:
    owner = await api.register(organization_name="Acme")
    path = f"/organizations/{owner.organization_id}"
    assert_problem(await owner.patch(path, json={"name": None}), 422, "VALIDATION_ERROR")
    left_out = await owner.patch(path, json={})
    assert left_out.status_code == 200
    assert left_out.json()["name"] == "Acme"


MONEY_INPUTS: list[Any] = [
    0,
    12.5,
    0.07,
    999999999999.99,
    1000000000000,
    -1,
    -0.01,
    12.345,
    "0",
    "12.5",
    "12500.00",
    "999999999999.99",
    "1000000000000",
    "12.345",
    "-1",
    "-0",
    "-0.00",
    "-0.01",
    "-00",
    "1e3",
    " 12",
    "12.",
    ".5",
    "1_000",
    "",
    "NaN",
    True,
    None,
]


def test_money_is_documented_as_the_server_reads_it() -> None:
    from app.schemas.deal import DealCreate

    amount = validator(SCHEMAS["DealCreate"]["properties"]["amount"])
    for value in MONEY_INPUTS:
        body = {"contact_id": 1, "title": "T", "amount": value}
        if value == 12.345:
            # The one thing the schema cannot say (see the multipleOf test): the description does.
            assert amount.is_valid(value)
            assert not _accepts(DealCreate, body)
            continue
        assert amount.is_valid(value) == _accepts(DealCreate, body), value
    description = SCHEMAS["DealCreate"]["properties"]["amount"]["description"]
    assert "string" in description
    assert "12.345 is refused" in description
    assert "default" not in SCHEMAS["DealUpdate"]["properties"]["amount"]
    [number, text] = SCHEMAS["DealCreate"]["properties"]["amount"]["oneOf"]
    assert number["type"] == "number"
    assert text["type"] == "string"
    assert SCHEMAS["DealRead"]["properties"]["amount"]["type"] == "number"


def test_no_keyword_outside_json_schema() -> None:
    text = json.dumps(DOCUMENT)
    assert '"ge":' not in text
    assert '"le":' not in text


def test_status_maps_name_every_status() -> None:
    for name in ("TotalsByStatus", "CountsByStatus"):
        schema = SCHEMAS[name]
        assert set(schema["properties"]) == set(schema["required"]) == set(DealStatus)
    summary = SCHEMAS["DealSummary"]["properties"]["by_status"]
    assert summary == {"$ref": "#/components/schemas/TotalsByStatus"}


def test_health_answers_are_typed() -> None:
    health = DOCUMENT["paths"]["/health"]["get"]["responses"]["200"]
    assert health["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }
    ready = DOCUMENT["paths"]["/health/ready"]["get"]["responses"]
    for status in ("200", "503"):
        assert ready[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_examples_are_valid(name: str) -> None:
    schema = component(name)
    for example in SCHEMAS[name].get("examples", []):
        errors = [e.message for e in schema.iter_errors(example)]
        assert not errors, (example, errors)


def test_main_schemas_have_examples() -> None:
    for name in (
        "DealRead",
        "ContactRead",
        "TaskRead",
        "OrganizationRead",
        "MemberRead",
        "UserRead",
        "ActivityRead",
        "DealSummary",
        "Problem",
        "DealCreate",
        "DealUpdate",
    ):
        assert SCHEMAS[name].get("examples"), name


def test_operations_name_the_codes_they_answer_with_examples() -> None:
    problem = component("Problem")
    enum = set(SCHEMAS["Problem"]["properties"]["code"]["examples"])
    named = 0
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/problem+json", {})
            for code, example in media.get("examples", {}).items():
                value = example["value"]
                assert value["code"] == code in enum, (method, path, code)
                assert str(value["status"]) == status, (method, path, code)
                assert f"`{code}`" in response["description"], (method, path, code)
                assert problem.is_valid(value), (method, path, code)
                named += 1
    assert named > 50
    update = DOCUMENT["paths"]["/api/v1/deals/{deal_id}"]["patch"]["responses"]
    assert set(update["403"]["content"]["application/problem+json"]["examples"]) == {
        "NOT_A_MEMBER",
        "PERMISSION_DENIED",
        "STAGE_ROLLBACK_FORBIDDEN",
    }
    assert set(update["400"]["content"]["application/problem+json"]["examples"]) == {
        "DEAL_WON_REQUIRES_AMOUNT",
        "OWNER_NOT_A_MEMBER",
        "CONTACT_NOT_FOUND",
        "COMPANY_NOT_FOUND",
        "PIPELINE_NOT_FOUND",  # section 17
        "STAGE_NOT_IN_PIPELINE",
    }


def test_money_numbers_validate_in_binary_floating_point_validators() -> None:
    """No `multipleOf: 0.01`: validators that test it in floating point (Python's jsonschema,
    Ajv) would refuse amounts such as 0.07 that the server takes."""
    assert "multipleOf" not in json.dumps(DOCUMENT)
    amount = validator(SCHEMAS["DealCreate"]["properties"]["amount"])
    for value in (0.07, 0.29, 1.15):
        assert amount.is_valid(value)
