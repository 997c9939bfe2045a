"""Registration, login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    LoginThrottled,
    RefreshTokenReused,
)
from app.core.security import PasswordHasher, TokenClaims, TokenCodec, TokenType
from app.core.throttle import LoginThrottle
from app.models import Membership, Organization, User
from app.repositories.organizations import OrganizationRepository
from app.repositories.users import AuthSessionRepository, UserRepository
from app.schemas.auth import MeResponse, RegisterRequest, TokenPair
from app.schemas.organization import OrganizationSummary
from app.services.organizations import OrganizationService


@dataclass(frozen=True, slots=True)
class Registration:
    user: User
    organization: Organization
    membership: Membership
    tokens: TokenPair


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        tokens: TokenCodec,
        passwords: PasswordHasher,
        throttle: LoginThrottle,
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.passwords = passwords
        self.throttle = throttle
        self.users = UserRepository(session)
        self.organizations = OrganizationRepository(session)
        self.auth_sessions = AuthSessionRepository(session)

    async def register(self, data: RegisterRequest) -> Registration:
        """User, organization and owner membership, all or nothing (one transaction)."""
        password_hash = await self.passwords.hash(data.password)
        if await self.users.get_by_email(data.email) is not None:
            raise EmailTaken()
        try:
            user = await self.users.add(
                User(email=data.email, name=data.name, password_hash=password_hash)
            )
        except IntegrityError as exc:  # a concurrent registration won the race
            raise EmailTaken() from exc
        organization, membership = await OrganizationService(self.session).found(
            data.organization_name, user.id
        )
        tokens = await self._start_session(user.id)
        return Registration(user, organization, membership, tokens)

    async def login(self, email: str, password: str) -> TokenPair:
        """Unknown email and wrong password are the same 401, after the same hashing work."""
        throttle_key = email.lower()
        retry_after = await self.throttle.retry_after(throttle_key)
        if retry_after is not None:
            raise LoginThrottled(headers={"Retry-After": str(retry_after)})
        user = await self.users.get_by_email(email)
        # Nothing is written yet: end the transaction so that its connection (on SQLite, the
        # write lock) is not held through the hashing. A login storm would otherwise occupy
        # the whole pool, and every other request would queue behind Argon2.
        await self.session.commit()
        if not await self.passwords.verify(password, user.password_hash if user else None):
            await self.throttle.record_failure(throttle_key)
            raise InvalidCredentials()
        assert user is not None
        await self.throttle.reset(throttle_key)
        return await self._start_session(user.id)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is spent and a new pair issued in the same session.

        A token presented a second time means it leaked (or the client misbehaves): the whole
        session is revoked, so the thief's and the owner's newer tokens both stop working."""
        token, session_id = await self._consume(refresh_token)
        return await self._issue_pair(token.user_id, session_id)

    async def logout(self, refresh_token: str) -> None:
        _, session_id = await self._consume(refresh_token)
        await self.auth_sessions.revoke_session(session_id)

    async def me(self, user_id: int) -> MeResponse:
        user = await self.users.get(user_id)
        if user is None:  # a valid token for an account that no longer exists
            raise InvalidToken()
        organizations = await self.organizations.list_for_user(user_id)
        return MeResponse(
            id=user.id,
            email=user.email,
            name=user.name,
            created_at=user.created_at,
            organizations=[
                OrganizationSummary(id=org.id, name=org.name, role=role)
                for org, role in organizations
            ],
        )

    async def _consume(self, refresh_token: str) -> tuple[TokenClaims, int]:
        claims = self.tokens.decode(refresh_token, TokenType.REFRESH)
        stored = await self.auth_sessions.get_refresh_token(claims.jti, claims.user_id)
        if stored is None or stored.session_id != claims.session_id:
            raise InvalidToken()
        auth_session = await self.auth_sessions.get_session(stored.session_id)
        if auth_session is None or auth_session.revoked_at is not None:
            raise InvalidToken()
        if not await self.auth_sessions.mark_used(claims.jti):
            await self.auth_sessions.revoke_session(stored.session_id)
            raise RefreshTokenReused()
        return claims, stored.session_id

    async def _start_session(self, user_id: int) -> TokenPair:
        auth_session = await self.auth_sessions.create_session(user_id)
        return await self._issue_pair(user_id, auth_session.id)

    async def _issue_pair(self, user_id: int, session_id: int) -> TokenPair:
        access = self.tokens.issue(user_id, session_id, TokenType.ACCESS)
        refresh = self.tokens.issue(user_id, session_id, TokenType.REFRESH)
        await self.auth_sessions.add_refresh_token(
            jti=refresh.claims.jti,
            session_id=session_id,
            user_id=user_id,
            expires_at=refresh.claims.expires_at,
        )
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh.token,
            expires_in=int(self.tokens.lifetime(TokenType.ACCESS).total_seconds()),
        )
