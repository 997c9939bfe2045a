"""Duplicates and merge at 100,000 contacts in one organization, the app called in-process.

    BENCH_DATABASE_URL=postgresql+asyncpg://... .venv/bin/python -m bench.duplicates \
        [--contacts 100000] [--rounds 20]

Migrates the database, registers a fresh organization and writes `--contacts` contacts into it
in bulk (keys computed as the service computes them): 10 % of them in pairs sharing an email
written in another case, 5 % in pairs sharing a phone written in another format, the rest
unique. Then it times, through the whole app (ASGI, no network):

- `GET /contacts/duplicates` — the first page, and the last page (the deepest OFFSET);
- `POST /contacts/{id}/merge` — three duplicates with 10 deals each (20 deals move), each
  round on a fresh trio.

It prints the median and the 95th percentile of each, and deletes its organization at the end.
The machine is whatever it is: say how busy it was when quoting figures."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import delete, insert

from app.core.contact_keys import match_keys
from app.core.text import fold_fields
from app.models import Contact, Organization
from bench.analytics import make_settings, running
from bench.common import (
    code_fingerprint,
    database_url,
    machine_info,
    percentile,
    run_alembic_upgrade,
    table,
)

PREFIX = "/api/v1"
CHUNK = 5000


def contact_rows(organization_id: int, owner_id: int, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        email: str | None = f"person{i}@example.com"
        phone: str | None = f"+1 415 {i // 10000:03d} {i % 10000:04d}"
        if i % 20 in (1, 3):  # pairs sharing an email: the second in capitals
            email = f"person{i - 1}@example.com".upper()
        if i % 40 == 5:  # pairs sharing a phone: the second written another way
            phone = f"+1 (415) {(i - 1) // 10000:03d}-{(i - 1) % 10000:04d}"
        name = f"Person {i}"
        email_key, phone_key = match_keys(email, phone)
        rows.append(
            {
                "organization_id": organization_id,
                "owner_id": owner_id,
                "name": name,
                "email": email,
                "phone": phone,
                "search_text": fold_fields(name, email, phone),
                "email_key": email_key,
                "phone_key": phone_key,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


async def timed(samples: list[float], call: Callable[[], Awaitable[httpx.Response]]) -> Any:
    started = time.perf_counter()
    response = await call()
    samples.append((time.perf_counter() - started) * 1000)
    if response.status_code != 200:
        raise SystemExit(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


async def run(contacts: int, rounds: int) -> None:
    url = database_url()
    print(f"code: {code_fingerprint()}")
    print(machine_info())
    run_alembic_upgrade(url)
    settings = make_settings(url)
    async with running(settings) as (client, _, app):
        registered = await client.post(
            f"{PREFIX}/auth/register",
            json={
                "email": f"dup-{uuid.uuid4().hex[:10]}@bench.example.com",
                "password": "bench-password-2024",
                "name": "Bench",
                "organization_name": "Duplicates bench",
            },
        )
        registered.raise_for_status()
        body = registered.json()
        org_id, user_id = body["organization"]["id"], body["user"]["id"]
        headers = {
            "Authorization": f"Bearer {body['access_token']}",
            "X-Organization-Id": str(org_id),
        }
        engine = app.state.resources.engine
        started = time.perf_counter()
        rows = contact_rows(org_id, user_id, contacts)
        async with engine.begin() as conn:
            for start in range(0, len(rows), CHUNK):
                await conn.execute(insert(Contact), rows[start : start + CHUNK])
        async with engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE contacts")
        print(f"{contacts} contacts written in {time.perf_counter() - started:.1f} s")
        try:
            await measure(client, headers, rounds)
        finally:
            async with engine.begin() as conn:
                await conn.execute(delete(Organization).where(Organization.id == org_id))


async def measure(client: httpx.AsyncClient, headers: dict[str, str], rounds: int) -> None:
    def get(params: dict[str, Any]) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: client.get(f"{PREFIX}/contacts/duplicates", params=params, headers=headers)

    first: list[float] = []
    page = await timed(first, get({"page_size": 20}))
    last_page = page["pages"]
    print(f"duplicate groups: {page['total']} ({last_page} pages of 20)")
    for _ in range(rounds - 1):
        await timed(first, get({"page_size": 20}))
    deep: list[float] = []
    for _ in range(rounds):
        deep_page = await timed(deep, get({"page_size": 20, "page": last_page}))
    assert deep_page["items"], "the last page is not empty"

    async def post(path: str, payload: dict[str, Any]) -> int:
        response = await client.post(f"{PREFIX}{path}", json=payload, headers=headers)
        if response.status_code != 201:
            raise SystemExit(f"{path}: {response.status_code} {response.text}")
        created: int = response.json()["id"]
        return created

    merges: list[float] = []
    for round_ in range(max(1, rounds // 4)):
        trio = [
            await post("/contacts", {"name": f"Trio {round_}", "email": f"trio{round_}@x.com"})
            for _ in range(3)
        ]
        for contact_id in trio:
            for n in range(10):
                await post("/deals", {"contact_id": contact_id, "title": f"Deal {n}"})
        result = await timed(
            merges,
            lambda trio=trio: client.post(  # type: ignore[misc]
                f"{PREFIX}/contacts/{trio[0]}/merge",
                json={"source_ids": trio[1:]},
                headers=headers,
            ),
        )
        assert len(result["moved_deal_ids"]) == 20

    print(
        table(
            ["request", "n", "median ms", "p95 ms"],
            [
                [
                    name,
                    len(samples),
                    f"{statistics.median(samples):.1f}",
                    f"{percentile(samples, 95):.1f}",
                ]
                for name, samples in (
                    ("GET /contacts/duplicates (page 1)", first),
                    (f"GET /contacts/duplicates (page {last_page}, the last)", deep),
                    ("POST /contacts/{id}/merge (2 sources, 20 deals move)", merges),
                )
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.contacts, args.rounds))


if __name__ == "__main__":
    main()
