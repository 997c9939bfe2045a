"""The key that signs tokens: `SECRET_KEY` if set, else one the deployment generated itself.

No key that can be read anywhere (source, examples, images) ever signs a token. Without a
configured key, the first process to start on a database generates a random one and stores it
there (`signing_keys`); every later process, worker and instance on that database reads the same
key, so tokens outlive restarts and any worker accepts another's tokens. Whoever can read the
database can then sign tokens, as whoever can read the environment can with `SECRET_KEY`."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.repositories.signing_keys import stored_secret

TOKEN_KEY_NAME = "tokens"  # noqa: S105 (the key's name in `signing_keys`, not a secret)


class SigningKeyUnavailable(RuntimeError):
    pass


async def token_signing_key(settings: Settings, engine: AsyncEngine) -> str:
    if settings.secret_key is not None:
        return settings.secret_key
    try:
        async with engine.begin() as connection:
            return await stored_secret(connection, TOKEN_KEY_NAME, secrets.token_urlsafe(48))
    except SQLAlchemyError as exc:
        raise SigningKeyUnavailable(
            "SECRET_KEY is not set and the generated signing key could not be read from or "
            "stored in the database: is it reachable, and are the migrations applied "
            "(`minicrm migrate`)? Or set SECRET_KEY."
        ) from exc
