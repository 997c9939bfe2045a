"""Responses rendered once, by pydantic, from an already validated model.

A route that returns a model has FastAPI validate it again against the response model, dump
it to Python objects and encode those with `json.dumps`: three passes over a value that is
already right. `rendered` encodes it once (`model_dump_json`, compact UTF-8 JSON, the same
bytes). The route keeps `response_model=` for its OpenAPI schema; FastAPI passes a returned
`Response` through untouched."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


class RenderedJSON(Response):
    media_type = "application/json"


def rendered(model: BaseModel, *, status_code: int = 200) -> Response:
    return RenderedJSON(model.__pydantic_serializer__.to_json(model), status_code=status_code)
