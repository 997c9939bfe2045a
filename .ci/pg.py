"""Create or drop a throwaway PostgreSQL database for CI: `python .ci/pg.py create|drop NAME`."""

import asyncio
import os
import sys

import asyncpg

ADMIN_DSN = os.environ.get("CI_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def main(action: str, name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"unsafe database name: {name!r}")
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if action == "create":
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
