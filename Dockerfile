# syntax=docker/dockerfile:1
# Mini-CRM API. `docker compose up --build` runs it with PostgreSQL and Redis (docker-compose.yml);
# on its own: docker run -p 8000:8000 -e DATABASE_URL=postgresql+asyncpg://... <image>

# --- builder: a virtualenv with the runtime dependencies (no dev extra) and the project ----------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
WORKDIR /app

# Dependencies first, from pyproject.toml alone (README.md is named in its metadata): a code
# change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# The project itself, linked to /app/app (the final stage puts the code at that same path): the
# `minicrm` command is installed, and the code finds alembic.ini and alembic/ beside it in /app.
COPY app ./app
RUN pip install --no-cache-dir --no-deps --editable .

# --- runtime --------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="mini-crm" \
      org.opencontainers.image.description="Multi-tenant CRM API (FastAPI, PostgreSQL)" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PORT=8000

RUN groupadd --system --gid 10001 minicrm \
    && useradd --system --uid 10001 --gid minicrm --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin minicrm

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
COPY --chmod=0755 docker/entrypoint.sh ./docker/entrypoint.sh

# A numeric user (the `minicrm` one above), so runtimes can verify it is not root. The code stays
# owned by root: the service cannot rewrite itself.
USER 10001:10001
EXPOSE 8000

# Liveness only (`/health` touches no dependency); slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
