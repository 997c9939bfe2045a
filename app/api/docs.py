"""Swagger UI and ReDoc served from this process, not a CDN: a self-hosted CRM's API docs must
work offline and behind strict firewalls. The assets come from the `fastapi-offline` package."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.api.routing import StrictJSONRoute

STATIC_URL = "/static/docs"


def mount_docs(app: FastAPI, openapi_url: str, title: str) -> None:
    app.mount(
        STATIC_URL,
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-static",
    )

    # The route class of every other route, for its HEAD.
    router = APIRouter(route_class=StrictJSONRoute, include_in_schema=False)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    @router.get("/docs/oauth2-redirect")
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_URL}/favicon.png",
        )

    app.include_router(router)
