"""SQLite under concurrent writes: the embedded default with 100,000 deals and 32 writers.

`python -m bench.sqlite_writers` creates a throwaway SQLite database (migrations applied),
serves it like production (`uvicorn --workers 2`), loads 100,000 deals, then drives 32
connections of writes with wrk — half `POST /deals`, half `PATCH /deals/{id}` changing the
status — and prints throughput, latency and errors. Afterwards it checks that every write that
answered 2xx is there: one deal per successful POST, one `status_changed` activity per real
status change, and running totals equal to a GROUP BY over the deals.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import ROOT, VENV_BIN, machine_info, run_alembic_upgrade, table
from bench.run import LUA_COMMON, PREFIX, PROD_SECRET_KEY, Server, ensure_wrk, run_wrk

DEALS = 100_000
STATUSES = ("new", "in_progress", "won", "lost")

# Every response is counted by status so the check afterwards knows how many writes succeeded.
LUA_WRITERS = r"""
local statuses = {"new", "in_progress", "won", "lost"}
local n = 0
local posts, patches = 0, 0
function init(args)
  math.randomseed(tid * 7919 + os.time())
end
request = function()
  n = n + 1
  if math.random() < 0.5 then
    local body = string.format(
      '{"contact_id": %(contact)d, "title": "Writer %%d-%%d", "amount": "10.00"}', tid, n)
    return wrk.format("POST", "%(prefix)s/deals", nil, body)
  end
  local body = string.format('{"status": "%%s"}', statuses[math.random(1, 4)])
  return wrk.format("PATCH", "%(prefix)s/deals/" .. math.random(1, %(deals)d), nil, body)
end
"""


def _load_deals(path: Path, organization_id: int, owner_id: int, contact_id: int) -> None:
    rng = random.Random(20240601)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for number in range(1, DEALS + 1):
        created = now - timedelta(minutes=rng.randrange(0, 60 * 24 * 365))
        stamp = created.strftime("%Y-%m-%d %H:%M:%S.%f")
        title = f"Deal {number}"
        rows.append(
            (
                organization_id,
                contact_id,
                owner_id,
                title,
                title.lower(),
                rng.randrange(100, 10_000_000),  # integer cents on SQLite (app.db.types.Money)
                "USD",
                rng.choice(STATUSES),
                "qualification",
                stamp,
                stamp,
            )
        )
    with sqlite3.connect(path, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO deals (organization_id, contact_id, owner_id, title, search_text, "
            "amount, currency, status, stage, created_at, updated_at, pipeline_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT id FROM pipelines "
            "WHERE organization_id = ?1 AND is_default))",
            rows,
        )


def _check(path: Path) -> dict[str, int]:
    with sqlite3.connect(path, timeout=30) as conn:
        totals = conn.execute(
            "SELECT currency, status, stage, sum(deal_count), sum(amount_sum) FROM deal_stats "
            "GROUP BY 1, 2, 3 HAVING sum(deal_count) <> 0 ORDER BY 1, 2, 3"
        ).fetchall()
        actual = conn.execute(
            "SELECT currency, status, stage, count(*), sum(amount) FROM deals "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        return {
            "deals": conn.execute("SELECT count(*) FROM deals").fetchone()[0],
            "status_changed": conn.execute(
                "SELECT count(*) FROM activities WHERE type = 'status_changed'"
            ).fetchone()[0],
            "totals_match": int(totals == actual),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="minicrm-sqlite-bench-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "writers.db"
        url = f"sqlite+aiosqlite:///{db_path}"
        run_alembic_upgrade(url)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(
            DATABASE_URL=url,
            ENVIRONMENT="production",
            SECRET_KEY=PROD_SECRET_KEY,
            LOG_LEVEL="WARNING",
            ARGON2_MEMORY_COST_KIB="19456",
        )
        with Server("app.main:create_app", env, workdir / "server.log", factory=True) as server:
            base = f"{server.base_url}{PREFIX}"
            registered = httpx.post(
                f"{base}/auth/register",
                json={
                    "email": "writer@bench.example.com",
                    "password": "bench-password-2024",
                    "name": "Writer",
                    "organization_name": "SQLite bench",
                },
                timeout=30,
            ).json()
            token = registered["access_token"]
            organization_id = registered["organization"]["id"]
            headers = {
                "Authorization": f"Bearer {token}",
                "X-Organization-Id": str(organization_id),
            }
            contact = httpx.post(
                f"{base}/contacts", json={"name": "Bench contact"}, headers=headers, timeout=30
            ).json()
            _load_deals(db_path, organization_id, registered["user"]["id"], contact["id"])
            subprocess.run(
                [str(VENV_BIN / "minicrm"), "rebuild-stats"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            before = _check(db_path)
            script = workdir / "writers.lua"
            script.write_text(
                LUA_COMMON % {"token": token, "org": organization_id}
                + LUA_WRITERS % {"contact": contact["id"], "prefix": PREFIX, "deals": DEALS}
            )
            result = run_wrk(wrk, server.base_url, script, args.duration, args.connections, ())
        after = _check(db_path)

    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = result["duration_us"] / 1e6
    print(machine_info())
    print(
        f"SQLite, {DEALS:,} deals, {args.connections} connections of writers "
        f"(half POST /deals, half PATCH status), {args.duration} s, uvicorn --workers 2\n"
    )
    print(
        table(
            ["requests", "req/s", "p50 ms", "p99 ms", "errors (non-2xx, socket, timeout)"],
            [
                [
                    result["requests"],
                    f"{result['requests'] / seconds:.0f}",
                    f"{result['p50_us'] / 1000:.1f}",
                    f"{result['p99_us'] / 1000:.1f}",
                    errors,
                ]
            ],
        )
    )
    print(
        f"\ndeals {before['deals']:,} -> {after['deals']:,} "
        f"(+{after['deals'] - before['deals']:,} created); "
        f"status_changed activities: +{after['status_changed'] - before['status_changed']:,}; "
        f"running totals equal GROUP BY over deals: {'yes' if after['totals_match'] else 'NO'}"
    )
    if errors or not after["totals_match"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
