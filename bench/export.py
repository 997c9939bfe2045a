"""Export throughput: every deal of the big organization as one CSV, over HTTP.

    .venv/bin/python -m bench.export [--rounds 3] [--format csv|jsonl] [--batch-rows N]
                                     [--json out.json]

Serves the app as `make bench` does (`uvicorn --workers 2`, ENVIRONMENT=production, rate
limits off; no Redis: nothing here uses it), logs in as the big organization's owner and
downloads `GET /api/v1/deals/export` (no filter: all 1,000,000 deals of organization 1) with
one streaming client, `--rounds` times. Per round it prints the rows received (checked against
`SELECT count(*)` and the header), seconds to the first byte and to the last, rows/s, MiB, and
the peak resident memory of the worker that served it: VmRSS of both workers sampled every
20 ms during the download (and VmHWM, reset before each round through `clear_refs`).

Targets: at least 50,000 rows/s, and the worker under 200 MB, whatever the export's size.

With `--json`, the figures (every round, the machine, the code, the CPU reference) are also
written to that file (docs/bench-runs/<date>-<sha>-export.json by convention).

The dataset must be loaded already (`bench.load`); this only reads it (the database of
BENCH_DATABASE_URL, `minicrm_bench` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import httpx

from bench.common import (
    BIG_ORG_ID,
    asyncpg_dsn,
    code_fingerprint,
    database_url,
    machine_info,
    measured_code,
)
from bench.run import PREFIX, Server, app_env, load_average, login, reset_hwm, vm_hwm_kib

ROWS_PER_SECOND_TARGET = 50_000
RSS_TARGET_MB = 200


def cpu_reference() -> float:
    """Seconds one core takes for a fixed pure-Python loop here and now: on a shared machine,
    how much of a core this process got (compare runs by it)."""
    started = time.perf_counter()
    sum(range(10_000_000))
    return time.perf_counter() - started


def vm_rss_kib(pid: int) -> int:
    try:
        for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
            if entry.startswith("VmRSS:"):
                return int(entry.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """The highest VmRSS of each process, sampled every `interval` seconds on a thread."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], vm_rss_kib(pid))
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def expected_rows(url: str) -> tuple[int, str]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM deals WHERE organization_id = $1", BIG_ORG_ID
        )
        version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    if not count:
        raise SystemExit("no deals in the big organization: load the dataset (bench.load)")
    return int(count), machine_info(str(version))


def download(base_url: str, token: str, export_format: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}", "X-Organization-Id": str(BIG_ORG_ID)}
    started = time.perf_counter()
    first_byte = 0.0
    size = 0
    lines = 0
    header = b""
    with (
        httpx.Client(timeout=600) as client,
        client.stream(
            "GET",
            f"{base_url}{PREFIX}/deals/export",
            params={"format": export_format},
            headers=headers,
        ) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw():
            if not first_byte:
                first_byte = time.perf_counter() - started
                header = chunk.split(b"\n", 1)[0]
            size += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    rows = lines - 1 if export_format == "csv" else lines
    return {
        "rows": rows,
        "first_byte_s": first_byte,
        "seconds": elapsed,
        "mib": size / 2**20,
        "header_ok": float(export_format != "csv" or header.startswith(b"id,organization_id,")),
    }


def main(rounds: int, export_format: str, batch_rows: int | None, json_path: str | None) -> None:
    url = database_url()
    at_start = code_fingerprint()
    rows_expected, machine = asyncio.run(expected_rows(url))
    print(machine)
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="minicrm-bench-export-") as workdir:
        env = app_env(url, Path(workdir))
        env.pop("REDIS_URL", None)
        if batch_rows is not None:
            env["EXPORT_BATCH_ROWS"] = str(batch_rows)
        with Server("app.main:create_app", env, Path(workdir) / "server.log", factory=True) as srv:
            token = login(srv.base_url)
            workers = srv.workers()
            idle = {pid: vm_rss_kib(pid) for pid in workers}
            print(f"code: {at_start}")
            print(
                f"GET /deals/export?format={export_format}: all deals of organization "
                f"{BIG_ORG_ID} ({rows_expected:,} rows), uvicorn --workers 2, one client; "
                f"workers idle at {', '.join(f'{v / 1024:.0f}' for v in idle.values())} MiB "
                f"RSS; batch rows {env.get('EXPORT_BATCH_ROWS', 'default')}"
            )
            rates = []
            peaks = []
            reference = [cpu_reference()]
            for number in range(1, rounds + 1):
                reset_hwm(workers)
                load = load_average()
                with RssSampler(workers) as sampler:
                    result = download(srv.base_url, token, export_format)
                # The worker that served the export is the one whose memory moved.
                served = max(workers, key=lambda pid: sampler.peak[pid] - idle[pid])
                peak_mb = sampler.peak[served] / 1024
                hwm_mb = vm_hwm_kib(served) / 1024
                rate = result["rows"] / result["seconds"]
                ok = result["rows"] == rows_expected and result["header_ok"]
                rates.append(rate)
                peaks.append(max(peak_mb, hwm_mb))
                results.append(
                    {
                        **result,
                        "rows_per_second": rate,
                        "worker_rss_peak_mib": peak_mb,
                        "worker_vmhwm_mib": hwm_mb,
                        "worker_idle_rss_mib": idle[served] / 1024,
                        "load_average": load,
                    }
                )
                print(
                    f"  round {number}: {int(result['rows']):,} rows "
                    f"({'all' if ok else 'WRONG COUNT/HEADER'}), {result['mib']:.0f} MiB, "
                    f"first byte {result['first_byte_s'] * 1000:.0f} ms, "
                    f"{result['seconds']:.1f} s, {rate:,.0f} rows/s; worker RSS peak "
                    f"{peak_mb:.0f} MiB sampled (VmHWM {hwm_mb:.0f} MiB); load {load:.2f}"
                )
                if not ok:
                    raise SystemExit("the export did not hold every row once")
            reference.append(cpu_reference())
            print(
                "CPU reference (sum(range(10**7)) in this process, before and after): "
                + ", ".join(f"{seconds:.2f} s" for seconds in reference)
            )
            print(
                f"median {statistics.median(rates):,.0f} rows/s "
                f"(target >= {ROWS_PER_SECOND_TARGET:,}); highest worker RSS "
                f"{max(peaks):.0f} MiB (target < {RSS_TARGET_MB} MB)"
            )
            measured = measured_code(at_start)
            print(f"measured: {measured}; nproc={os.cpu_count()}")
    if json_path:
        summary = {
            "command": "python -m bench.export",
            "format": export_format,
            "batch_rows": batch_rows,
            "rows_expected": rows_expected,
            "machine": machine,
            "code": measured,
            "cpu_reference_seconds": reference,
            "rounds": results,
            "median_rows_per_second": statistics.median(rates),
            "highest_worker_rss_mib": max(peaks),
            "targets": {"rows_per_second": ROWS_PER_SECOND_TARGET, "rss_mb": RSS_TARGET_MB},
        }
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    parser.add_argument("--batch-rows", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    main(args.rounds, args.format, args.batch_rows, args.json)
