"""The finishing touches of the OpenAPI document that FastAPI cannot express route by route.

The document is what integrators generate clients from, so it must say exactly what the server
does: which operations are public, that tenant routes need the token *and* the organization,
and the one shape of every error."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.responses import Problem, problem_codes
from app.schemas.common import drop_null_branch

# The scheme every authenticated operation needs (the document's root requirement).
BEARER = "HTTPBearer"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def install_openapi(app: FastAPI) -> None:
    """`app.openapi()` builds FastAPI's document once, finishes it and keeps it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(document: dict[str, Any]) -> dict[str, Any]:
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method in _HTTP_METHODS:
                _finish_security(operation)
                # A parameter is sent or left out, never `null`: FastAPI's `anyOf[X, null]`
                # for an optional one would make generated clients accept `None`.
                for parameter in operation.get("parameters", ()):
                    drop_null_branch(parameter["schema"])
    # Operations that name no requirement inherit this one; public ones say `security: []`.
    document["security"] = [{BEARER: []}]
    _add_problem_schemas(document.setdefault("components", {}).setdefault("schemas", {}))
    return document


def _finish_security(operation: dict[str, Any]) -> None:
    """One requirement object per operation, or `[]` for a public one.

    FastAPI lists each scheme a route depends on as its own requirement object, which OpenAPI
    reads as alternatives ("a bearer token *or* an organization id"); tenant routes need the
    access token *and* `X-Organization-Id`. A route without any scheme is public (log in,
    register, health): without `security: []` it would inherit the root requirement."""
    requirements = operation.get("security") or []
    joint: dict[str, list[str]] = {}
    for requirement in requirements:
        joint.update(requirement)
    operation["security"] = [joint] if joint else []


def _add_problem_schemas(schemas: dict[str, Any]) -> None:
    problem = Problem.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    schemas.update(problem.pop("$defs", {}))
    # Every code the server sends today, listed, but not an `enum`: a client generated now
    # must still read the problem a later version sends with a code added since (generators
    # turn `enum` into a closed type that fails on an unknown value).
    codes = problem_codes()
    code = problem["properties"]["code"]
    code["examples"] = codes
    code["description"] += (
        " One of: "
        + ", ".join(f"`{c}`" for c in codes)
        + ". New versions may add codes: treat an unknown one by the HTTP status."
    )
    schemas["Problem"] = problem
