# Every target CI runs is here. `make run` and `make test` set themselves up on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Test processes (pytest-xdist): `auto` is one per core; TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
# Which tests `make test` runs (a pytest -m expression); empty runs everything.
TEST_MARKERS ?= not slow

.PHONY: run test test-slow test-all lint format typecheck migrate migration-check check bench clean help

help:
	@echo "make run         start the API on http://$(HOST):$(PORT) (SQLite by default, migrations applied)"
	@echo "make test        the test suite in parallel, without the slow suites (SQLite by default;"
	@echo "                 see README for PostgreSQL). One file: make test PYTEST_ARGS=tests/test_deals.py"
	@echo "make test-slow   only the slow suites (API fuzzing, browser)"
	@echo "make test-all    every test, slow ones included (what CI runs, in two steps)"
	@echo "make check       lint, format check, mypy --strict, alembic check"
	@echo "make bench       benchmarks against the local PostgreSQL (see docs/benchmarks.md)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# `minicrm serve` migrates first (saying in one line what is wrong with the database, if
# anything), then serves with the settings' server options (keep-alive timeout).
run: $(VENV)/.installed
	$(BIN)/minicrm serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(BIN)/pytest -n $(TEST_WORKERS) -m "$(TEST_MARKERS)" $(PYTEST_ARGS)

test-slow:
	$(MAKE) test TEST_MARKERS=slow

test-all:
	$(MAKE) test TEST_MARKERS=

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict app

migrate: $(VENV)/.installed
	$(BIN)/minicrm migrate

migration-check: $(VENV)/.installed
	$(BIN)/alembic upgrade head
	$(BIN)/alembic check

check: lint typecheck migration-check

bench: $(VENV)/.installed
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.webhooks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* htmlcov mini_crm.db mini_crm.db-wal mini_crm.db-shm
