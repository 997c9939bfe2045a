"""`make bench` (webhooks): writes with an endpoint subscribed, and commit-to-delivery latency.

    .venv/bin/python -m bench.webhooks [--pairs 2] [--duration 10] [--warmup 3]
                                       [--rate 200] [--seconds 60] [--json out.json]

On the benchmark database (`bench.load`), as `bench.run` serves it: the API as
`uvicorn app.main:create_app --factory --workers 2`, one `minicrm worker --concurrency 1`
process beside it, and a receiver on loopback (`bench.receiver`, answering 204 at once). The
owner of the big organization subscribes one endpoint to every event (`["*"]`).

1. `PATCH /deals/{id}` stage (each request moves another deal: one `deal.updated` event each)
   with wrk, 32 connections, measured in turn with the endpoint enabled and disabled
   (`--pairs` times, alternating which goes first). Targets: at least 300 req/s with the
   endpoint subscribed, and within 15 % of the run with none. Between runs the worker is left
   to deliver everything it has, so each run starts from an empty queue.
2. `--rate` PATCHes a second for `--seconds`, sent by wrk on a fixed schedule whatever the
   answers (`LUA_PACED`; 64 connections), then until every event of that phase is delivered
   (at most 120 s more).
   Latency is the receiver's clock at arrival minus the event's `occurred_at`, which the API
   takes before its transaction commits: commit → delivered, if anything overstated. Targets:
   p50 ≤ 500 ms, p99 ≤ 2 s, and nothing lost: every event of the phase arrives (counted by
   `webhook-id` against the events table) with a valid Standard Webhooks signature.
3. The endpoint is deleted (its deliveries with it) and the database put back as loaded
   (`bench.run.restore`). Results go to `--json`, by default
   docs/bench-runs/<date>-<sha>-webhooks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

from bench.common import (
    BIG_ORG_ID,
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
from bench.load import add_size_options, ensure_dataset
from bench.run import (
    HOST,
    LUA_COMMON,
    LUA_PATCH_STAGE,
    PREFIX,
    Scenario,
    Server,
    app_env,
    drive,
    ensure_wrk,
    flush_redis,
    free_port,
    login,
    rate,
    restore,
    results_path,
    run_wrk,
    server_version_of,
    take_snapshot,
)

PATCH_TARGET = 300.0  # req/s with the endpoint subscribed
PATCH_BUDGET = 0.15  # subscribed within 15 % of unsubscribed
P50_TARGET_MS = 500.0
P99_TARGET_MS = 2000.0
DRAIN_SECONDS = 120.0
SUBSCRIBED, UNSUBSCRIBED = "endpoint subscribed", "no endpoint"
PATCH_LABEL = "PATCH /deals/{id} stage [%s] [pair %d]"


class Receiver:
    """`bench.receiver` in its own process, logging to `log`."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = log
        self.env = {**env, "RECEIVER_LOG": str(log)}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self.log.touch()
        command = [str(VENV_BIN / "uvicorn"), "bench.receiver:app", "--host", HOST]
        command += ["--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(self.url, timeout=1)
                return self
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit("the receiver did not start within 30 s")

    def arrivals(self) -> list[dict[str, Any]]:
        with self.log.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class Worker:
    """`minicrm worker --concurrency 1`: one endpoint is served by one loop at a time."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "minicrm"), "worker", "--concurrency", "1"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


async def queue_state(dsn: str, endpoint_id: int) -> tuple[int, int]:
    """(pending deliveries, events of the organization the worker has not looked at yet)."""
    conn = await asyncpg.connect(dsn)
    try:
        pending = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'",
            endpoint_id,
        )
        unseen = await conn.fetchval(
            "SELECT count(*) FROM events e JOIN webhook_endpoints w ON w.id = $1 "
            "WHERE e.organization_id = w.organization_id AND e.id > w.position",
            endpoint_id,
        )
        return int(pending), int(unseen)
    finally:
        await conn.close()


def drain(dsn: str, endpoint_id: int, limit: float) -> float:
    """Wait until the endpoint's queue is empty; the seconds it took (None-like inf if not)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if asyncio.run(queue_state(dsn, endpoint_id)) == (0, 0):
            return time.monotonic() - started
        time.sleep(0.25)
    return float("inf")


async def max_event_id(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM events"))
    finally:
        await conn.close()


async def events_after(dsn: str, after: int) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM events WHERE organization_id = $1 AND id > $2 ORDER BY id",
            BIG_ORG_ID,
            after,
        )
        return [row["id"] for row in rows]
    finally:
        await conn.close()


# Phase 2's pacing, appended to `LUA_PATCH_STAGE`: each wrk thread sends its share of the
# rate on a fixed schedule (request k of a thread at start + k / share), whatever the answers:
# a connection asks for the next free slot and waits for it (wrk's `delay` hook), and there are
# enough connections that a slow answer does not hold the schedule back.
LUA_PACED = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local interval_ms = 1000 * nthreads / %(per_second)d
local started = nil
local slots = 0
function delay()
  local now = now_ms()
  if started == nil then started = now end
  local at = started + slots * interval_ms
  slots = slots + 1
  return math.max(0, math.floor(at - now))
end
"""
STEADY_CONNECTIONS = 64


def steady_writes(
    wrk: str, base_url: str, script: Path, seconds: int, ids: tuple[int, int]
) -> dict[str, Any]:
    """PATCH a new deal of `ids` at the rate `script` paces (`LUA_PACED`) for `seconds`."""
    result = run_wrk(wrk, base_url, script, seconds, STEADY_CONNECTIONS, (str(ids[0]), str(ids[1])))
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": result["requests"],
        "sent_per_second": round(rate(result), 1),
        "errors": errors,
        "wrk": result,
        "patch_p50_ms": round(result["p50_us"] / 1000, 1),
        "patch_p99_ms": round(result["p99_us"] / 1000, 1),
    }


TOLERANCE_S = 300  # Standard Webhooks: a receiver refuses a timestamp further than this from now


def valid_at_arrival(verifier: Webhook, arrival: dict[str, Any]) -> bool:
    """What the library's `verify` checks, with the receiver's clock at arrival as "now" (the
    report is made minutes later, when `verify` itself would call early messages too old)."""
    timestamp = int(arrival["timestamp"])
    if abs(arrival["received_at"] - timestamp) > TOLERANCE_S:
        return False
    expected = verifier.sign(
        arrival["id"], datetime.fromtimestamp(timestamp, tz=UTC), arrival["body"]
    ).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in arrival["signature"].split(" ")
    )


def delivery_report(
    arrivals: list[dict[str, Any]], event_ids: list[int], secret: str
) -> dict[str, Any]:
    """Each event of the phase against what the receiver got: latency, losses, signatures."""
    verifier = Webhook(secret)
    wanted = {str(i) for i in event_ids}
    first_arrival: dict[str, float] = {}
    lags: list[float] = []
    invalid = duplicates = 0
    for arrival in arrivals:
        message_id = arrival["id"]
        if message_id not in wanted:
            continue
        if not valid_at_arrival(verifier, arrival):
            invalid += 1
            continue
        if message_id in first_arrival:
            duplicates += 1
            continue
        first_arrival[message_id] = arrival["received_at"]
        occurred = datetime.fromisoformat(json.loads(arrival["body"])["occurred_at"])
        lags.append((arrival["received_at"] - occurred.timestamp()) * 1000)
    lost = len(wanted) - len(first_arrival)
    return {
        "events": len(wanted),
        "delivered": len(first_arrival),
        "lost": lost,
        "invalid_signatures": invalid,
        "redelivered": duplicates,
        "lag_p50_ms": round(percentile(lags, 50), 1) if lags else None,
        "lag_p99_ms": round(percentile(lags, 99), 1) if lags else None,
        "lag_max_ms": round(max(lags), 1) if lags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=200, help="PATCHes a second in phase 2")
    parser.add_argument("--seconds", type=int, default=60, help="length of phase 2")
    parser.add_argument("--json", dest="json_path")
    add_size_options(parser)
    args = parser.parse_args()
    code_at_start = code_fingerprint()
    url = database_url()
    dsn = asyncpg_dsn(url)
    plan = asyncio.run(ensure_dataset(deals=args.deals, orgs=args.orgs))
    wrk = ensure_wrk()
    server_version = asyncio.run(server_version_of(dsn))
    results: dict[str, dict[str, Any]] = {}
    verdicts: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="minicrm-bench-webhooks-") as tmp:
        workdir = Path(tmp)
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        snapshot = asyncio.run(take_snapshot(dsn))
        ids = snapshot.patch_ids
        # Each wrk run its own slice of deals (a PATCH of a deal already moved would be a
        # no-op, with no event); phase 2 the last slice.
        runs = 2 * args.pairs
        steady = args.rate * args.seconds
        per_run = (len(ids) - steady) // runs
        ids_file = workdir / "patch_ids.txt"
        ids_file.write_text("".join(f"{deal_id}\n" for deal_id in ids))
        env = {**app_env(url, metrics_dir), "WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
        endpoint_id: int | None = None
        try:
            asyncio.run(flush_redis())
            with (
                Receiver(workdir / "deliveries.jsonl", env) as receiver,
                Server("app.main:create_app", env, workdir / "app.log", factory=True) as srv,
                Worker(env, workdir / "worker.log"),
            ):
                token = login(srv.base_url)
                auth = {"Authorization": f"Bearer {token}", "X-Organization-Id": str(BIG_ORG_ID)}
                created = httpx.post(
                    f"{srv.base_url}{PREFIX}/webhooks",
                    json={"url": receiver.url, "event_types": ["*"], "description": "bench"},
                    headers=auth,
                    timeout=10,
                )
                created.raise_for_status()
                endpoint_id, secret = created.json()["id"], created.json()["secret"]

                def subscribe(enabled: bool) -> None:
                    httpx.patch(
                        f"{srv.base_url}{PREFIX}/webhooks/{endpoint_id}",
                        json={"enabled": enabled},
                        headers=auth,
                        timeout=10,
                    ).raise_for_status()

                for i in range(1, args.pairs + 1):
                    turns = [(SUBSCRIBED, True), (UNSUBSCRIBED, False)]
                    for k, (state, enabled) in enumerate(turns if i % 2 else reversed(turns)):
                        run = 2 * (i - 1) + k
                        first, last = run * per_run, (run + 1) * per_run
                        scenario = Scenario(
                            "PATCH /deals/{id} stage",
                            LUA_PATCH_STAGE % {"ids_file": ids_file, "prefix": PREFIX},
                            warmup_args=(str(first), str(first + per_run // 4)),
                            args=(str(first + per_run // 4), str(last)),
                        )
                        subscribe(enabled)
                        label = PATCH_LABEL % (state, i)
                        print(f"  {label} ...", flush=True)
                        result = drive(
                            wrk,
                            srv,
                            scenario,
                            workdir,
                            token,
                            dsn,
                            warmup=args.warmup,
                            duration=args.duration,
                            connections=args.connections,
                        )
                        if enabled:
                            result["drained_after_s"] = round(
                                drain(dsn, endpoint_id, DRAIN_SECONDS), 1
                            )
                        results[label] = result
                subscribe(True)
                drain(dsn, endpoint_id, DRAIN_SECONDS)
                before = asyncio.run(max_event_id(dsn))
                label = f"{args.rate} PATCH/s for {args.seconds} s, endpoint subscribed"
                print(f"  {label} ...", flush=True)
                script = workdir / "steady.lua"
                script.write_text(
                    LUA_COMMON % {"token": token, "org": BIG_ORG_ID}
                    + LUA_PATCH_STAGE % {"ids_file": ids_file, "prefix": PREFIX}
                    + LUA_PACED % {"per_second": args.rate}
                )
                load = steady_writes(
                    wrk,
                    srv.base_url,
                    script,
                    args.seconds,
                    (len(ids) - steady, len(ids)),
                )
                load["drained_after_s"] = round(drain(dsn, endpoint_id, DRAIN_SECONDS), 1)
                time.sleep(0.5)  # the receiver's last lines
                event_ids = asyncio.run(events_after(dsn, before))
                load.update(delivery_report(receiver.arrivals(), event_ids, secret))
                results[label] = load
                if endpoint_id is not None:
                    httpx.delete(
                        f"{srv.base_url}{PREFIX}/webhooks/{endpoint_id}", headers=auth, timeout=10
                    ).raise_for_status()
                    endpoint_id = None
        finally:
            print("restoring the dataset ...", flush=True)
            asyncio.run(restore(url, snapshot))
            with contextlib.suppress(Exception):
                asyncio.run(flush_redis())

    pairs = [
        (
            rate(results[PATCH_LABEL % (SUBSCRIBED, i)]),
            rate(results[PATCH_LABEL % (UNSUBSCRIBED, i)]),
        )
        for i in range(1, args.pairs + 1)
    ]
    subscribed = sum(s for s, _ in pairs) / len(pairs)
    unsubscribed = sum(u for _, u in pairs) / len(pairs)
    verdicts.append(
        {
            "target": f"PATCH stage >= {PATCH_TARGET:.0f} req/s with an endpoint subscribed",
            "value": f"{subscribed:.0f} req/s (mean of {len(pairs)} runs)",
            "pass": subscribed >= PATCH_TARGET,
        }
    )
    cost = 1 - subscribed / unsubscribed
    verdicts.append(
        {
            "target": "PATCH stage with an endpoint subscribed within 15 % of none",
            "value": f"{cost:.1%} slower ({subscribed:.0f} vs {unsubscribed:.0f} req/s; pairs "
            + ", ".join(f"{1 - s / u:.1%}" for s, u in pairs)
            + ")",
            "pass": cost <= PATCH_BUDGET,
        }
    )
    steady_result = results[label]
    p50, p99 = steady_result["lag_p50_ms"], steady_result["lag_p99_ms"]
    verdicts.append(
        {
            "target": f"commit -> delivered at {args.rate} events/s: p50 <= 500 ms, p99 <= 2 s",
            "value": f"p50 {p50} ms, p99 {p99} ms, max {steady_result['lag_max_ms']} ms "
            f"(writes sent at {steady_result['sent_per_second']}/s)",
            "pass": p50 is not None
            and p50 <= P50_TARGET_MS
            and p99 <= P99_TARGET_MS
            and steady_result["sent_per_second"] >= 0.95 * args.rate,
        }
    )
    verdicts.append(
        {
            "target": "nothing lost: every event delivered, signatures valid",
            "value": f"{steady_result['delivered']:,} of {steady_result['events']:,} events "
            f"delivered, {steady_result['invalid_signatures']} invalid signatures, "
            f"{steady_result['redelivered']} delivered twice",
            "pass": steady_result["lost"] == 0 and steady_result["invalid_signatures"] == 0,
        }
    )
    rows = [
        [name, f"{rate(result):.0f}", result.get("drained_after_s", "")]
        for name, result in results.items()
        if name.startswith("PATCH /deals")
    ]
    print(table(["wrk run", "req/s", "queue drained after s"], rows))
    print(json.dumps(steady_result, indent=2))
    for verdict in verdicts:
        print(f"  {'PASS' if verdict['pass'] else 'FAIL'}  {verdict['target']}: {verdict['value']}")
    json_path = results_path(args.json_path, "webhooks")
    json_path.write_text(
        json.dumps(
            {
                "machine": machine_info(server_version),
                "code": measured_code(code_at_start),
                "command": " ".join(["python -m bench.webhooks", *sys.argv[1:]]),
                "dataset": plan.describe(),
                "total_seconds": round(time.monotonic() - started, 1),
                "results": results,
                "targets": verdicts,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"\nfull results: {json_path}")


if __name__ == "__main__":
    main()
