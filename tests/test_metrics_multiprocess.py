"""/metrics with several worker processes: with PROMETHEUS_MULTIPROC_DIR shared, each process
writes its samples there and any process's /metrics reports the sum over all of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# One app process: `requests` GETs of /health, then (if asked) print its /metrics.
WORKER = """
import asyncio, sys

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import make_settings


async def main(database_url: str, requests: int, show: bool) -> None:
    app = create_app(make_settings(database_url))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            for _ in range(requests):
                assert (await client.get("/health")).status_code == 200
            if show:
                response = await client.get("/metrics")
                assert response.status_code == 200
                print(response.text)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "show"))
"""


def run_worker(metrics_dir: Path, database_url: str, requests: int, *, show: bool) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", WORKER, database_url, str(requests), "show" if show else "quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def sample(body: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", body, re.M)
    assert match, f"no {name}{{{labels}}} in:\n{body}"
    return float(match[1])


def test_metrics_add_up_the_samples_of_every_worker_process(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"

    run_worker(metrics_dir, database_url, 3, show=False)
    body = run_worker(metrics_dir, database_url, 2, show=True)

    assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # one file per process
    health = 'method="GET",route="/health",status="200"'
    assert sample(body, "minicrm_http_requests_total", health) == 5
    assert (
        sample(body, "minicrm_http_request_duration_seconds_count", 'method="GET",route="/health"')
        == 5
    )
