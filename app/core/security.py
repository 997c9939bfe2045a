"""JWT access/refresh tokens (PyJWT, HS256) and Argon2id password hashing (pwdlib)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import anyio
import anyio.to_thread
import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings
from app.core.errors import InvalidToken

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "sid", "type", "iat", "exp", "jti"]
_LEEWAY_SECONDS = 5


class TokenType(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    # The login session (`auth_sessions.id`) the token was issued in: every request checks that
    # it is not revoked, in the statement that reads the caller's membership.
    session_id: int
    type: TokenType
    jti: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class TokenCodec:
    """Signs and verifies tokens with one deployment's key.

    A client sends the same access token with every request until it expires. What verifying
    it proves (signature and claims) cannot change, only whether it has expired: verified
    access tokens are remembered (the last `VERIFIED_TOKENS`, in this process) with their
    expiry, which is checked again on every use. A token that fails verification is never
    remembered, so forged tokens cannot crowd out genuine ones. Whether the token's login
    session has been revoked is not a property of the token: it is read from the database on
    every request (`app.core.tenancy`), remembered token or not.

    `key` is the signing key (`app.services.signing.token_signing_key`); without one, the
    configured `SECRET_KEY` (there is no other fallback)."""

    VERIFIED_TOKENS = 4096

    def __init__(
        self,
        settings: Settings,
        *,
        key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = key if key is not None else settings.secret_key
        if not key:
            raise ValueError("TokenCodec needs a signing key")
        self._key = key
        self._lifetimes = {
            TokenType.ACCESS: timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES),
            TokenType.REFRESH: timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
        }
        self._clock = clock
        self._verified: dict[str, tuple[TokenClaims, float]] = {}  # token: (claims, expiry)

    def derived_key(self, purpose: str) -> bytes:
        """A key for another signature than tokens' (e.g. list cursors), derived from the
        signing key so it needs no configuration of its own, and useless for signing tokens."""
        return hmac.new(self._key.encode(), f"minicrm/{purpose}".encode(), hashlib.sha256).digest()

    def lifetime(self, token_type: TokenType) -> timedelta:
        return self._lifetimes[token_type]

    def issue(self, user_id: int, session_id: int, token_type: TokenType) -> IssuedToken:
        now = datetime.now(UTC).replace(microsecond=0)
        claims = TokenClaims(
            user_id=user_id,
            session_id=session_id,
            type=token_type,
            jti=uuid.uuid4().hex,
            issued_at=now,
            expires_at=now + self._lifetimes[token_type],
        )
        payload: dict[str, Any] = {
            "sub": str(user_id),
            "sid": session_id,
            "type": token_type.value,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
        }
        return IssuedToken(jwt.encode(payload, self._key, algorithm=ALGORITHM), claims)

    def decode(self, token: str, expected: TokenType) -> TokenClaims:
        """Verify signature, expiry and claims; any defect is the same `InvalidToken` (401)."""
        known = self._verified.get(token)
        if known is not None:
            claims, expires_at = known
            if self._clock() >= expires_at + _LEEWAY_SECONDS:
                del self._verified[token]
                raise InvalidToken()
        else:
            claims = self._verify(token)
            # only access tokens, used where one is expected (a refresh token is used once)
            if claims.type is expected is TokenType.ACCESS:
                if len(self._verified) >= self.VERIFIED_TOKENS:
                    del self._verified[next(iter(self._verified))]  # the oldest
                self._verified[token] = (claims, claims.expires_at.timestamp())
        if claims.type is not expected:
            raise InvalidToken()
        return claims

    def _verify(self, token: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],  # pinned: rejects alg=none and RS/HS confusion
                options={"require": _REQUIRED_CLAIMS},
                leeway=_LEEWAY_SECONDS,
            )
            token_type = TokenType(payload["type"])
            user_id = int(payload["sub"])
            session_id = payload["sid"]
            # exactly an integer (`True` is an int too): the id is only ever written as one
            if type(session_id) is not int or not 0 < session_id < 2**63:
                raise ValueError("bad sid")
            jti = payload["jti"]
            if not isinstance(jti, str) or not jti or len(jti) > 64:
                raise ValueError("bad jti")
            issued_at = datetime.fromtimestamp(payload["iat"], UTC)
            expires_at = datetime.fromtimestamp(payload["exp"], UTC)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, OverflowError) as exc:
            raise InvalidToken() from exc
        if not 0 < user_id < 2**63:
            raise InvalidToken()
        return TokenClaims(user_id, session_id, token_type, jti, issued_at, expires_at)


class PasswordHasher:
    """Argon2id hashing, run in a worker thread so the event loop keeps serving."""

    def __init__(self, settings: Settings) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    memory_cost=settings.ARGON2_MEMORY_COST_KIB,
                    time_cost=settings.ARGON2_TIME_COST,
                    parallelism=settings.ARGON2_PARALLELISM,
                ),
            )
        )
        # Verified against when the email is unknown, so both failures cost the same time.
        self._dummy_hash = self._hash.hash(secrets.token_urlsafe(16))
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Hashing is CPU-bound: more concurrent hashes than cores add only memory (each holds
        # ARGON2_MEMORY_COST_KIB), not throughput. Created lazily, inside the event loop.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        return self._limiter

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hash.hash, password, limiter=self.limiter)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        target = password_hash or self._dummy_hash
        valid = await anyio.to_thread.run_sync(
            self._hash.verify, password, target, limiter=self.limiter
        )
        return valid and password_hash is not None


# Organization API keys: `mcrm_<organization id>_<secret>`. The fixed start lets secret
# scanners recognise a leaked key; the organization id lets a request made with a key name its
# organization without `X-Organization-Id` and still be resolved in one statement (the key's
# row must belong to that organization, and the id is covered by the hash, so editing it
# yields no key). The secret is 40 random bytes (320 bits); `prefix` shows its first
# `_SHOWN_SECRET` characters, far fewer than it would take to matter.
API_KEY_PREFIX = "mcrm_"
_API_KEY_SECRET_BYTES = 40
_SHOWN_SECRET = 6
_MAX_ORGANIZATION_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NewApiKey:
    key: str  # shown once, to its creator
    prefix: str  # identifies the key in lists
    key_hash: str  # the only thing stored


def new_api_key(organization_id: int) -> NewApiKey:
    head = f"{API_KEY_PREFIX}{organization_id}_"
    secret = secrets.token_urlsafe(_API_KEY_SECRET_BYTES)
    key = head + secret
    return NewApiKey(key, head + secret[:_SHOWN_SECRET], hash_api_key(key))


def hash_api_key(key: str) -> str:
    """SHA-256 of the key. A key is 320 random bits, not a password: nothing can be guessed,
    so a slow hash (Argon2) would only cost every request the time it costs an attacker."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def api_key_organization(key: str) -> int | None:
    """The organization a key names, or None if it is not shaped like a key."""
    organization, sep, secret = key.removeprefix(API_KEY_PREFIX).partition("_")
    if not (key.startswith(API_KEY_PREFIX) and sep and secret and organization.isdecimal()):
        return None
    if len(organization) > 19 or not 1 <= int(organization) <= _MAX_ORGANIZATION_ID:
        return None
    return int(organization)
