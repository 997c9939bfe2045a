from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.types import utcnow
from app.models import AuthSession, RefreshToken, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email.lower()))

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user


class AuthSessionRepository:
    """Login sessions and the refresh tokens rotated within them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create_session(self, user_id: int) -> AuthSession:
        auth_session = AuthSession(user_id=user_id)
        self.session.add(auth_session)
        await self.session.flush()
        return auth_session

    async def add_refresh_token(
        self, *, jti: str, session_id: int, user_id: int, expires_at: datetime
    ) -> None:
        self.session.add(
            RefreshToken(jti=jti, session_id=session_id, user_id=user_id, expires_at=expires_at)
        )
        await self.session.flush()

    async def get_refresh_token(self, jti: str, user_id: int) -> RefreshToken | None:
        return await self.session.scalar(
            select(RefreshToken).where(RefreshToken.jti == jti, RefreshToken.user_id == user_id)
        )

    async def get_session(self, session_id: int) -> AuthSession | None:
        return await self.session.get(AuthSession, session_id)

    async def mark_used(self, jti: str) -> bool:
        """Atomically consume a refresh token; False if it had already been used."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == jti, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
            .returning(RefreshToken.jti)
        )
        return result.scalar_one_or_none() is not None

    async def revoke_session(self, session_id: int) -> None:
        await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
