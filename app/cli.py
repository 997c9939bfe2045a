"""The `minicrm` command: serve, migrate, wait for the database, create users.

Every subcommand reads the same settings as the API (environment and `.env`). Adding one is one
function, taking the parsed arguments and returning the exit status, plus its decorator:

    @command("seed-demo", "Fill a demo organization.", argument("--contacts", type=int, default=50))
    def seed_demo(args: argparse.Namespace) -> int: ...
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.core.config import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.resources import Resources
    from app.services.auth import Registration

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
APP_FACTORY = "app.main:create_app"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
PASSWORD_ENV = "MINICRM_PASSWORD"  # noqa: S105 - the variable's name, not a password

Handler = Callable[[argparse.Namespace], int]
_T = TypeVar("_T")


class CliError(Exception):
    """A failure the user can act on: logged as one line, no traceback, then `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- subcommand registry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Argument:
    flags: tuple[str, ...]
    options: dict[str, Any]
    env: str | None = None  # an environment variable that overrides the default when set


def argument(*flags: str, env: str | None = None, **options: Any) -> Argument:
    """`add_argument`'s parameters; with `env`, that variable (read when the parser is built)
    replaces the default, and goes through `type` like a value given on the command line."""
    return Argument(flags, options, env)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    handler: Handler
    arguments: tuple[Argument, ...]


COMMANDS: list[Command] = []


def command(name: str, summary: str, *arguments: Argument) -> Callable[[Handler], Handler]:
    """Register the decorated function as subcommand `name`: it gets the parsed arguments and
    returns the exit status (or raises `CliError`)."""

    def register(handler: Handler) -> Handler:
        COMMANDS.append(Command(name, summary, handler, arguments))
        return handler

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minicrm",
        description="Mini-CRM administration. Settings come from the environment and .env, "
        "exactly as for the API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        sub = subparsers.add_parser(cmd.name, help=cmd.summary, description=cmd.summary)
        for arg in cmd.arguments:
            options = dict(arg.options)
            if arg.env and os.environ.get(arg.env):
                options["default"] = os.environ[arg.env]
            sub.add_argument(*arg.flags, **options)
        sub.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


# --- shared helpers -----------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("mini-crm")
    except metadata.PackageNotFoundError:
        return "unknown"


def _configure_logging() -> None:
    """The CLI's own messages go to stderr, whatever Alembic or the app do to the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("minicrm: %(levelname)s: %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        raise CliError(f"invalid configuration: {_validation_message(exc)}", exit_code=2) from exc


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        parts.append(f"{location}: {error['msg']}" if location else error["msg"])
    return "; ".join(parts)


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL fails later with its own error; never echo a secret
        return "<unparsable DATABASE_URL>"


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {number}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


# --- migrate ------------------------------------------------------------------------------------


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    if not ALEMBIC_INI.is_file():
        raise CliError(f"alembic.ini not found at {ALEMBIC_INI}: run from a source checkout")
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = settings.DATABASE_URL
    return config


# PostgreSQL's SQLSTATE for a database name that does not exist.
_INVALID_CATALOG_NAME = "3D000"
_CONNECT_CHECK_SECONDS = 10.0


def check_database(settings: Settings) -> None:
    """Connect once, so that what a user fixes themselves (a database not created yet, a
    server that is down, a wrong password or path) is one `CliError` line, not the migration
    tool's traceback. Failures of the migrations themselves keep theirs: those are bugs."""
    url = make_url(settings.DATABASE_URL)
    if url.get_backend_name() != "sqlite":
        asyncio.run(_check_server(settings))
    elif url.database and url.database != ":memory:":
        # SQLite creates the file on first use, but not the directory it goes in.
        directory = Path(url.database).expanduser().resolve().parent
        if not directory.is_dir():
            raise CliError(
                f"cannot create the SQLite database {url.database}: "
                f"the directory {directory} does not exist"
            )


async def _check_server(settings: Settings) -> None:
    from sqlalchemy.exc import DBAPIError

    from app.db.session import create_engine

    url = make_url(settings.DATABASE_URL)
    target = _display_url(settings.DATABASE_URL)
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(_CONNECT_CHECK_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _INVALID_CATALOG_NAME:
            host, port = url.host or "localhost", url.port or 5432
            user = f" -U {url.username}" if url.username else ""
            raise CliError(
                f"the database {url.database!r} does not exist on {host}:{port} ({target}); "
                f"create it first, e.g. createdb -h {host} -p {port}{user} {url.database}"
            ) from None
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise CliError(f"cannot connect to the database at {target}: {reason}") from None
    except TimeoutError:
        raise CliError(
            f"cannot connect to the database at {target}: no answer within "
            f"{_CONNECT_CHECK_SECONDS:g}s"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot connect to the database at {target}: {exc}") from None
    finally:
        await engine.dispose()


def run_migrations(settings: Settings) -> None:
    from alembic import command as alembic_command

    check_database(settings)
    logger.info("applying migrations to %s", _display_url(settings.DATABASE_URL))
    alembic_command.upgrade(alembic_config(settings), "head")
    logger.info("the database schema is up to date")


@command("migrate", "Apply the database migrations (alembic upgrade head).")
def migrate(args: argparse.Namespace) -> int:
    run_migrations(load_settings())
    return 0


# --- wait-db ------------------------------------------------------------------------------------


async def wait_for_database(settings: Settings, seconds: float, interval: float = 1.0) -> bool:
    """Retry `SELECT 1` until it answers (True) or `seconds` have passed (False)."""
    from app.db.session import create_engine

    target = _display_url(settings.DATABASE_URL)
    engine = create_engine(settings)
    deadline = time.monotonic() + seconds
    attempt = 0
    try:
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                # One attempt never outlives the deadline by much, even if a connect hangs.
                async with asyncio.timeout(max(1.0, min(5.0, remaining))):
                    async with engine.connect() as connection:
                        await connection.execute(text("SELECT 1"))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.error(
                        "timed out after %gs waiting for the database at %s (%d attempts); "
                        "last error: %s",
                        seconds,
                        target,
                        attempt,
                        error,
                    )
                    return False
                logger.warning(
                    "database at %s not ready (attempt %d, %.0fs left): %s",
                    target,
                    attempt,
                    remaining,
                    error,
                )
                await asyncio.sleep(min(interval, remaining))
            else:
                logger.info("database at %s is ready", target)
                return True
    finally:
        await engine.dispose()


@command(
    "wait-db",
    "Wait until the database accepts connections; exit 1 on timeout.",
    argument(
        "--timeout",
        type=_seconds,
        default="60",
        env="DB_WAIT_TIMEOUT",
        help="seconds to keep trying (default: $DB_WAIT_TIMEOUT or 60)",
    ),
)
def wait_db(args: argparse.Namespace) -> int:
    settings = load_settings()
    return 0 if asyncio.run(wait_for_database(settings, args.timeout)) else 1


# --- serve --------------------------------------------------------------------------------------


@command(
    "serve",
    "Apply the migrations, then run the API with uvicorn.",
    argument(
        "--host",
        default="127.0.0.1",
        env="HOST",
        help="interface to bind (default: $HOST or 127.0.0.1)",
    ),
    argument(
        "--port",
        type=_port,
        default="8000",
        env="PORT",
        help="port to listen on (default: $PORT or 8000)",
    ),
    argument(
        "--workers",
        type=_positive_int,
        default="1",
        env="WEB_CONCURRENCY",
        help="worker processes (default: $WEB_CONCURRENCY or 1)",
    ),
    argument("--reload", action="store_true", help="restart on code changes (development)"),
    argument("--no-migrate", action="store_true", help="do not apply migrations first"),
)
def serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.reload and args.workers > 1:
        raise CliError("--reload runs a single process: drop --workers", exit_code=2)
    settings = load_settings()
    if not args.no_migrate:
        run_migrations(settings)
    if args.workers > 1 and settings.REDIS_URL is None:
        # The analytics cache stays correct per process (entries carry the data version), but
        # each worker counts failed logins on its own.
        logger.warning(
            "%d workers without REDIS_URL: each worker keeps its own analytics cache and "
            "login-throttle counts (up to %d x LOGIN_THROTTLE_MAX_ATTEMPTS failures). Set "
            "REDIS_URL to share them between workers.",
            args.workers,
            args.workers,
        )
    metrics_dir: str | None = None
    if args.workers > 1 and not os.environ.get(METRICS_DIR_ENV):
        # Without it each worker counts alone and /metrics shows whichever one answers.
        metrics_dir = tempfile.mkdtemp(prefix="minicrm-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            reload=args.reload,
            reload_dirs=[str(PROJECT_ROOT / "app")] if args.reload else None,
            proxy_headers=True,
            timeout_keep_alive=settings.KEEPALIVE_TIMEOUT_SECONDS,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


# --- worker -------------------------------------------------------------------------------------


async def run_workers(settings: Settings, concurrency: int) -> None:
    """`concurrency` delivery loops until SIGTERM or SIGINT; in-flight deliveries finish
    (a delivery cut short is sent again once its lease runs out)."""
    import signal

    from app.db.session import create_engine, create_session_factory
    from app.jobs.custom_field_indexes import keep_custom_field_indexes
    from app.jobs.worker import run_worker
    from app.services.trash import TrashPurger

    engine = create_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        factory = create_session_factory(engine)
        logger.info("delivering webhooks with %d loop(s)", concurrency)
        purger = TrashPurger(factory, settings)  # once per interval for the whole process
        await asyncio.gather(
            *(run_worker(factory, settings, stop, purger=purger) for _ in range(concurrency)),
            keep_custom_field_indexes(engine, settings, stop),
        )
    finally:
        await engine.dispose()
    logger.info("worker stopped")


@command(
    "worker",
    "Run background work (webhook delivery, imports, trash purge, custom field indexes) "
    "until stopped; run as many as wanted.",
    argument(
        "--concurrency",
        type=_positive_int,
        default="4",
        env="WORKER_CONCURRENCY",
        help="endpoints served at once by this process (default: $WORKER_CONCURRENCY or 4)",
    ),
)
def worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_database(settings)
    asyncio.run(run_workers(settings, args.concurrency))
    return 0


# --- create-user --------------------------------------------------------------------------------


def _read_password(given: str | None) -> str:
    if given:
        return given
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise CliError(
            f"no password given: use --password, set {PASSWORD_ENV}, or run in a terminal",
            exit_code=2,
        )
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != password:
        raise CliError("the passwords do not match", exit_code=2)
    return password


async def create_user(
    settings: Settings, email: str, name: str, password: str, organization: str
) -> Registration:
    """A user, their organization and the owner membership, exactly as `POST /auth/register`."""
    from app.core.errors import EmailTaken
    from app.main import build_resources
    from app.schemas.auth import RegisterRequest
    from app.services.auth import AuthService

    try:
        data = RegisterRequest(
            email=email, name=name, password=password, organization_name=organization
        )
    except ValidationError as exc:
        raise CliError(f"invalid user: {_validation_message(exc)}", exit_code=2) from exc
    resources = await build_resources(settings)
    try:
        async with resources.session_factory() as session:
            service = AuthService(
                session, resources.tokens, resources.passwords, resources.login_throttle
            )
            try:
                registration = await service.register(data)
            except EmailTaken as exc:
                raise CliError(f"a user with the email {data.email} already exists") from exc
            await session.commit()
            return registration
    finally:
        await resources.engine.dispose()
        if resources.redis is not None:
            await resources.redis.aclose()


@command(
    "create-user",
    "Create a user with their own organization, as its owner.",
    argument("--email", required=True),
    argument("--name", required=True, help="the user's display name"),
    argument(
        "--password",
        help=f"visible to other local users in the process list: prefer ${PASSWORD_ENV} or "
        "the interactive prompt",
    ),
    argument("--organization", metavar="NAME", help='default: "<name>\'s organization"'),
)
def create_user_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    password = _read_password(args.password)
    organization = args.organization or f"{args.name}'s organization"
    registration = asyncio.run(create_user(settings, args.email, args.name, password, organization))
    logger.info(
        "created user %s (id %d), owner of organization %r (id %d)",
        registration.user.email,
        registration.user.id,
        registration.organization.name,
        registration.organization.id,
    )
    print(f"user_id={registration.user.id}")
    print(f"organization_id={registration.organization.id}")
    return 0


# --- seed-demo and rebuild-stats ------------------------------------------------------------


async def _with_session(
    settings: Settings, work: Callable[[AsyncSession, Resources], Awaitable[_T]]
) -> _T:
    """Run `work` in one transaction with the app's own resources, like a request would."""
    from app.db.session import run_after_commit
    from app.main import build_resources

    resources = await build_resources(settings)
    try:
        async with resources.session_factory() as session:
            result = await work(session, resources)
            await session.commit()
            await run_after_commit(session)
            return result
    finally:
        await resources.engine.dispose()
        if resources.redis is not None:
            await resources.redis.aclose()


@command(
    "seed-demo",
    "Create demo data (idempotent): a team of four roles, a few hundred contacts and deals "
    "over the last months.",
)
def seed_demo_command(args: argparse.Namespace) -> int:
    from app.services.demo import DEMO_LOGINS, DEMO_PASSWORD, seed_demo

    settings = load_settings()
    started = time.monotonic()
    result = asyncio.run(_with_session(settings, seed_demo))
    if result.created:
        logger.info(
            "demo data created in organization %d in %.1fs: %s",
            result.organization_id,
            time.monotonic() - started,
            ", ".join(f"{count} {what}" for what, count in result.counts.items()),
        )
    else:
        logger.info(
            "demo data already present (organization %d): nothing changed", result.organization_id
        )
    print(f"organization_id={result.organization_id}")
    for email, _, role in DEMO_LOGINS:
        print(f"login: {email} / {DEMO_PASSWORD} ({role.value})")
    return 0


@command(
    "rebuild-stats",
    "Recompute the running totals, daily counts and custom field value counts from the deals "
    "(after a bulk import).",
    argument("--organization", type=int, metavar="ID", help="default: every organization"),
)
def rebuild_stats_command(args: argparse.Namespace) -> int:
    from app.services.read_models import ReadModels

    async def rebuild(session: AsyncSession, resources: Resources) -> int:
        from app.models import Organization

        if args.organization is not None:
            ids = [args.organization]
        else:
            ids = list(await session.scalars(select(Organization.id).order_by(Organization.id)))
        for organization_id in ids:
            await ReadModels(session, organization_id, resources.cache).rebuild()
        return len(ids)

    count = asyncio.run(_with_session(load_settings(), rebuild))
    logger.info("rebuilt analytics totals for %d organization(s)", count)
    return 0


@command(
    "prune",
    "Delete expired data: Idempotency-Key answers older than IDEMPOTENCY_TTL_HOURS, events "
    "and settled webhook deliveries older than EVENTS_RETENTION_DAYS, trashed contacts, deals "
    "and tasks older than TRASH_RETENTION_DAYS, and the uploaded files of finished imports.",
)
def prune_command(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from app.db.types import utcnow
    from app.repositories import imports, webhooks
    from app.repositories.idempotency import IdempotencyRepository
    from app.repositories.trash import Purged
    from app.services import events, trash

    settings = load_settings()

    async def prune(
        session: AsyncSession, resources: Resources
    ) -> tuple[int, int, int, Purged, int]:
        now = utcnow()
        keys = await IdempotencyRepository(session).delete_expired(now)
        pruned_events = await events.prune(session, settings.EVENTS_RETENTION_DAYS, now)
        cutoff = now - timedelta(days=settings.EVENTS_RETENTION_DAYS)
        deliveries = await webhooks.prune_deliveries(session, cutoff)
        return (
            keys,
            pruned_events,
            deliveries,
            await trash.purge(session, settings.TRASH_RETENTION_DAYS, now),
            await imports.prune_files(session),
        )

    keys, pruned_events, pruned_deliveries, purged, import_files = asyncio.run(
        _with_session(settings, prune)
    )
    days = settings.EVENTS_RETENTION_DAYS
    logger.info("deleted %d expired Idempotency-Key answer(s)", keys)
    logger.info("deleted %d event(s) older than %d day(s)", pruned_events, days)
    logger.info(
        "deleted %d settled webhook delivery(ies) older than %d day(s)", pruned_deliveries, days
    )
    print(f"idempotency_keys_deleted={keys}")
    print(f"events_deleted={pruned_events}")
    logger.info(
        "purged from the trash after %d day(s): %d contact(s), %d deal(s), %d task(s)",
        settings.TRASH_RETENTION_DAYS,
        purged.contacts,
        purged.deals,
        purged.tasks,
    )
    print(f"webhook_deliveries_deleted={pruned_deliveries}")
    print(f"trash_contacts_purged={purged.contacts}")
    print(f"trash_deals_purged={purged.deals}")
    print(f"trash_tasks_purged={purged.tasks}")
    print(f"import_files_deleted={import_files}")
    return 0


# --- import -------------------------------------------------------------------------------------


def _progress_line(job: Any) -> str:
    total = max(job.rows_total, 1)
    width = 30
    filled = min(width, width * job.rows_done // total)
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {job.rows_done}/{job.rows_total} rows "
        f"{job.status}: {job.created} created, {job.updated} updated, {job.skipped} skipped, "
        f"{job.failed} failed"
    )


async def run_import(
    settings: Settings,
    path: Path,
    content: bytes,
    organization_id: int,
    kind: str,
    *,
    dry_run: bool,
    on_conflict: str,
    mapping: str | None,
) -> Any:
    """Queue the file as the organization's owner would (`POST /imports`), then work on it
    here until it is done, showing progress; a `minicrm worker` that took it first does the
    work instead, and this only shows its progress."""
    from app.core.errors import AppError
    from app.core.tenancy import TenantContext
    from app.db.session import create_engine, create_session_factory
    from app.jobs.imports import ImportRunner
    from app.jobs.webhooks import worker_name
    from app.models import Import, Membership, Role
    from app.schemas.imports import ImportKind, ImportStatus, OnConflict
    from app.services.imports import ImportService, Upload

    if len(content) > settings.IMPORT_MAX_BYTES:
        raise CliError(f"{path} is larger than IMPORT_MAX_BYTES ({settings.IMPORT_MAX_BYTES})")
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    interactive = sys.stderr.isatty()
    try:
        async with factory() as session:
            owner_id = await session.scalar(
                select(Membership.user_id).where(
                    Membership.organization_id == organization_id, Membership.role == Role.OWNER
                )
            )
            if owner_id is None:
                raise CliError(f"there is no organization {organization_id}", exit_code=2)
            ctx = TenantContext(user_id=owner_id, organization_id=organization_id, role=Role.OWNER)
            upload = Upload(
                content=content,
                filename=path.name,
                content_type=None,
                kind=ImportKind(kind),
                mapping=mapping,
                dry_run=dry_run,
                on_conflict=OnConflict(on_conflict),
            )
            try:
                job = await ImportService(session, ctx).create(upload)
            except AppError as exc:
                raise CliError(f"{path} cannot be imported: {exc.detail}") from None
            await session.commit()
            import_id = job.id
        logger.info("import %d queued: %d rows", import_id, job.rows_total)
        runner = ImportRunner(factory, settings, name=f"cli:{worker_name()}", slice_seconds=0.5)
        shown = 0.0
        while True:
            worked = await runner.run_once(import_id)
            async with factory() as session:
                current = await session.scalar(select(Import).where(Import.id == import_id))
            if current is None:
                raise CliError(f"import {import_id} is gone (its organization was deleted?)")
            finished = ImportStatus(current.status).finished
            line = _progress_line(current)
            if interactive:
                print(f"\r{line}", end="\n" if finished else "", file=sys.stderr)
            elif finished or time.monotonic() - shown >= 5:
                print(line, file=sys.stderr)
                shown = time.monotonic()
            if finished:
                return current
            if not worked:
                await asyncio.sleep(0.5)  # a worker has it: follow its progress
    finally:
        await engine.dispose()


@command(
    "import",
    "Import contacts or deals from a CSV or JSON Lines file into an organization, as its "
    "owner, and show the progress until it is done.",
    argument("file", type=Path, help="a .csv, .jsonl or .ndjson file"),
    argument("--org", type=_positive_int, required=True, metavar="ID", help="organization id"),
    argument("--kind", choices=("contacts", "deals"), required=True),
    argument("--dry-run", action="store_true", help="check every row, write nothing"),
    argument(
        "--on-conflict",
        choices=("skip", "update"),
        default="skip",
        help="a contact whose email exists: leave it (default) or update it",
    ),
    argument("--mapping", metavar="JSON", help='file column -> field, e.g. {"E-mail": "email"}'),
)
def import_command(args: argparse.Namespace) -> int:
    from app.services.imports import FIRST_ERRORS

    settings = load_settings()
    try:
        content = args.file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}", exit_code=2) from None
    check_database(settings)
    job = asyncio.run(
        run_import(
            settings,
            args.file,
            content,
            args.org,
            args.kind,
            dry_run=args.dry_run,
            on_conflict=args.on_conflict,
            mapping=args.mapping,
        )
    )
    asyncio.run(_print_import_errors(settings, job.id, FIRST_ERRORS))
    print(f"import_id={job.id}")
    print(f"status={job.status}")
    for counter in ("rows_total", "rows_done", "created", "updated", "skipped", "failed"):
        print(f"{counter}={getattr(job, counter)}")
    if job.error:
        logger.error("the import failed: %s", job.error)
    return 0 if job.status == "succeeded" else 1


async def _print_import_errors(settings: Settings, import_id: int, limit: int) -> None:
    from app.db.session import create_engine, create_session_factory
    from app.models import ImportRowError

    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            errors = await session.scalars(
                select(ImportRowError)
                .where(ImportRowError.import_id == import_id)
                .order_by(ImportRowError.row, ImportRowError.id)
                .limit(limit)
            )
            for error in errors:
                column = f" column {error.column!r}" if error.column else ""
                logger.warning("row %d%s: %s %s", error.row, column, error.code, error.message)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
