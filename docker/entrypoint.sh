#!/usr/bin/env bash
# Container entrypoint: wait for the database, apply the migrations, then serve the API.
#
# Given arguments, it runs them instead of the server, after the same wait and migrations, so
# one-off commands find the schema in place: `docker compose run --rm app minicrm create-user ...`
# (for a shell that must not wait for the database: `docker compose run --entrypoint bash app`).
#
# Environment (besides the application's own settings, DATABASE_URL first):
#   DB_WAIT_TIMEOUT      seconds to wait for the database before giving up (default 60)
#   PORT                 port to listen on (default 8000)
#   WEB_CONCURRENCY      uvicorn worker processes (default: the number of CPUs, from nproc)
#   FORWARDED_ALLOW_IPS  proxies trusted for X-Forwarded-For/-Proto (uvicorn's default: 127.0.0.1)
#   KEEPALIVE_TIMEOUT_SECONDS  seconds an idle keep-alive connection stays open (default 75: longer
#                        than a load balancer's, so the client side always closes first)
# With several workers and no REDIS_URL a warning says the login throttle is per process; with
# several workers PROMETHEUS_MULTIPROC_DIR, unless set, gets a fresh directory.
set -euo pipefail

log() { printf 'entrypoint: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The project root (/app in the image), wherever this script is started from.
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

db_wait_timeout=${DB_WAIT_TIMEOUT:-60}
[[ $db_wait_timeout =~ ^[0-9]+$ ]] ||
  die "DB_WAIT_TIMEOUT must be a whole number of seconds, not '$db_wait_timeout'"

log "waiting up to ${db_wait_timeout}s for the database"
status=0
python -m app.cli wait-db --timeout "$db_wait_timeout" || status=$?
if ((status == 1)); then
  die "timed out: the database did not answer within ${db_wait_timeout}s (DB_WAIT_TIMEOUT);" \
    "check DATABASE_URL and that the database is up"
elif ((status != 0)); then
  die "could not check the database (wait-db exited with status ${status})"
fi

log "applying migrations"
# `minicrm migrate` says in one line what is wrong with the database (missing, refused login).
python -m app.cli migrate

if (($# > 0)); then
  log "running: $1 (arguments not shown: they may hold secrets)"
  exec "$@"
fi

port=${PORT:-8000}
workers=${WEB_CONCURRENCY:-$(nproc)}
keepalive=${KEEPALIVE_TIMEOUT_SECONDS:-75}
[[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "WEB_CONCURRENCY must be a positive number, not '$workers'"
[[ $keepalive =~ ^[1-9][0-9]*$ ]] ||
  die "KEEPALIVE_TIMEOUT_SECONDS must be a positive whole number, not '$keepalive'"

if ((workers > 1)) && [[ -z ${REDIS_URL:-} ]]; then
  # Analytics stay correct per process (cache entries carry the data version), but each worker
  # counts failed logins on its own.
  log "warning: ${workers} workers and no REDIS_URL: the analytics cache and the login-throttle" \
    "counts are per worker; set REDIS_URL to share them"
fi
if ((workers > 1)) && [[ -z ${PROMETHEUS_MULTIPROC_DIR:-} ]]; then
  # One empty directory shared by the workers, so /metrics adds them all up (app/core/metrics.py).
  PROMETHEUS_MULTIPROC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/minicrm-metrics.XXXXXX")
  export PROMETHEUS_MULTIPROC_DIR
fi

log "starting the API on 0.0.0.0:${port} with ${workers} worker(s)"
exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port "$port" \
  --workers "$workers" --proxy-headers --timeout-keep-alive "$keepalive"
