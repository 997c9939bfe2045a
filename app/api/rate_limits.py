"""Rate limits over HTTP: what a request counts against, its headers, and the 429.

Every authenticated request counts against its credential — a user's access token as soon as
it is verified (`AccessTokenBearer`, which runs on every one of them); an API key, which is its
own credential (not its creator's), once its row proves it stands (`bind_tenant`) — and, once
its organization is proven (`bind_tenant`, where the tenant is resolved), against that
organization — never against an organization named in a header but
not yet checked, so nobody can spend another organization's allowance. The counting itself is
`app.core.rate_limit`.

Every response to a counted request carries the IETF `RateLimit-Policy` and `RateLimit` fields
(draft-ietf-httpapi-ratelimit-headers, structured-field syntax), one item per policy that
applied:

    RateLimit-Policy: "credential";q=600;w=60, "organization";q=6000;w=60
    RateLimit: "credential";r=599;t=42, "organization";r=5999;t=42

`t` is the seconds until the current one-minute window ends (for a refused request: until a
retry may succeed, as `Retry-After`). Over a limit: 429 `RATE_LIMITED` with `Retry-After`.
Requests without a valid access token are not counted and carry no such fields (failed logins
have their own throttle); a limit set to 0 is off and not announced.
"""

from __future__ import annotations

import functools

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPBearer
from starlette.types import Scope

from app.core.errors import RateLimited
from app.core.rate_limit import WINDOW_SECONDS, Quota
from app.dependencies.db import resources_of

_QUOTAS = "minicrm.rate_limits"


def is_counted(dependant: Dependant) -> bool:
    """Whether a route authenticates with an access token (and so counts, and may be 429)."""
    return isinstance(dependant.call, HTTPBearer) or any(
        is_counted(sub) for sub in dependant.dependencies
    )


def count_credential(request: Request, credential: str) -> None:
    """Count against `credential`: `user:<id>` or `api_key:<id>` (`TenantContext.credential`)."""
    resources = resources_of(request)
    limit = resources.settings.RATE_LIMIT_PER_MINUTE
    if limit:
        quota = resources.rate_limiter.hit(credential, "credential", limit)
        _record(request, quota)


def count_organization(request: Request, organization_id: int) -> None:
    resources = resources_of(request)
    limit = resources.settings.RATE_LIMIT_ORGANIZATION_PER_MINUTE
    if limit:
        quota = resources.rate_limiter.hit(f"organization:{organization_id}", "organization", limit)
        _record(request, quota)


def _record(request: Request, quota: Quota) -> None:
    quotas: list[Quota] = request.scope.setdefault(_QUOTAS, [])
    quotas.append(quota)
    if quota.retry_after is not None:
        raise RateLimited(headers={"Retry-After": str(quota.retry_after)})


@functools.cache
def _policy_item(policy: str, limit: int) -> str:
    """`"credential";q=600;w=60`: the same for every request under the same settings."""
    return f'"{policy}";q={limit};w={WINDOW_SECONDS}'


def rate_limit_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The fields of whatever the request counted against (none if it counted against
    nothing). The outermost middleware adds them to every response, errors included, as the
    response starts: one pass over the headers it copies anyway."""
    quotas: list[Quota] | None = scope.get(_QUOTAS)
    if not quotas:
        return []
    policy = ", ".join([_policy_item(q.policy, q.limit) for q in quotas])
    state = ", ".join([f'"{q.policy}";r={q.remaining};t={q.reset_seconds}' for q in quotas])
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]


def forget_counted(scope: Scope) -> None:
    """Before a request runs again (`StrictJSONRoute`): its second run records its own."""
    scope.pop(_QUOTAS, None)
