"""JWT verification: every defect of an access or refresh token is a 401, never a 200 or a 500.

Tokens are minted here with PyJWT (or by hand, for headers PyJWT refuses to write) and the app's
own key, so each case differs from a valid token in exactly one respect; a control test proves
the minting helper produces tokens the app accepts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import Api, User, assert_problem, count_rows

DROP = object()
PAST = object()  # two minutes ago: beyond any clock-skew leeway
FUTURE = object()  # two minutes from now
OTHER_KEY = "another-deployment-secret-key-0123456789abcdef"
HS256 = {"alg": "HS256", "typ": "JWT"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_key(api: Api) -> str:
    key: str = api.app.state.settings.secret_key
    return key


def claims_for(user: User, kind: str = "access", **changes: Any) -> dict[str, Any]:
    """Valid claims for `user` in their login session, with `changes`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "sid": unverified_claims(user.access_token)["sid"],
        "type": kind,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    for name, value in changes.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def resolve(changes: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    times = {id(PAST): now - 120, id(FUTURE): now + 120}
    return {name: times.get(id(value), value) for name, value in changes.items()}


def sign(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS512 with the app's (HS256-sized) key: PyJWT's advice does not matter for a forgery.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def sign_by_hand(header: dict[str, Any], claims: dict[str, Any], key: str | None) -> str:
    """HMAC-SHA256 over any header (None: no signature at all)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    digest = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(digest)


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def me(api: Api, token: str) -> httpx.Response:
    return await api.client.get(api.url("/auth/me"), headers={"Authorization": f"Bearer {token}"})


async def refresh(api: Api, token: str) -> httpx.Response:
    return await api.client.post(api.url("/auth/refresh"), json={"refresh_token": token})


def assert_invalid_token(response: httpx.Response) -> None:
    body = assert_problem(response, 401, "INVALID_TOKEN")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Traceback" not in response.text
    assert body["detail"]


def corrupt_signature(token: str) -> str:
    # Change a character in the middle: the last one may only carry padding bits.
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    replacement = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{replacement}{signature[middle + 1 :]}"


# --- access tokens -----------------------------------------------------------------------


async def test_a_token_minted_here_with_the_app_key_is_accepted(api: Api, owner: User) -> None:
    """Control for the cases below: they fail only because of their one defect."""
    for token in (
        sign(claims_for(owner), app_key(api)),
        sign_by_hand(HS256, claims_for(owner), app_key(api)),
    ):
        response = await me(api, token)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == owner.id


# Each differs from a valid access token in one claim.
ACCESS_CLAIM_DEFECTS: dict[str, dict[str, Any]] = {
    "expired": {"exp": PAST},
    "nbf-in-future": {"nbf": FUTURE},
    "iat-in-future": {"iat": FUTURE, "nbf": DROP},
    "missing-sub": {"sub": DROP},
    "missing-type": {"type": DROP},
    "missing-iat": {"iat": DROP},
    "missing-exp": {"exp": DROP},
    "missing-jti": {"jti": DROP},
    "missing-sid": {"sid": DROP},
    "sid-a-string": {"sid": "1"},
    "sid-a-boolean": {"sid": True},
    "sid-zero": {"sid": 0},
    "sid-unknown-session": {"sid": 999999},
    "type-refresh": {"type": "refresh"},
    "type-unknown": {"type": "admin"},
    "type-upper-case": {"type": "ACCESS"},
    "type-null": {"type": None},
    "sub-not-a-number": {"sub": "abc"},
    "sub-integer": {"sub": 1},
    "sub-zero": {"sub": "0"},
    "sub-negative": {"sub": "-1"},
    "sub-too-large": {"sub": str(2**63)},
    "sub-unknown-user": {"sub": "999999"},
    "jti-empty": {"jti": ""},
    "jti-too-long": {"jti": "x" * 65},
    "jti-not-a-string": {"jti": 12345},
    "exp-not-a-number": {"exp": "tomorrow"},
}


async def test_access_token_with_defective_claims_is_401(
    api: Api, owner: User, subtests: pytest.Subtests
) -> None:
    for case, changes in ACCESS_CLAIM_DEFECTS.items():
        with subtests.test(case):
            claims = claims_for(owner, **resolve(changes))
            assert_invalid_token(await me(api, sign_by_hand(HS256, claims, app_key(api))))


async def test_token_signed_with_another_key_is_401(api: Api, owner: User) -> None:
    assert_invalid_token(await me(api, sign(claims_for(owner), OTHER_KEY)))


async def test_token_with_a_corrupted_signature_is_401(api: Api, owner: User) -> None:
    assert_invalid_token(await me(api, corrupt_signature(owner.access_token)))


async def test_token_with_a_rewritten_payload_is_401(api: Api, owner: User) -> None:
    """Swapping in another user's id while keeping the signature must not log in as them."""
    victim = await api.register()
    head, _, signature = owner.access_token.split(".")
    claims = unverified_claims(owner.access_token) | {"sub": str(victim.id)}
    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"

    assert_invalid_token(await me(api, forged))


async def test_unsigned_alg_none_token_is_401(api: Api, owner: User) -> None:
    for alg in ("none", "None", "NONE"):
        token = sign_by_hand({"alg": alg, "typ": "JWT"}, claims_for(owner), None)
        assert_invalid_token(await me(api, token))


async def test_algorithm_other_than_hs256_is_401_even_with_a_valid_hmac(
    api: Api, owner: User
) -> None:
    """HS/RS confusion: the header's `alg` must not choose how the token is checked."""
    for alg in ("RS256", "ES256", "PS256"):
        token = sign_by_hand({"alg": alg, "typ": "JWT"}, claims_for(owner), app_key(api))
        assert_invalid_token(await me(api, token))
    # Also HMAC with the right key but another hash: the algorithm is pinned, not negotiated.
    assert_invalid_token(await me(api, sign(claims_for(owner), app_key(api), "HS512")))


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "a.b", "..", "eyJhbGciOiJIUzI1NiJ9.e30."],
    ids=["empty", "text", "three-parts", "two-parts", "dots", "empty-signature"],
)
async def test_malformed_token_is_401(api: Api, token: str) -> None:
    response = await api.client.get(
        api.url("/auth/me"), headers={"Authorization": f"Bearer {token}"}
    )

    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Token abc", "Bearer"],
    ids=["none", "basic", "other-scheme", "no-credentials"],
)
async def test_missing_or_non_bearer_authorization_is_401(
    api: Api, owner: User, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/auth/me", "/organizations/me", f"/organizations/{owner.organization_id}"):
        response = await api.client.get(api.url(path), headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_refresh_token_is_refused_as_an_access_token(api: Api, owner: User) -> None:
    for path in ("/auth/me", "/organizations/me", f"/organizations/{owner.organization_id}"):
        response = await api.client.get(
            api.url(path), headers={"Authorization": f"Bearer {owner.refresh_token}"}
        )
        assert_invalid_token(response)
    create = await api.client.post(
        api.url("/organizations"),
        json={"name": "Sneaky"},
        headers={"Authorization": f"Bearer {owner.refresh_token}"},
    )
    assert_invalid_token(create)


# --- refresh tokens ----------------------------------------------------------------------


def remint(token: str, key: str, algorithm: str = "HS256", **changes: Any) -> str:
    """The claims of a real, stored refresh token (its jti is known to the app), re-signed."""
    claims = unverified_claims(token)
    for name, value in changes.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return sign(claims, key, algorithm)


async def test_reminted_refresh_token_is_accepted(api: Api, owner: User) -> None:
    """Control for the cases below: same claims, same key, same algorithm works."""
    response = await refresh(api, remint(owner.refresh_token, app_key(api)))

    assert response.status_code == 200, response.text


async def test_defective_refresh_token_is_401_and_spends_nothing(
    api: Api, owner: User, subtests: pytest.Subtests
) -> None:
    other_user = await api.register()
    key = app_key(api)
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {
        "other-key": (OTHER_KEY, "HS256", {}),
        "other-algorithm": (key, "HS512", {}),
        "expired": (key, "HS256", {"exp": PAST}),
        "nbf-in-future": (key, "HS256", {"nbf": FUTURE}),
        "iat-in-future": (key, "HS256", {"iat": FUTURE, "nbf": DROP}),
        "type-access": (key, "HS256", {"type": "access"}),
        "missing-type": (key, "HS256", {"type": DROP}),
        "missing-exp": (key, "HS256", {"exp": DROP}),
        "missing-iat": (key, "HS256", {"iat": DROP}),
        "missing-sub": (key, "HS256", {"sub": DROP}),
        "missing-jti": (key, "HS256", {"jti": DROP}),
        "other-user": (key, "HS256", {"sub": str(other_user.id)}),
    }

    for case, (signing_key, algorithm, changes) in cases.items():
        with subtests.test(case):
            forged = remint(owner.refresh_token, signing_key, algorithm, **resolve(changes))
            assert_invalid_token(await refresh(api, forged))

    # The genuine token was neither consumed nor revoked by any of the forgeries.
    assert (await refresh(api, owner.refresh_token)).status_code == 200


async def test_unsigned_refresh_token_is_401(api: Api, owner: User) -> None:
    forged = sign_by_hand({"alg": "none"}, unverified_claims(owner.refresh_token), None)

    assert_invalid_token(await refresh(api, forged))
    assert (await refresh(api, owner.refresh_token)).status_code == 200


async def test_refresh_token_for_a_jti_never_issued_is_401(api: Api, owner: User) -> None:
    forged = sign(claims_for(owner, "refresh"), app_key(api))

    assert_invalid_token(await refresh(api, forged))


async def test_token_of_a_deleted_account_is_refused(
    api: Api, owner: User, engine: AsyncEngine
) -> None:
    """A signature outlives the account: the token must then open nothing (and break nothing)."""
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": owner.id})
    headers = {"Authorization": f"Bearer {owner.access_token}"}

    assert_invalid_token(await api.client.get(api.url("/auth/me"), headers=headers))
    assert_invalid_token(await api.client.get(api.url("/organizations/me"), headers=headers))
    create = await api.client.post(api.url("/organizations"), json={"name": "X"}, headers=headers)
    assert_invalid_token(create)
    assert await count_rows(engine, "organizations", "name = 'X'") == 0
    read = await api.client.get(api.url(f"/organizations/{owner.organization_id}"), headers=headers)
    assert read.status_code in (401, 403), read.text
    assert_invalid_token(await refresh(api, owner.refresh_token))
