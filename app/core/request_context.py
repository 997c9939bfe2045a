"""Per-request values that logs and error bodies need, without threading them through calls."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id_var: ContextVar[int | None] = ContextVar("user_id", default=None)
organization_id_var: ContextVar[int | None] = ContextVar("organization_id", default=None)
