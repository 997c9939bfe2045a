from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.core.resources import Resources
from app.db.session import discard_after_commit, run_after_commit


# Dependencies here and in the routers are `async def` even when they do no I/O: FastAPI runs
# plain `def` dependencies in a worker thread, a needless hop on every request.
async def get_resources(request: Request) -> Resources:
    return resources_of(request)


def resources_of(request: Request) -> Resources:
    """The app's resources, for dependencies that run on every request: reading them here
    rather than through `ResourcesDep` spares FastAPI one more dependency to solve."""
    return cast(Resources, request.app.state.resources)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


_READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request, committed *before* the response is sent.

    `scope="function"` below makes FastAPI run this cleanup when the endpoint returns rather
    than after the response: a failed commit becomes an error response, never a 2xx for data
    that was not saved. Post-commit hooks (cache invalidation) run only after a commit.
    GET and HEAD never write (their session refuses to): they get a session without a
    transaction where the database allows it (`create_read_engine`), which is only
    closed, with nothing to commit."""
    resources = resources_of(request)
    if request.method in _READ_ONLY_METHODS:
        async with resources.read_session_factory() as session:
            yield session
        return
    async with resources.session_factory() as session:
        try:
            yield session
        except AppError as exc:
            if exc.keep_changes:
                await session.commit()
            else:
                await session.rollback()
            discard_after_commit(session)
            raise
        except BaseException:
            await session.rollback()
            discard_after_commit(session)
            raise
        else:
            await session.commit()
            await run_after_commit(session)


# The only way to get a session: one alias, so every dependency shares the request's session.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
