"""Settings and helpers shared by the benchmark modules."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/minicrm_bench"
BENCH_SECRET_KEY = "bench-only-secret-key-7d1f0c4b9e2a4f68a3c5d7e9b1f3a5c7-not-for-production"
BENCH_PASSWORD = "bench-password-2024"
OWNER_EMAIL = "owner@big.bench.example.com"
BIG_ORG_ID = 1
# The big organization's pipelines (`bench.load`): its default one holds most deals; the
# analytics scenarios also read the second, with stages of its own. Pipeline ids are fixed
# by the loader: the big organization's come first.
BIG_DEFAULT_PIPELINE_ID = 1
PARTNERSHIPS_PIPELINE_ID = 2
SEED = 20240601


def database_url() -> str:
    """SQLAlchemy URL of the benchmark database (BENCH_DATABASE_URL overrides the default)."""
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    if not url.startswith("postgresql"):
        raise SystemExit("BENCH_DATABASE_URL must be a PostgreSQL URL")
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def asyncpg_dsn(url: str) -> str:
    """The same URL for asyncpg itself (no `+asyncpg` driver suffix)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def database_name(url: str) -> str:
    return urlsplit(asyncpg_dsn(url)).path.lstrip("/")


def maintenance_dsn(url: str) -> str:
    """The `postgres` database on the same server (to create/drop the benchmark database)."""
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def machine_info(server_version: str | None = None) -> str:
    mem_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for entry in fh:
                if entry.startswith("MemTotal:"):
                    mem_kib = int(entry.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for entry in fh:
                if entry.startswith("model name"):
                    cpu = entry.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"nproc={os.cpu_count()}",
        f"cpu={cpu}",
        f"mem={mem_kib / 1024 / 1024:.1f} GiB",
        f"python={platform.python_version()}",
    ]
    if server_version:
        parts.append(f"postgres={server_version}")
    return ", ".join(parts)


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def schema_fingerprint() -> str:
    """Hash of the migrations: a changed migration means the loaded schema may be stale."""
    return _digest(list((ROOT / "alembic" / "versions").glob("*.py")))


def code_fingerprint() -> str:
    """Which code was measured: git HEAD plus a hash of app/ and alembic/ as on disk."""
    head = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        head = done.stdout.strip() or "?"
    files = [*(ROOT / "app").rglob("*.py"), *(ROOT / "alembic").rglob("*.py")]
    return f"git {head} + working tree app/alembic sha256:{_digest(files)}"


def measured_code(at_start: str) -> str:
    """`at_start` (the fingerprint taken before measuring), flagged if the code changed since:
    later servers of the run may then have loaded other code."""
    now = code_fingerprint()
    if now == at_start:
        return at_start
    return f"{at_start} (CHANGED during the run, now {now})"


def run_alembic_upgrade(url: str) -> None:
    """Build/upgrade the schema exactly as production does: `alembic upgrade head`."""
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=False,
        timeout=300,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"alembic upgrade head failed:\n{done.stdout}{done.stderr}")
