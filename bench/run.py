"""`make bench`: load the dataset, serve the API as production does, drive it with wrk.

    .venv/bin/python -m bench.run [--duration 10] [--warmup 3] [--connections 32]
                                  [--only NAME ...] [--no-floor] [--pairs 3]
                                  [--json out.json] [--deals N] [--orgs N]

1. `bench.load.ensure_dataset()` (skipped when the dataset is already there; `--deals` and
   `--orgs` choose a smaller one for trying the harness out, as for `bench.load`).
2. `uvicorn app.main:create_app --factory --workers 2 --proxy-headers` on a free loopback
   port with ENVIRONMENT=production, a strong SECRET_KEY, REDIS_URL=BENCH_REDIS_URL (default
   redis://127.0.0.1:6379/12) and a fresh PROMETHEUS_MULTIPROC_DIR, as docker/entrypoint.sh
   starts it.
3. Per scenario: wrk for `--warmup` seconds (discarded), then `--duration` seconds measured,
   `--connections` connections, 2 wrk threads; a Lua script adds the Authorization and
   X-Organization-Id headers and varies ids. Peak RSS of the uvicorn processes is VmHWM from
   /proc/<pid>/status, reset before each scenario through /proc/<pid>/clear_refs.
   The deal list and contact search run cold (every request another filter set, page or
   search term: the app's caches miss) and warm (one URL, or four, repeated: cache hits
   after the first request); each is measured again at 4 connections ("[4 connections]"
   rows), where the targets are read: at 32 their p50 is mostly queueing.
4. The floor (bench/floor.py, raw ASGI + asyncpg doing the app's work) is served the same way
   for GET /deals/{id}, beside a fresh app server. Both first answer the same requests, which
   must give the same statuses, body bytes and headers; then the two are measured in turn
   (`--pairs`, default 3), with one token and with the tokens of every user of the dataset
   (about 1,000 of 101 organizations, a deal of the caller's organization per request); the
   ratio is taken pair by pair, so that the machine's drift weighs on both alike.
   Rate limits are off on these servers; GET /deals/{id} is then measured in turn (`--pairs`)
   on a server counting every request (limits on, shared through Redis, never reached) and
   on one with them off: target, rate limiting costs at most 5 % of its throughput.
   GET /deals/{id} is also measured in turn (`--pairs`) with an organization API key (an admin
   key minted for the run, sent as `Authorization: Bearer mcrm_…`) and with the owner's JWT,
   on one server: target, the API key request is within 5 % of the JWT request's throughput.
5. The database is put back as loaded (rows the run added are deleted, patched deals restored,
   deal_stats rebuilt for the big organization), the Redis database is flushed, every process
   started here is stopped.
6. The full results (every wrk figure, the targets, the checks, the code fingerprint and the
   dataset) are written as JSON to `--json`, by default docs/bench-runs/<date>-<git sha>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from bench.common import (
    BENCH_PASSWORD,
    BIG_ORG_ID,
    OWNER_EMAIL,
    ROOT,
    VENV_BIN,
    asyncpg_dsn,
    code_fingerprint,
    database_url,
    machine_info,
    measured_code,
    percentile,
    table,
)
from bench.load import (
    CUSTOM_FIELD_KEY,
    CUSTOM_FIELD_OPTIONS,
    CYRILLIC_NAMES,
    FIRST_NAMES,
    LAST_NAMES,
    Plan,
    add_size_options,
    ensure_dataset,
    rebuild_deal_stats,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/12"
PROD_SECRET_KEY = "bench-production-like-secret-6f2d9a0c41b7e8f35a9c2d7e1b4f8a6c0d3e5f7a9b"
PREFIX = "/api/v1"
HOST = "127.0.0.1"
PATCH_IDS = 120_000  # deals at stage `proposal` handed to the PATCH scenario
LATENCY_CONNECTIONS = 4
COLD = "[cold]"  # every request another URL: the app's caches miss
WARM = "[warm]"  # one URL (or four) repeated: after the first request, cache hits
# A custom field filter (contract section 17), warm: each of the select's options in turn
# (the total and page start of each are cached after its first request); cold: an option and
# an amount bound drawn per request, so the total is counted each time.
CUSTOM_FILTER = (
    f"{WARM} GET /deals?cf.{CUSTOM_FIELD_KEY}= ({len(CUSTOM_FIELD_OPTIONS)} options) page_size=20"
)
CUSTOM_FILTER_COLD = f"{COLD} GET /deals?cf.{CUSTOM_FIELD_KEY}=*&max_amount=* page_size=20"
# The warm scenario's requests on a server without any cache (ANALYTICS_CACHE_TTL=0): every
# total computed (for one select value alone, summed from `deal_value_counts`), every page
# read from the start of the index range.
CUSTOM_FILTER_UNCACHED = CUSTOM_FILTER.replace(WARM, "[no cache]")

LUA_COMMON = r"""
local token = "%(token)s"
local org = "%(org)s"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["X-Organization-Id"] = org
wrk.headers["Content-Type"] = "application/json"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

LUA_RANDOM_ID = r"""
function init(args)
  math.randomseed(tid * 7919 + os.time())
end
request = function()
  local id = math.random(1, %(max_id)d)
  return wrk.format("GET", string.format("%(template)s", id))
end
"""

LUA_FIXED = r"""
request = function()
  return wrk.format("GET", "%(path)s")
end
"""

LUA_ROTATE = r"""
local paths = { %(paths)s }
local i = 0
function init(args)
  i = tid
end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""

# Cold lists: every request another filter set (status, amount bounds, order), so neither the
# cached total nor the remembered page start of an earlier request applies (about 2.4e8
# combinations). args: none. %(first)d..%(last)d: the pages drawn from.
LUA_DEALS_COLD = r"""
local statuses = { "won", "lost", "in_progress", "new" }
local orders = { "amount", "created_at", "updated_at" }
function init(args)
  math.randomseed(tid * 15485863 + os.time())
end
request = function()
  local r = math.random
  return wrk.format("GET", string.format(
    "%(prefix)s/deals?status=%%s&min_amount=%%d&max_amount=%%d&order_by=%%s&page=%%d",
    statuses[r(1, #statuses)], r(500, 1500), r(40000, 60000), orders[r(1, #orders)],
    r(%(first)d, %(last)d)))
end
"""

# Cold custom field filter: an option of the select and an upper amount bound drawn per
# request (30 options x 20,001 bounds): the cached total of one rarely serves another.
LUA_CUSTOM_FILTER_COLD = r"""
local options = { %(options)s }
function init(args)
  math.randomseed(tid * 49979687 + os.time())
end
request = function()
  local r = math.random
  return wrk.format("GET", string.format(
    "%(prefix)s/deals?cf.%(key)s=%%s&max_amount=%%d&page_size=20",
    options[r(1, #options)], r(40000, 60000)))
end
"""

# Cold search: a first and last name, a last name with the start of an id (as in the
# generated e-mail addresses) or six digits of a phone number, drawn per request; the
# cached total of one term rarely serves another.
LUA_SEARCH_COLD = r"""
local firsts = { %(firsts)s }
local lasts = { %(lasts)s }
function init(args)
  math.randomseed(tid * 32452843 + os.time())
end
request = function()
  local r = math.random
  local kind = r(1, 3)
  local term
  if kind == 1 then
    term = firsts[r(1, #firsts)] .. "%%20" .. lasts[r(1, #lasts)]
  elseif kind == 2 then
    term = lasts[r(1, #lasts)] .. tostring(r(10, 999))
  else
    term = string.format("555-%%06d", r(0, %(phone_max)d))
  end
  return wrk.format("GET", "%(prefix)s/contacts?search=" .. term)
end
"""

# Many users: each request takes one of the users' tokens, that user's organization and a
# random deal of that organization (deal ids of an organization are one range).
LUA_MANY_TOKENS = r"""
local users = {
%(users)s
}
function init(args)
  math.randomseed(tid * 7919 + os.time())
  for _, u in ipairs(users) do
    u.headers = { ["Authorization"] = "Bearer " .. u[1], ["X-Organization-Id"] = u[2] }
  end
end
request = function()
  local u = users[math.random(1, #users)]
  return wrk.format("GET", "%(prefix)s/deals/" .. math.random(u[3], u[4]), u.headers)
end
"""

LUA_POST_DEAL = r"""
local n = 0
function init(args)
  math.randomseed(tid * 104729 + os.time())
end
request = function()
  n = n + 1
  local body = string.format(
    '{"contact_id": %%d, "title": "Bench deal %%d-%%d", "amount": "1234.50", "currency": "USD"}',
    math.random(1, %(max_contact)d), tid, n)
  return wrk.format("POST", "%(prefix)s/deals", nil, body)
end
"""

# POST /deals as above, each request with its own Idempotency-Key (unique across threads,
# runs and the warm-up: a random per-thread prefix), so every one runs and keeps its answer.
IDEMPOTENT_POST = "POST /deals with Idempotency-Key"
LUA_POST_DEAL_IDEMPOTENT = r"""
local n = 0
local prefix = ""
function init(args)
  math.randomseed(tid * 104729 + os.time())
  prefix = string.format("bench-%%d-%%d-%%d", tid, os.time(), math.random(1, 1000000000))
end
request = function()
  n = n + 1
  local body = string.format(
    '{"contact_id": %%d, "title": "Bench deal %%d-%%d", "amount": "1234.50", "currency": "USD"}',
    math.random(1, %(max_contact)d), tid, n)
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Idempotency-Key"] = prefix .. "-" .. n
  return wrk.format("POST", "%(prefix)s/deals", headers, body)
end
"""

# Each thread walks its own share of deals that are at `proposal` and moves each one to
# `negotiation` once: every request is a real stage change (one `stage_changed` activity).
# args[1] = first index into the id file, so the warm-up and the measured run use other deals.
LUA_PATCH_STAGE = r"""
local ids = {}
local pos = 0
local nthreads = 2
function init(args)
  local first = tonumber(args[1])
  local last = tonumber(args[2])
  local k = 0
  for line in io.lines("%(ids_file)s") do
    k = k + 1
    if k > first and k <= last and (k %% nthreads) == (tid - 1) then
      ids[#ids + 1] = line
    end
  end
end
request = function()
  pos = pos + 1
  local id = ids[((pos - 1) %% #ids) + 1]
  return wrk.format("PATCH", "%(prefix)s/deals/" .. id, nil, '{"stage": "negotiation"}')
end
"""

# One consumer of the change feed following `next_cursor`, 1,000 events a request, from the
# oldest event; at the end (a page with fewer than 1,000) it starts again from the oldest.
EVENTS_FEED = "GET /events?limit=1000 (one consumer following next_cursor)"
EVENTS_PER_READ = 1000
LUA_EVENTS_FEED = r"""
local cursor = nil
request = function()
  local path = "%(prefix)s/events?limit=%(limit)d"
  if cursor then
    path = path .. "&after=" .. cursor
  end
  return wrk.format("GET", path)
end
response = function(status, headers, body)
  if status ~= 200 or string.sub(body, 1, 11) == '{"items":[]' then
    cursor = nil  -- past the end: from the oldest again
  else
    cursor = string.match(body, '"next_cursor":"([^"]+)"', -200)
  end
end
"""


def events_per_read(events: int) -> float:
    """Events per request of the feed scenario, on average over a pass from the oldest to
    the end: the full pages of 1,000, a shorter last one, then the empty one that ends it."""
    full, rest = divmod(events, EVENTS_PER_READ)
    return events / (full + (2 if rest else 1))


LUA_LOGIN = r"""
request = function()
  return wrk.format("POST", "%(prefix)s/auth/login", nil,
    '{"email": "%(email)s", "password": "%(password)s"}')
end
"""


@dataclass
class Scenario:
    name: str
    lua: str
    args: tuple[str, ...] = ()
    warmup_args: tuple[str, ...] = ()
    # Also measured at this many connections: the latency of one request when the two
    # workers are not saturated (at 32 connections the p50 of a slow read is mostly queueing).
    latency_connections: int | None = None
    # Measured at this many connections only (one: a single consumer), instead of
    # `--connections`.
    connections: int | None = None
    results: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def children(pid: int, marker: bytes = b"") -> list[int]:
    """Direct children of `pid` whose command line contains `marker`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command may contain spaces/parentheses: fields after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != pid:
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def vm_hwm_kib(pid: int) -> int:
    try:
        for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
            if entry.startswith("VmHWM:"):
                return int(entry.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pids: list[int]) -> bool:
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


_STATEMENT = re.compile(
    r"^\s*(?:(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)|SELECT\b.*?\bFROM\s+(\w+))",
    re.IGNORECASE | re.DOTALL,
)


def statement_kind(query: str | None) -> str:
    """`INSERT INTO deal_stats`, `SELECT … FROM deals`, … for a pg_stat_activity query."""
    match = _STATEMENT.match(query or "")
    if not match:
        return "?"
    if match.group(1):
        return f"{match.group(1).upper()} {match.group(2)}"
    return f"SELECT … FROM {match.group(3)}"


class WaitSampler:
    """Samples pg_stat_activity of the benchmark database every 100 ms while wrk runs: what the
    server's backends are doing (on CPU, waiting for a lock, idle inside a transaction, ...)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.samples = 0
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' "
                    "AND state IN ('active', 'idle in transaction')"
                )
                self.samples += 1
                for r in rows:
                    if r["state"] == "idle in transaction":
                        key = "idle in transaction"
                    elif r["wait_event_type"] is None:
                        key = "CPU"
                    else:
                        key = f"{r['wait_event_type']}:{r['wait_event']}"
                        if r["wait_event_type"] == "Lock":  # which statement is blocked
                            key += f" in {statement_kind(r['query'])}"
                    self.counts[key] = self.counts.get(key, 0) + 1
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict[str, float]:
        """Average number of backends per state over the samples, largest first."""
        if not self.samples:
            return {}
        ordered = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return {k: round(v / self.samples, 2) for k, v in ordered}


class Server:
    """A uvicorn process tree in its own session; stopped (TERM, then KILL) on exit."""

    def __init__(self, target: str, env: dict[str, str], log_path: Path, *, factory: bool) -> None:
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.command = [
            str(VENV_BIN / "uvicorn"),
            target,
            *(["--factory"] if factory else []),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "2",
            "--proxy-headers",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited at start; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                # the floor has no /health: any HTTP answer from both workers' socket will do
                answered = httpx.get(f"{self.base_url}/health", timeout=1).status_code
                if answered in (200, 404) and len(self.workers()) >= 2:
                    return self
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"server did not start within 60 s; see {self.log_path}")

    def workers(self) -> list[int]:
        """uvicorn's worker processes (multiprocessing spawn children, not its resource
        tracker)."""
        return children(self.process.pid, b"spawn_main") if self.process else []

    def pids(self) -> list[int]:
        return ([self.process.pid] if self.process else []) + self.workers()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is our child's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # workers that outlived the supervisor (should not happen) share its process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk) ...", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "wrk"],
            check=False,
            timeout=300,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is required: apt-get install -y wrk")
    return path


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    seconds: int,
    connections: int,
    args: tuple[str, ...],
) -> dict[str, Any]:
    command = [
        wrk,
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        *(["--", *args] if args else []),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for entry in done.stdout.splitlines():
        if entry.startswith("WRKJSON "):
            return dict(json.loads(entry[8:]))
    raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def login(base_url: str) -> str:
    response = httpx.post(
        f"{base_url}{PREFIX}/auth/login",
        json={"email": OWNER_EMAIL, "password": BENCH_PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# --- database bookkeeping -------------------------------------------------------------------


@dataclass
class Snapshot:
    max_ids: dict[str, int]
    patch_ids: list[int]
    patch_updated_at: list[Any]


async def take_snapshot(dsn: str) -> Snapshot:
    conn = await asyncpg.connect(dsn)
    try:
        max_ids = {
            name: int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {name}"))
            for name in (
                "deals",
                "activities",
                "tasks",
                "contacts",
                "auth_sessions",
                "api_keys",
                "events",
            )
        }
        rows = await conn.fetch(
            "SELECT id, updated_at FROM deals WHERE organization_id = $1 AND stage = 'proposal' "
            "ORDER BY id LIMIT $2",
            BIG_ORG_ID,
            PATCH_IDS,
        )
    finally:
        await conn.close()
    return Snapshot(max_ids, [r["id"] for r in rows], [r["updated_at"] for r in rows])


async def count_rows(dsn: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def restore(url: str, snapshot: Snapshot) -> None:
    """Put the database back as loaded: the next run measures the same data."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with conn.transaction():
            m = snapshot.max_ids
            await conn.execute("DELETE FROM events WHERE id > $1", m["events"])
            await conn.execute("DELETE FROM activities WHERE id > $1", m["activities"])
            await conn.execute("DELETE FROM tasks WHERE id > $1", m["tasks"])
            await conn.execute("DELETE FROM deals WHERE id > $1", m["deals"])
            await conn.execute("DELETE FROM contacts WHERE id > $1", m["contacts"])
            await conn.execute("DELETE FROM auth_sessions WHERE id > $1", m["auth_sessions"])
            await conn.execute("DELETE FROM api_keys WHERE id > $1", m["api_keys"])
            await conn.execute(
                "UPDATE deals d SET stage = 'proposal', updated_at = s.updated_at "
                "FROM unnest($1::bigint[], $2::timestamptz[]) AS s(id, updated_at) "
                "WHERE d.id = s.id AND (d.stage <> 'proposal' OR d.updated_at <> s.updated_at)",
                snapshot.patch_ids,
                snapshot.patch_updated_at,
            )
    finally:
        await conn.close()
    await rebuild_deal_stats(url, [BIG_ORG_ID])
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for name in ("deals", "activities", "tasks", "deal_stats", "auth_sessions", "events"):
            await conn.execute(f"VACUUM ANALYZE {name}")
    finally:
        await conn.close()


async def flush_redis() -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def server_version_of(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def read_log(path: Path) -> dict[str, Any]:
    """The server's JSON access log: responses by status class, ERROR lines, and the exact
    number of successful writes (to compare with the rows they added)."""
    statuses: dict[str, int] = {}
    writes = {"POST /deals": 0, "PATCH /deals/{id} stage": 0}
    errors = 0
    deals_path = f"{PREFIX}/deals"
    with path.open(encoding="utf-8", errors="replace") as fh:
        for entry in fh:
            if not entry.startswith("{"):
                continue
            try:
                record = json.loads(entry)
            except ValueError:
                continue
            if record.get("level") in ("ERROR", "CRITICAL"):
                errors += 1
            status = record.get("status")
            if not isinstance(status, int):
                continue
            key = f"{status // 100}xx"
            statuses[key] = statuses.get(key, 0) + 1
            method, request_path = record.get("method"), record.get("path", "")
            if method == "POST" and request_path == deals_path and status == 201:
                writes["POST /deals"] += 1
            elif method == "PATCH" and request_path.startswith(deals_path) and status == 200:
                writes["PATCH /deals/{id} stage"] += 1
    return {"statuses": dict(sorted(statuses.items())), "errors": errors, "writes": writes}


# --- scenarios ---

AGAIN = " [again]"
POST_ORDER = ("POST /deals", IDEMPOTENT_POST, IDEMPOTENT_POST + AGAIN, "POST /deals" + AGAIN)

# write scenarios: what to count before and after (rows of the big organization)
CHECKS = {
    **dict.fromkeys(POST_ORDER, ("deals", "SELECT count(*) FROM deals WHERE organization_id = $1")),
    "PATCH /deals/{id} stage": (
        "activities",
        "SELECT count(*) FROM activities WHERE organization_id = $1",
    ),
}

FEED_EVENTS = "SELECT count(*) FROM events WHERE organization_id = $1"

# Scenarios whose successful writes the access log counts under another scenario's name.
LOGGED_AS = {name: "POST /deals" for name in POST_ORDER if name != "POST /deals"}


def deep_page(plan: Plan) -> int:
    """Page 5,000 at 1M deals; proportionally less in a smaller dataset."""
    return max(100, min(5000, plan.big_deals // 200))


COLD_LIST = f"{COLD} GET /deals?status=*&min..max&order_by=*"
COLD_SEARCH = f"{COLD} GET /contacts?search= (varied terms)"


def cold_deep_name(plan: Plan) -> str:
    deep = deep_page(plan)
    return f"{COLD_LIST} page={deep - 99}..{deep}"


# --- cursor mode: a deep page costs what the first costs ---

CURSOR_FIRST = "GET /deals?limit=20 (cursor mode, first page)"


def cursor_depth(plan: Plan) -> int:
    """Row 500,000 of the big organization's deals at 1M; half of them in a smaller dataset."""
    return min(500_000, plan.big_deals // 2)


def cursor_deep_name(plan: Plan) -> str:
    return f"GET /deals?limit=20&cursor= (cursor mode, after row {cursor_depth(plan):,})"


async def deep_deal_cursor(url: str, plan: Plan) -> str:
    """The cursor a client walking `GET /deals?limit=20` (newest first) holds after
    `cursor_depth(plan)` rows: the row at that position is read once (one OFFSET, before
    anything is measured) and sealed by the app's own codec with the served key, exactly
    as the app seals the last row of a page."""
    from app.core.config import Environment, Settings
    from app.core.security import TokenCodec
    from app.repositories.cursor import Keyset
    from app.repositories.deals import DealFilters
    from app.services.cursors import CursorCodec, CursorScope

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ENVIRONMENT=Environment.TEST,
        SECRET_KEY=PROD_SECRET_KEY,
        DATABASE_URL=url,
    )
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT id, created_at FROM deals WHERE organization_id = $1 "
            "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            BIG_ORG_ID,
            cursor_depth(plan) - 1,
        )
    finally:
        await conn.close()
    assert row is not None, "the big organization has fewer deals than the cursor's depth"
    codec = CursorCodec(TokenCodec(settings).derived_key("cursors"))
    scope = CursorScope(BIG_ORG_ID, "deals", DealFilters())  # the list's default filters
    return codec.seal(Keyset(row["created_at"], row["id"]), scope)


def cursor_scenarios(plan: Plan) -> list[Scenario]:
    cursor = asyncio.run(deep_deal_cursor(database_url(), plan))
    return [
        Scenario(
            CURSOR_FIRST,
            LUA_FIXED % {"path": f"{PREFIX}/deals?limit=20"},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            cursor_deep_name(plan),
            LUA_FIXED % {"path": f"{PREFIX}/deals?limit=20&cursor={quote(cursor)}"},
            latency_connections=LATENCY_CONNECTIONS,
        ),
    ]


def cursor_target(by_name: dict[str, dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    n = LATENCY_CONNECTIONS
    first = by_name.get(f"{CURSOR_FIRST} [{n} connections]")
    deep = by_name.get(f"{cursor_deep_name(plan)} [{n} connections]")
    if first is None or deep is None:
        return []
    ratio = p50_ms(deep) / p50_ms(first)
    return [
        {
            "target": f"deal list by cursor at depth {cursor_depth(plan):,} p50 at {n} "
            "connections within 1.2x of the first page's",
            "value": f"{p50_ms(deep):.1f} ms vs {p50_ms(first):.1f} ms ({ratio:.2f}x)",
            "pass": ratio <= 1.2,
        }
    ]


def scenarios(plan: Plan, ids_file: Path, patch_ids: int) -> list[Scenario]:
    big_deals, big_contacts = plan.big_deals, plan.big_contacts
    deals_query = "status=won&min_amount=1000&max_amount=50000&order_by=amount"
    searches = ["smith", "%D0%BF%D0%B5%D1%82%D1%80%D0%BE%D0%B2", "m%C3%BCller", "555-00012"]
    half = patch_ids // 4  # a quarter for the warm-up, the rest for the measured run
    deep = deep_page(plan)
    firsts = [*FIRST_NAMES, *(first for first, _ in CYRILLIC_NAMES)]
    lasts = [*LAST_NAMES, *(last for _, last in CYRILLIC_NAMES)]

    def lua_list(names: list[str]) -> str:
        return ", ".join(f'"{quote(name.lower())}"' for name in names)

    return [
        Scenario(
            "GET /deals/{id}",
            LUA_RANDOM_ID % {"max_id": big_deals, "template": f"{PREFIX}/deals/%d"},
        ),
        Scenario(
            f"{COLD_LIST} page=1",
            LUA_DEALS_COLD % {"prefix": PREFIX, "first": 1, "last": 1},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            cold_deep_name(plan),
            LUA_DEALS_COLD % {"prefix": PREFIX, "first": deep - 99, "last": deep},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            COLD_SEARCH,
            LUA_SEARCH_COLD
            % {
                "prefix": PREFIX,
                "firsts": lua_list(firsts),
                "lasts": lua_list(lasts),
                "phone_max": max(1, big_contacts // 10),
            },
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            f"{WARM} GET /deals?status=won&min..max&order_by=amount page=1",
            LUA_FIXED % {"path": f"{PREFIX}/deals?{deals_query}&page=1"},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            f"{WARM} GET /deals?status=won&min..max&order_by=amount page={deep}",
            LUA_FIXED % {"path": f"{PREFIX}/deals?{deals_query}&page={deep}"},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            f"{WARM} GET /contacts?search= (4 terms)",
            LUA_ROTATE
            % {"paths": ", ".join(f'"{PREFIX}/contacts?search={term}"' for term in searches)},
            latency_connections=LATENCY_CONNECTIONS,
        ),
        *cursor_scenarios(plan),
        Scenario(
            CUSTOM_FILTER,
            LUA_ROTATE
            % {
                "paths": ", ".join(
                    f'"{PREFIX}/deals?cf.{CUSTOM_FIELD_KEY}={option}&page_size=20"'
                    for option in CUSTOM_FIELD_OPTIONS
                )
            },
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            CUSTOM_FILTER_COLD,
            LUA_CUSTOM_FILTER_COLD
            % {
                "prefix": PREFIX,
                "key": CUSTOM_FIELD_KEY,
                "options": ", ".join(f'"{option}"' for option in CUSTOM_FIELD_OPTIONS),
            },
            latency_connections=LATENCY_CONNECTIONS,
        ),
        Scenario(
            "GET /deals/{id}/activities",
            LUA_RANDOM_ID % {"max_id": big_deals, "template": f"{PREFIX}/deals/%d/activities"},
        ),
        Scenario(
            "GET /analytics/deals/summary (Redis cache)",
            LUA_FIXED % {"path": f"{PREFIX}/analytics/deals/summary"},
        ),
        Scenario(
            "GET /analytics/deals/funnel (Redis cache)",
            LUA_FIXED % {"path": f"{PREFIX}/analytics/deals/funnel"},
        ),
        # Before the writes, which add events: every pass reads the loaded events only.
        Scenario(
            EVENTS_FEED,
            LUA_EVENTS_FEED % {"prefix": PREFIX, "limit": EVENTS_PER_READ},
            connections=1,
        ),
        # In the order plain, keyed, keyed, plain (ABBA): the table's growth and the
        # machine's drift weigh on both alike.
        *(
            Scenario(
                name,
                (LUA_POST_DEAL_IDEMPOTENT if name.startswith(IDEMPOTENT_POST) else LUA_POST_DEAL)
                % {"max_contact": big_contacts, "prefix": PREFIX},
            )
            for name in POST_ORDER
        ),
        Scenario(
            "PATCH /deals/{id} stage",
            LUA_PATCH_STAGE % {"ids_file": ids_file, "prefix": PREFIX},
            warmup_args=("0", str(half)),
            args=(str(half), str(patch_ids)),
        ),
        Scenario(
            "POST /auth/login",
            LUA_LOGIN % {"prefix": PREFIX, "email": OWNER_EMAIL, "password": BENCH_PASSWORD},
        ),
    ]


class HealthProbe:
    """`GET /health` once every 20 ms from another thread while a scenario runs: the event
    loop's responsiveness while the workers are busy with something else (a login storm)."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/health"
        self.samples: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.samples.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                self._stop.wait(0.02)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=10)
        return {
            "n": len(self.samples),
            "failures": self.failures,
            "p50_ms": round(percentile(self.samples, 50), 2) if self.samples else None,
            "p99_ms": round(percentile(self.samples, 99), 2) if self.samples else None,
        }


def drive(
    wrk: str,
    server: Server,
    scenario: Scenario,
    workdir: Path,
    token: str,
    dsn: str,
    *,
    warmup: int,
    duration: int,
    connections: int,
) -> dict[str, Any]:
    script = workdir / f"s{abs(hash(scenario.name))}.lua"
    script.write_text(LUA_COMMON % {"token": token, "org": BIG_ORG_ID} + scenario.lua)
    warm: dict[str, Any] = {}
    if warmup:
        warm = run_wrk(wrk, server.base_url, script, warmup, connections, scenario.warmup_args)
    pids = server.pids()
    hwm_reset = reset_hwm(pids)
    load_before = load_average()
    probe = HealthProbe(server.base_url) if scenario.name == "POST /auth/login" else None
    with WaitSampler(dsn) as sampler:
        if probe is not None:
            probe.start()
        result = run_wrk(wrk, server.base_url, script, duration, connections, scenario.args)
        if probe is not None:
            result["health_during"] = probe.stop()
    result["db_backends"] = sampler.summary()
    workers = server.workers()
    result["rss_workers_mib"] = [round(vm_hwm_kib(p) / 1024, 1) for p in workers]
    result["rss_supervisor_mib"] = round(vm_hwm_kib(server.pids()[0]) / 1024, 1)
    result["rss_reset_per_scenario"] = hwm_reset
    result["load_avg"] = [load_before, load_average()]
    result["warmup_requests"] = warm.get("requests", 0)
    result["warmup_non_2xx"] = warm.get("status", 0)
    return result


FLOOR_LABEL = "floor: GET /deals/{id} (raw ASGI + asyncpg)"
HEADERS = ["scenario", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB (workers)", "load"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def rate(r: dict[str, Any]) -> float:
    """Requests per second of one wrk result."""
    return float(r["requests"]) / (r["duration_us"] / 1e6)


def row(name: str, r: dict[str, Any]) -> list[object]:
    seconds = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    detail = ",".join(
        f"{k}:{r[k]}" for k in ("connect", "read", "write", "status", "timeout") if r[k]
    )
    rss = r["rss_workers_mib"]
    return [
        name,
        f"{r['requests'] / seconds:,.0f}",
        f"{r['p50_us'] / 1000:.1f}",
        f"{r['p99_us'] / 1000:.1f}",
        f"{errors}" + (f" ({detail})" if detail else ""),
        " + ".join(f"{v:.0f}" for v in rss) + f" (supervisor {r['rss_supervisor_mib']:.0f})",
        f"{r['load_avg'][0]:.1f}",
    ]


def app_env(url: str, metrics_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    }
    env.update(
        {
            "ENVIRONMENT": "production",
            "SECRET_KEY": PROD_SECRET_KEY,
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONPATH": str(ROOT),
            # Off here: wrk sends thousands of requests a second with one token, far over any
            # limit for a person, and the floor answers without the rate-limit fields. Their
            # cost is measured on its own (`rate_limit_pairs`).
            **RATE_LIMITS_OFF,
        }
    )
    return env


RATE_LIMITS_OFF = {"RATE_LIMIT_PER_MINUTE": "0", "RATE_LIMIT_ORGANIZATION_PER_MINUTE": "0"}
# Counted (through Redis, in batches) but never reached: what counting costs a request.
RATE_LIMITS_ON = {
    "RATE_LIMIT_PER_MINUTE": "1000000000",
    "RATE_LIMIT_ORGANIZATION_PER_MINUTE": "1000000000",
}
RATE_LIMITS_LABEL = "GET /deals/{id} [rate limits %s] [pair %d]"
RATE_LIMIT_BUDGET = 0.05


def rate_limit_pairs(
    env: dict[str, str],
    workdir: Path,
    pairs: int,
    measure: Any,
    scenario: Scenario,
) -> None:
    """GET /deals/{id} on a server counting every request against its credential and
    organization (shared through Redis) and on one with rate limits off, measured in turn."""
    servers = []
    for state, limits in (("on (Redis)", RATE_LIMITS_ON), ("off", RATE_LIMITS_OFF)):
        folder = workdir / f"metrics-rate-limits-{limits['RATE_LIMIT_PER_MINUTE']}"
        folder.mkdir()
        server_env = {**env, **limits, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        log = workdir / f"rate-limits-{limits['RATE_LIMIT_PER_MINUTE']}.log"
        servers.append((state, Server("app.main:create_app", server_env, log, factory=True)))
    (on_state, on_server), (off_state, off_server) = servers
    with on_server as on_srv, off_server as off_srv:
        token = login(on_srv.base_url)
        probe = httpx.get(
            f"{on_srv.base_url}{PREFIX}/deals/1",
            headers={"Authorization": f"Bearer {token}", "X-Organization-Id": str(BIG_ORG_ID)},
            timeout=10,
        )
        if "ratelimit" not in probe.headers:
            raise SystemExit("rate limits on: GET /deals/{id} answered without RateLimit")
        for i in range(1, pairs + 1):
            turns = [(on_srv, on_state), (off_srv, off_state)]
            for srv, state in turns if i % 2 else reversed(turns):
                measure(srv, scenario, RATE_LIMITS_LABEL % (state, i), token)


def paired_rates(
    by_name: dict[str, dict[str, Any]], label: str, first: str, second: str, pairs: int
) -> list[tuple[float, float]]:
    """Requests/s of the `first` and `second` measurement of every pair measured whole."""
    return [
        (rate(by_name[label % (first, i)]), rate(by_name[label % (second, i)]))
        for i in range(1, pairs + 1)
        if label % (first, i) in by_name and label % (second, i) in by_name
    ]


def rate_limit_verdict(by_name: dict[str, dict[str, Any]], pairs: int) -> dict[str, Any] | None:
    measured = paired_rates(by_name, RATE_LIMITS_LABEL, "on (Redis)", "off", pairs)
    if not measured:
        return None
    each = [1 - on / off for on, off in measured]
    cost = 1 - sum(on for on, _ in measured) / sum(off for _, off in measured)
    return {
        "target": "rate limits on (Redis) cost GET /deals/{id} <= 5 % of its throughput",
        "value": f"{cost:.1%} (pairs " + ", ".join(f"{c:.1%}" for c in each) + ")",
        "pass": cost <= RATE_LIMIT_BUDGET,
    }


API_KEY_LABEL = "GET /deals/{id} [%s] [pair %d]"
API_KEY_BUDGET = 0.05


def mint_api_key(base_url: str, token: str) -> str:
    """An admin API key of the big organization, issued by its owner as a client would."""
    response = httpx.post(
        f"{base_url}{PREFIX}/organizations/{BIG_ORG_ID}/api-keys",
        json={"name": "bench", "role": "admin"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["key"])


def api_key_pairs(
    env: dict[str, str],
    workdir: Path,
    pairs: int,
    measure: Any,
    scenario: Scenario,
) -> None:
    """GET /deals/{id} with an API key and with a JWT, measured in turn on one server: the
    same request (the same `X-Organization-Id` too) but for the credential."""
    folder = workdir / "metrics-api-key"
    folder.mkdir()
    server_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    with Server("app.main:create_app", server_env, workdir / "api-key.log", factory=True) as srv:
        token = login(srv.base_url)
        key = mint_api_key(srv.base_url, token)
        answers = [
            httpx.get(
                f"{srv.base_url}{PREFIX}/deals/1",
                headers={
                    "Authorization": f"Bearer {credential}",
                    "X-Organization-Id": str(BIG_ORG_ID),
                },
                timeout=10,
            )
            for credential in (key, token)
        ]
        if [a.status_code for a in answers] != [200, 200] or answers[0].content != answers[
            1
        ].content:
            raise SystemExit("GET /deals/{id}: the API key and the JWT were answered differently")
        for i in range(1, pairs + 1):
            turns = [("API key", key), ("JWT", token)]
            for credential, secret in turns if i % 2 else reversed(turns):
                measure(srv, scenario, API_KEY_LABEL % (credential, i), secret)


def api_key_verdict(by_name: dict[str, dict[str, Any]], pairs: int) -> dict[str, Any] | None:
    measured = paired_rates(by_name, API_KEY_LABEL, "API key", "JWT", pairs)
    if not measured:
        return None
    each = [key / jwt for key, jwt in measured]
    ratio = sum(key for key, _ in measured) / sum(jwt for _, jwt in measured)
    return {
        "target": "GET /deals/{id} with an API key within 5 % of the JWT request's throughput",
        "value": f"{ratio:.1%} of it (pairs " + ", ".join(f"{r:.1%}" for r in each) + ")",
        "pass": ratio >= 1 - API_KEY_BUDGET,
    }


def selected(all_scenarios: list[Scenario], only: list[str] | None) -> list[Scenario]:
    """Scenarios named exactly in `only`, else those whose name contains one of them."""
    if not only:
        return all_scenarios
    exact = [s for s in all_scenarios if s.name in only]
    return exact or [s for s in all_scenarios if any(o.lower() in s.name.lower() for o in only)]


# --- many users: tokens, organizations, deal ranges -----------------------------------------


@dataclass(frozen=True)
class Caller:
    """One user of the dataset with an access token, its organization and that
    organization's deal ids (one range in the generated data)."""

    user_id: int
    organization_id: int
    token: str
    first_deal: int
    last_deal: int


async def mint_access_tokens(url: str, user_ids: list[int]) -> dict[int, str]:
    """An access token per user, issued as a login issues it (the app's `AuthService` starts an
    auth session and signs the pair with the served SECRET_KEY), without the Argon2 check of
    the password, which would cost seconds for 1,000 users. The sessions get ids above the
    snapshot's, so `restore` deletes them."""
    from app.core.config import Environment, Settings
    from app.core.security import TokenCodec
    from app.db.session import create_engine, create_session_factory
    from app.services.auth import AuthService

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ENVIRONMENT=Environment.TEST,
        SECRET_KEY=PROD_SECRET_KEY,
        DATABASE_URL=url,
    )
    engine = create_engine(settings)
    tokens: dict[int, str] = {}
    try:
        factory = create_session_factory(engine)
        async with factory() as session, session.begin():
            # neither the password hasher nor the login throttle is used by a session start
            service = AuthService(session, TokenCodec(settings), None, None)  # type: ignore[arg-type]
            for user_id in user_ids:
                tokens[user_id] = (await service._start_session(user_id)).access_token
    finally:
        await engine.dispose()
    return tokens


async def many_callers(url: str, plan: Plan) -> list[Caller]:
    """Every user of the seed dataset (about 1,000 at full size) with a fresh access token."""
    counts = plan.expected_counts()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        members = await conn.fetch(
            "SELECT user_id, organization_id FROM memberships WHERE user_id <= $1 ORDER BY user_id",
            counts["users"],
        )
        ranges = {
            r["organization_id"]: (r["first"], r["last"])
            for r in await conn.fetch(
                "SELECT organization_id, min(id) AS first, max(id) AS last FROM deals "
                "WHERE id <= $1 GROUP BY organization_id",
                counts["deals"],
            )
        }
    finally:
        await conn.close()
    tokens = await mint_access_tokens(url, [m["user_id"] for m in members])
    return [
        Caller(
            m["user_id"], m["organization_id"], tokens[m["user_id"]], *ranges[m["organization_id"]]
        )
        for m in members
        if m["organization_id"] in ranges
    ]


def many_tokens_scenario(callers: list[Caller]) -> Scenario:
    organizations = len({c.organization_id for c in callers})
    users = ",\n".join(
        f'  {{ "{c.token}", "{c.organization_id}", {c.first_deal}, {c.last_deal} }}'
        for c in callers
    )
    return Scenario(
        f"GET /deals/{{id}} [{len(callers):,} tokens, {organizations} organizations]",
        LUA_MANY_TOKENS % {"users": users, "prefix": PREFIX},
    )


def compare_with_floor(app_url: str, floor_url: str, callers: list[Caller]) -> tuple[str, bool]:
    """The floor's answers against the app's, request by request: status, then for a 200 the
    body bytes and every response header but `date` (the same X-Request-ID is sent to both, so
    both echo it; without one, both make one up)."""
    step = max(1, len(callers) // 12)
    sample = callers[::step][:12]
    requests: list[tuple[str, dict[str, str], str]] = []
    for n, c in enumerate(sample):
        headers = {
            "Authorization": f"Bearer {c.token}",
            "X-Organization-Id": str(c.organization_id),
        }
        deal = c.first_deal + n * 7 % (c.last_deal - c.first_deal + 1)
        requests.append((f"{PREFIX}/deals/{deal}", {**headers, "X-Request-ID": f"cmp-{n}"}, "200"))
    a, b = sample[0], sample[-1]
    a_headers = {"Authorization": f"Bearer {a.token}", "X-Organization-Id": str(a.organization_id)}
    requests.append((f"{PREFIX}/deals/{a.first_deal}", dict(a_headers), "200, made-up request id"))
    requests.append(
        (f"{PREFIX}/deals/{b.first_deal}", a_headers, "404: another organization's deal")
    )
    requests.append(
        (
            f"{PREFIX}/deals/{b.first_deal}",
            {**a_headers, "X-Organization-Id": str(b.organization_id)},
            "403: not a member",
        )
    )
    requests.append(
        (f"{PREFIX}/deals/{a.first_deal}", {**a_headers, "Authorization": "Bearer x.y.z"}, "401")
    )
    problems: list[str] = []
    with httpx.Client(timeout=10) as client:
        for path, headers, what in requests:
            ours = client.get(app_url + path, headers=headers)
            floor = client.get(floor_url + path, headers=headers)
            if ours.status_code != floor.status_code:
                problems.append(f"{what}: status {ours.status_code} vs {floor.status_code}")
                continue
            if ours.status_code != 200:
                continue
            if ours.content != floor.content:
                problems.append(f"{what}: body {ours.content!r} vs {floor.content!r}")
            names = sorted(set(ours.headers) - {"date"})
            if names != sorted(set(floor.headers) - {"date"}):
                problems.append(f"{what}: headers {names} vs {sorted(floor.headers)}")
            elif "x-request-id" in headers or "X-Request-ID" in headers:
                differing = [k for k in names if ours.headers[k] != floor.headers[k]]
                if differing:
                    problems.append(f"{what}: header values differ: {differing}")
            elif len(floor.headers["x-request-id"]) != len(ours.headers["x-request-id"]):
                problems.append(f"{what}: made-up request ids differ in form")
    verdict = (
        f"floor vs app, {len(requests)} requests ({len(sample)} users of "
        f"{len({c.organization_id for c in sample})} organizations; 200, 401, 403, 404): "
    )
    if problems:
        return verdict + "DIFFERENT: " + "; ".join(problems), False
    return verdict + "same statuses, and for every 200 the same body bytes and headers", True


# --- targets -------------------------------------------------------------------------------


def p50_ms(result: dict[str, Any]) -> float:
    return float(result["p50_us"]) / 1000


def targets(
    by_name: dict[str, dict[str, Any]],
    plan: Plan,
    ratios: dict[str, dict[str, Any]],
    floor_equivalent: bool | None,
) -> list[dict[str, Any]]:
    """The targets on the cold path, each measured or not, and the ratio to the floor (which
    means something only if the floor answered as the app)."""
    n = LATENCY_CONNECTIONS
    deep = deep_page(plan)
    latency = [
        (
            f"{COLD_LIST} page=1 [{n} connections]",
            f"deal list page 1 (cold) p50 at {n} connections < 20 ms",
            20.0,
        ),
        (
            f"{cold_deep_name(plan)} [{n} connections]",
            f"deal list page {deep - 99}..{deep} (cold) p50 at {n} connections < 60 ms",
            60.0,
        ),
        (
            f"{COLD_SEARCH} [{n} connections]",
            f"contact search (cold) p50 at {n} connections < 30 ms",
            30.0,
        ),
        (
            f"{CUSTOM_FILTER} [{n} connections]",
            f"deal list filtered by a custom field (cf.<key>=value, page_size=20, warm) p50 at "
            f"{n} connections <= 20 ms",
            20.0 + 1e-9,  # inclusive: at most 20 ms
        ),
        (
            f"{CUSTOM_FILTER_UNCACHED} [{n} connections]",
            f"deal list filtered by a custom field (cf.<key>=value, page_size=20, no cache) "
            f"p50 at {n} connections <= 20 ms",
            20.0 + 1e-9,
        ),
        (
            f"{CUSTOM_FILTER_COLD} [{n} connections]",
            f"deal list filtered by a custom field and an amount bound (page_size=20, cold) "
            f"p50 at {n} connections <= 20 ms",
            20.0 + 1e-9,
        ),
    ]
    out: list[dict[str, Any]] = []
    for name, label, limit in latency:
        result = by_name.get(name)
        if result is None:
            continue
        value = p50_ms(result)
        out.append({"target": label, "value": f"{value:.1f} ms", "pass": value < limit})
    out += cursor_target(by_name, plan)
    feed = by_name.get(EVENTS_FEED)
    if feed is not None:
        per_second = rate(feed) * feed.get("events_per_request", 0.0)
        out.append(
            {
                "target": "GET /events?limit=1000 >= 20,000 events/s read by one consumer",
                "value": f"{per_second:,.0f} events/s ({rate(feed):,.1f} req/s)",
                "pass": per_second >= 20_000,
            }
        )
    measured = [name for name in POST_ORDER if name in by_name]
    plain = [by_name[name] for name in measured if not name.startswith(IDEMPOTENT_POST)]
    keyed = [by_name[name] for name in measured if name.startswith(IDEMPOTENT_POST)]
    if plain and keyed:
        plain_rate = sum(rate(r) for r in plain) / len(plain)
        keyed_rate = sum(rate(r) for r in keyed) / len(keyed)
        ratio = keyed_rate / plain_rate
        out.append(
            {
                "target": f"{IDEMPOTENT_POST} >= 80 % of the throughput without",
                "value": f"{ratio:.0%} ({keyed_rate:.0f} vs {plain_rate:.0f} req/s, mean of "
                f"{len(keyed)} and {len(plain)} runs in the order plain, keyed, keyed, plain)",
                "pass": ratio >= 0.8,
            }
        )
    if floor_equivalent is not None:
        out.append(
            {
                "target": "the floor answers GET /deals/{id} as the app (statuses, bytes, headers)",
                "value": "same" if floor_equivalent else "DIFFERENT (see the checks)",
                "pass": floor_equivalent,
            }
        )
    for kind, ratio in ratios.items():
        if "tokens" not in kind or "one token" in kind:
            continue
        out.append(
            {
                "target": f"GET /deals/{{id}} {kind} >= 0.65x the like-for-like floor (aim 0.8x)",
                "value": f"{ratio['overall']:.2f}x (pairs "
                + ", ".join(f"{r:.2f}x" for r in ratio["pairs"])
                + ")",
                "pass": ratio["overall"] >= 0.65,
            }
        )
    return out


def results_path(given: str | None, kind: str = "") -> Path:
    """Where a benchmark writes its results: `given`, or `default_json_path(kind)`; its
    folder made if missing."""
    path = Path(given) if given else default_json_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def default_json_path(kind: str = "") -> Path:
    """docs/bench-runs/<UTC date>-<git sha>[-<kind>].json (-2, -3, ... when taken)."""
    sha = "nogit"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        sha = done.stdout.strip() or sha
    stem = f"{time.strftime('%Y-%m-%d', time.gmtime())}-{sha}" + (f"-{kind}" if kind else "")
    folder = ROOT / "docs" / "bench-runs"
    path = folder / f"{stem}.json"
    k = 2
    while path.exists():
        path = folder / f"{stem}-{k}.json"
        k += 1
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", nargs="*", help="scenario names (exact, else substrings)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    parser.add_argument(
        "--pairs",
        type=positive_int,
        default=3,
        help="GET /deals/{id} on the app and on the floor, measured in turn this many times "
        "(with one token, and with the tokens of every user)",
    )
    parser.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="skip GET /deals/{id} with rate limits on vs off (measured in turn --pairs times)",
    )
    parser.add_argument(
        "--no-api-key",
        action="store_true",
        help="skip GET /deals/{id} with an API key vs a JWT (measured in turn --pairs times)",
    )
    parser.add_argument(
        "--no-diagnose",
        action="store_true",
        help="skip GET /deals/{id} on a server without access log and metrics files",
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        help="where to write the full results (default docs/bench-runs/<date>-<git sha>.json)",
    )
    add_size_options(parser)
    args = parser.parse_args()
    code_at_start = code_fingerprint()

    url = database_url()
    dsn = asyncpg_dsn(url)
    plan = asyncio.run(ensure_dataset(deals=args.deals, orgs=args.orgs))
    wrk = ensure_wrk()
    server_version = asyncio.run(server_version_of(dsn))
    results: list[tuple[str, dict[str, Any]]] = []
    checks: list[str] = []
    ratios: dict[str, dict[str, Any]] = {}
    pair_kinds: list[tuple[str, Scenario, str]] = []
    floor_equivalent: bool | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="minicrm-bench-") as tmp:
        workdir = Path(tmp)
        ids_file = workdir / "patch_ids.txt"
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        snapshot = asyncio.run(take_snapshot(dsn))
        ids_file.write_text("".join(f"{deal_id}\n" for deal_id in snapshot.patch_ids))
        env = app_env(url, metrics_dir)
        all_scenarios = scenarios(plan, ids_file, len(snapshot.patch_ids))
        chosen = selected(all_scenarios, args.only)
        get_deal = all_scenarios[0]

        def measure(
            server: Server,
            scenario: Scenario,
            label: str,
            token: str,
            connections: int | None = None,
        ) -> None:
            print(f"  {label} ...", flush=True)
            result = drive(
                wrk,
                server,
                scenario,
                workdir,
                token,
                dsn,
                warmup=args.warmup,
                duration=args.duration,
                connections=connections or args.connections,
            )
            results.append((label, result))

        try:
            asyncio.run(flush_redis())
            app_server = Server("app.main:create_app", env, workdir / "app.log", factory=True)
            print("starting: uvicorn " + " ".join(app_server.command[1:]), flush=True)
            with app_server as srv:
                token = login(srv.base_url)
                for scenario in chosen:
                    check = CHECKS.get(scenario.name)
                    before = asyncio.run(count_rows(dsn, check[1], BIG_ORG_ID)) if check else 0
                    measure(srv, scenario, scenario.name, token, scenario.connections)
                    if scenario.name == EVENTS_FEED:
                        events = asyncio.run(count_rows(dsn, FEED_EVENTS, BIG_ORG_ID))
                        results[-1][1]["events_per_request"] = events_per_read(events)
                    if scenario.latency_connections:
                        n = scenario.latency_connections
                        measure(srv, scenario, f"{scenario.name} [{n} connections]", token, n)
                    if check:
                        time.sleep(1)  # requests in flight when wrk stopped finish
                        after = asyncio.run(count_rows(dsn, check[1], BIG_ORG_ID))
                        results[-1][1]["check"] = {
                            "table": check[0],
                            "before": before,
                            "after": after,
                        }
            log = read_log(workdir / "app.log")
            checks.append(f"server access log: {log['statuses']}, ERROR lines: {log['errors']}")
            # The access log counts both POST /deals scenarios under one path.
            added_as_logged: dict[str, int] = {}
            for name, result in results:
                if check_result := result.get("check"):
                    logged_as = LOGGED_AS.get(name, name)
                    added_as_logged[logged_as] = (
                        added_as_logged.get(logged_as, 0)
                        + check_result["after"]
                        - check_result["before"]
                    )
            for name, result in results:
                check_result = result.get("check")
                if check_result:
                    added = check_result["after"] - check_result["before"]
                    logged = log["writes"][LOGGED_AS.get(name, name)]
                    same = added_as_logged[LOGGED_AS.get(name, name)] == logged
                    verdict = "OK" if same else "MISMATCH"
                    checks.append(
                        f"{name}: {check_result['table']} {check_result['before']:,} -> "
                        f"{check_result['after']:,} (+{added:,}); successful responses in the "
                        f"access log (warm-up + measured + in flight at wrk's stop): "
                        f"{logged:,} -> {verdict}"
                    )
            if get_deal in chosen and not args.no_diagnose:
                quiet_env = {**env, "LOG_LEVEL": "WARNING"}
                quiet_env.pop("PROMETHEUS_MULTIPROC_DIR")
                quiet = Server(
                    "app.main:create_app", quiet_env, workdir / "quiet.log", factory=True
                )
                with quiet as srv:
                    measure(
                        srv, get_deal, f"{get_deal.name} [no access log, no metrics dir]", token
                    )
            custom_filter = next((s for s in chosen if s.name == CUSTOM_FILTER), None)
            if custom_filter is not None:
                uncached_env = {**env, "ANALYTICS_CACHE_TTL": "0"}
                uncached = Server(
                    "app.main:create_app", uncached_env, workdir / "uncached.log", factory=True
                )
                with uncached as srv:
                    measure(
                        srv,
                        custom_filter,
                        f"{CUSTOM_FILTER_UNCACHED} [{LATENCY_CONNECTIONS} connections]",
                        token,
                        LATENCY_CONNECTIONS,
                    )
            if get_deal in chosen and not args.no_floor:
                callers = asyncio.run(many_callers(url, plan))
                many = many_tokens_scenario(callers)
                organizations = len({c.organization_id for c in callers})
                pair_kinds = [
                    ("one token", get_deal, token),
                    (f"{len(callers):,} tokens of {organizations} organizations", many, token),
                ]
                # Both servers up, measured in turn (ours, floor, floor, ours, ours, floor, ...):
                # the machine's speed drifts between runs by as much as the margin being
                # measured, and in turn it weighs on both sides of the ratio alike.
                pairs_metrics = workdir / "metrics-pairs"
                pairs_metrics.mkdir()
                pairs_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(pairs_metrics)}
                ours_server = Server(
                    "app.main:create_app", pairs_env, workdir / "pairs.log", factory=True
                )
                # One SECRET_KEY: the app's tokens are valid on the floor. The floor takes its
                # port once the app holds its own.
                with ours_server as ours_srv:
                    floor = Server("bench.floor:app", env, workdir / "floor.log", factory=False)
                    with floor as floor_srv:
                        verdict, floor_equivalent = compare_with_floor(
                            ours_srv.base_url, floor_srv.base_url, callers
                        )
                        checks.append(verdict)
                        print(f"  {verdict}", flush=True)
                        for i in range(1, args.pairs + 1):
                            for kind, scenario, kind_token in pair_kinds:
                                turns = [
                                    (ours_srv, f"GET /deals/{{id}} [{kind}] [pair {i}]"),
                                    (floor_srv, f"{FLOOR_LABEL} [{kind}] [pair {i}]"),
                                ]
                                for srv, label in turns if i % 2 else reversed(turns):
                                    measure(srv, scenario, label, kind_token)
            if get_deal in chosen and not args.no_rate_limits:
                rate_limit_pairs(env, workdir, args.pairs, measure, get_deal)
            if get_deal in chosen and not args.no_api_key:
                api_key_pairs(env, workdir, args.pairs, measure, get_deal)
        finally:
            print("restoring the dataset ...", flush=True)
            asyncio.run(restore(url, snapshot))
            with contextlib.suppress(Exception):
                asyncio.run(flush_redis())

    by_name = dict(results)
    for kind, _, _ in pair_kinds:
        pairs = [
            (
                by_name[f"GET /deals/{{id}} [{kind}] [pair {i}]"],
                by_name[f"{FLOOR_LABEL} [{kind}] [pair {i}]"],
            )
            for i in range(1, args.pairs + 1)
            if f"{FLOOR_LABEL} [{kind}] [pair {i}]" in by_name
        ]
        if not pairs:
            continue
        each = [rate(ours) / rate(floor_result) for ours, floor_result in pairs]
        overall = sum(rate(ours) for ours, _ in pairs) / sum(rate(f) for _, f in pairs)
        latency = sum(o["p50_us"] for o, _ in pairs) / sum(f["p50_us"] for _, f in pairs)
        ratios[kind] = {"pairs": each, "overall": overall, "p50_latency": latency}
        checks.append(
            f"GET /deals/{{id}} with {kind}: ours/floor throughput in {len(pairs)} alternating "
            "pairs: "
            + ", ".join(f"{r:.2f}x" for r in each)
            + f"; all pairs together {overall:.2f}x, p50 latency {latency:.2f}x"
        )
    verdicts = targets(by_name, plan, ratios, floor_equivalent)
    rate_limit_target = rate_limit_verdict(by_name, args.pairs)
    if rate_limit_target is not None:
        verdicts.append(rate_limit_target)
    api_key_target = api_key_verdict(by_name, args.pairs)
    if api_key_target is not None:
        verdicts.append(api_key_target)
    total_seconds = time.monotonic() - started
    print()
    print(f"machine: {machine_info(server_version)}")
    print(f"code: {measured_code(code_at_start)}")
    print(f"dataset: {plan.describe()}")
    print(
        f"wrk -t2 -c{args.connections}, {args.warmup} s warm-up + {args.duration} s measured per "
        f"scenario; uvicorn --workers 2, ENVIRONMENT=production, REDIS_URL {REDIS_URL}; wrk, "
        f"server and PostgreSQL share the machine; total {total_seconds:.0f} s"
    )
    print()
    print(table(HEADERS, [row(name, r) for name, r in results]))
    print()
    print(
        table(
            ["scenario", "PostgreSQL backends (average count by state)"],
            [
                [name, ", ".join(f"{k} {v}" for k, v in r["db_backends"].items()) or "-"]
                for name, r in results
            ],
        )
    )
    print()
    for check in checks:
        print(check)
    for name, r in results:
        if "health_during" in r:
            h = r["health_during"]
            print(
                f"GET /health during {name}: p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms "
                f"({h['n']} probes, {h['failures']} failed)"
            )
    if verdicts:
        print()
        scale = "" if plan.big_deals == 1_000_000 else f" (at {plan.big_deals:,} deals, not 1M)"
        print(f"targets{scale}:")
        for verdict in verdicts:
            mark = "PASS" if verdict["pass"] else "FAIL"
            print(f"  {mark}  {verdict['target']}: {verdict['value']}")
    json_path = results_path(args.json_path)
    json_path.write_text(
        json.dumps(
            {
                "machine": machine_info(server_version),
                "code": measured_code(code_at_start),
                "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
                "dataset": {"description": plan.describe(), "plan": asdict(plan)},
                "redis_url": REDIS_URL,
                "connections": args.connections,
                "latency_connections": LATENCY_CONNECTIONS,
                "duration": args.duration,
                "warmup": args.warmup,
                "total_seconds": round(total_seconds, 1),
                "results": by_name,
                "ratios": ratios,
                "floor_answers_as_the_app": floor_equivalent,
                "targets": verdicts,
                "checks": checks,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"\nfull results: {json_path}")


if __name__ == "__main__":
    main()
