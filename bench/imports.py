"""Import throughput, and what an import costs other requests, on PostgreSQL.

    .venv/bin/python -m bench.imports [--rows 100000] [--preload 200000] [--batch 1000]

On a database of its own (`BENCH_IMPORT_DATABASE_URL`, default `minicrm_import_bench`;
dropped and rebuilt by the migrations; never `minicrm_bench`) it starts the API
(`minicrm serve`, one process, no background work) and one `minicrm worker`, as a PostgreSQL
deployment runs them. An organization gets `--preload` contacts first (inserted by SQL), so
the import's email lookups and inserts meet a table of some size.

Then, one after the other:

1. idle: `GET /deals/{id}` sent back to back for `--probe-seconds`; its latencies;
2. the import: a CSV of `--rows` new contacts (`name,email,phone`) is uploaded
   (`POST /imports`) and followed (`GET /imports/{id}` every 0.5 s) until `succeeded`, while
   the same `GET /deals/{id}` is sent back to back; rows per second are counted from the
   start of the upload to the first answer that says `succeeded` (end to end: the upload,
   the file's check, the queue, the batches with their events, the progress polls).

It prints rows/s and the p50/p95 latency of `GET /deals/{id}` idle and during the import,
and checks that every row became a contact with its `contact.created` event."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import (
    BENCH_PASSWORD,
    BENCH_SECRET_KEY,
    ROOT,
    VENV_BIN,
    asyncpg_dsn,
    code_fingerprint,
    database_name,
    machine_info,
    maintenance_dsn,
    measured_code,
    percentile,
    run_alembic_upgrade,
    table,
)
from bench.run import results_path

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/minicrm_import_bench"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def recreate(url: str) -> None:
    name = database_name(url)
    if name == "minicrm_bench" or not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing to drop the database {name!r}")
    conn = await asyncpg.connect(maintenance_dsn(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "minicrm"), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


async def preload(url: str, organization_id: int, owner_id: int, count: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            """
            INSERT INTO contacts (organization_id, owner_id, name, email, phone, search_text,
                                  created_at, updated_at)
            SELECT $1, $2, 'Preloaded ' || n, 'preloaded' || n || '@example.com', NULL,
                   'preloaded ' || n || ' preloaded' || n || '@example.com', now(), now()
            FROM generate_series(1, $3) AS n
            """,
            organization_id,
            owner_id,
            count,
        )
        await conn.execute("ANALYZE contacts")
    finally:
        await conn.close()


async def probe(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], until: asyncio.Event
) -> list[float]:
    """`GET path` back to back until `until` is set; the latencies in ms."""
    samples: list[float] = []
    while not until.is_set():
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path} answered {response.status_code}: {response.text}")
    return samples


async def run(args: argparse.Namespace) -> None:
    code_at_start = code_fingerprint()
    url = os.environ.get("BENCH_IMPORT_DATABASE_URL") or DEFAULT_URL
    await recreate(url)
    run_alembic_upgrade(url)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))},
        "DATABASE_URL": url,
        "SECRET_KEY": BENCH_SECRET_KEY,
        "ENVIRONMENT": "local",
        "LOG_LEVEL": "WARNING",
        "BACKGROUND_WORKER": "off",
        "RATE_LIMIT_PER_MINUTE": "0",
        "RATE_LIMIT_ORGANIZATION_PER_MINUTE": "0",
        "IMPORT_BATCH_SIZE": str(args.batch),
        "WORKER_POLL_SECONDS": "0.1",
    }
    logs = Path(tempfile.mkdtemp(prefix="minicrm-import-bench-"))
    server = start(
        ["serve", "--no-migrate", "--host", HOST, "--port", str(port)], env, logs / "api.log"
    )
    worker = start(["worker", "--concurrency", "1"], env, logs / "worker.log")
    base = f"http://{HOST}:{port}/api/v1"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for _ in range(120):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{HOST}:{port}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.5)
            registered = await client.post(
                "/auth/register",
                json={
                    "email": "owner@import.bench.example.com",
                    "password": BENCH_PASSWORD,
                    "name": "Owner",
                    "organization_name": "Import bench",
                },
            )
            registered.raise_for_status()
            body = registered.json()
            organization_id = body["organization"]["id"]
            headers = {
                "Authorization": f"Bearer {body['access_token']}",
                "X-Organization-Id": str(organization_id),
            }
            await preload(url, organization_id, body["user"]["id"], args.preload)
            contact = await client.post("/contacts", json={"name": "Probe"}, headers=headers)
            deal = await client.post(
                "/deals",
                json={"contact_id": contact.json()["id"], "title": "Probe"},
                headers=headers,
            )
            deal_path = f"/deals/{deal.json()['id']}"

            stop_idle = asyncio.Event()
            idle_task = asyncio.create_task(probe(client, deal_path, headers, stop_idle))
            await asyncio.sleep(args.probe_seconds)
            stop_idle.set()
            idle = await idle_task

            lines = ["name,email,phone"] + [
                f"Imported {n},imported{n}@example.com,+1 555 {n:07d}" for n in range(args.rows)
            ]
            content = ("\n".join(lines) + "\n").encode()
            stop_busy = asyncio.Event()
            busy_task = asyncio.create_task(probe(client, deal_path, headers, stop_busy))
            started = time.perf_counter()
            queued = await client.post(
                "/imports",
                files={"file": ("contacts.csv", content, "text/csv")},
                data={"kind": "contacts"},
                headers=headers,
            )
            if queued.status_code != 202:
                raise SystemExit(f"POST /imports answered {queued.status_code}: {queued.text}")
            import_id = queued.json()["id"]
            while True:
                state = (await client.get(f"/imports/{import_id}", headers=headers)).json()
                if state["status"] not in ("queued", "running"):
                    break
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - started
            stop_busy.set()
            busy = await busy_task
    finally:
        stop(worker)
        stop(server)
    if state["status"] != "succeeded" or state["created"] != args.rows:
        raise SystemExit(f"the import did not create every row: {state}")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'contact.created' AND organization_id = $1",
            organization_id,
        )
        server_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    if events != args.rows + 1:  # and the probe's contact
        raise SystemExit(f"expected {args.rows + 1} contact.created events, found {events}")

    def stats(samples: list[float]) -> list[Any]:
        return [len(samples), f"{percentile(samples, 50):.2f}", f"{percentile(samples, 95):.2f}"]

    print(machine_info(server_version))
    print(
        f"import of {args.rows:,} contacts (batch {args.batch}, {args.preload:,} contacts "
        f"already in the organization): {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s "
        "end to end (upload to succeeded)"
    )
    print(
        table(
            ["GET /deals/{id}", "requests", "p50 ms", "p95 ms"],
            [["idle", *stats(idle)], ["during the import", *stats(busy)]],
        )
    )
    ratio = percentile(busy, 50) / percentile(idle, 50)
    print(f"p50 during / idle: {ratio:.2f}x  (logs: {logs})")
    json_path = results_path(args.json_path, "imports")

    def latencies(samples: list[float]) -> dict[str, float]:
        return {
            "requests": len(samples),
            "p50": percentile(samples, 50),
            "p95": percentile(samples, 95),
        }

    results = {
        "machine": machine_info(server_version),
        "code": measured_code(code_at_start),
        "command": " ".join(["python -m bench.imports", *sys.argv[1:]]),
        "rows": args.rows,
        "preload": args.preload,
        "batch": args.batch,
        "seconds": round(elapsed, 2),
        "rows_per_second": round(args.rows / elapsed),
        "probe_idle_ms": latencies(idle),
        "probe_during_ms": latencies(busy),
        "p50_during_over_idle": round(ratio, 3),
    }
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"full results: {json_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--preload", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--json", dest="json_path", help="default docs/bench-runs/…-imports.json")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
