# `make run` serves, `make test` tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-ts test-pg soak lint bench bench-check dist test-dist test-deploy clean

run: $(VENV)/.installed-run
	$(BIN)/botstate init-db
	$(BIN)/botstate serve

# pytest keeps each test module's rewritten bytecode (in the ignored __pycache__ folders) even
# where PYTHONDONTWRITEBYTECODE is set: otherwise every worker compiles them all again.
PYTEST := env PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest

# The server's tests and the Python client's (clients/python/tests), then the TypeScript client's.
test: $(VENV)/.installed-dev
	$(PYTEST)
	$(MAKE) --no-print-directory test-ts

# The TypeScript client (clients/typescript): its build, type checks against the server's OpenAPI
# document, and its tests against a real server from .venv. Without npm it is skipped, saying so,
# except in CI.
CLIENT_TS := clients/typescript
test-ts: $(VENV)/.installed-dev
	@if ! command -v npm >/dev/null; then \
		if [ -n "$$CI" ]; then echo "test-ts: npm is needed (Node 18 or newer)" >&2; exit 1; fi; \
		echo "test-ts: skipped, npm is not installed (Node 18 or newer runs the TypeScript client's tests)"; \
	else \
		$(MAKE) --no-print-directory $(CLIENT_TS)/node_modules/.installed && \
		cd $(CLIENT_TS) && BOTSTATE_COMMAND=$(CURDIR)/$(BIN)/botstate npm test; \
	fi

# Its pinned build and test tools, from the committed lockfile.
$(CLIENT_TS)/node_modules/.installed: $(CLIENT_TS)/package-lock.json $(CLIENT_TS)/package.json
	cd $(CLIENT_TS) && npm ci --no-audit --no-fund
	touch $@

# Every test on both backends: SQLite, and PostgreSQL on a throwaway server that
# scripts/with-postgres starts (installing Debian's postgresql when run as root) and stops.
test-pg: $(VENV)/.installed-dev
	scripts/with-postgres $(PYTEST)

# ruff's rules and formatting (configured in pyproject.toml) over every Python file.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The long runs: the crash test many more times than `make test` runs it (about a second
# per kill), and many more generated requests against the OpenAPI document.
SOAK_ROUNDS ?= 60
OPENAPI_EXAMPLES ?= 300
soak: $(VENV)/.installed-dev
	SOAK_ROUNDS=$(SOAK_ROUNDS) OPENAPI_EXAMPLES=$(OPENAPI_EXAMPLES) $(PYTEST) tests/test_crash.py tests/test_openapi.py

# `make bench` still runs: a one-second pass over every case, both columns, no timing judged.
# As root it installs wrk when missing; without wrk the check is skipped, saying why.
bench-check: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	BENCH_CHECK=1 scripts/with-postgres --optional $(PYTEST) -n 0 tests/test_bench.py

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "botstate needs Python 3.11 or newer (found: $$($(PYTHON) --version)); set PYTHON=python3.X" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The pinned dependencies, then botstate itself, editable: .venv/bin/botstate runs this checkout.
$(VENV)/.installed-run: requirements.txt constraints.txt pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info

# The single file: botstate and every dependency (binary wheels for each Python and CPU that
# scripts/build_dist.py names) in one zipapp, run by a plain `python3 dist/botstate-VERSION.pyz ...`.
VERSION := $(shell sed -n 's/^VERSION = "\(.*\)"/\1/p' version.py)
DIST := dist/botstate-$(VERSION).pyz
dist: $(DIST)

$(DIST): $(VENV)/.installed-dev scripts/build_dist.py version.py pyproject.toml requirements.txt constraints.txt $(wildcard *.py backends/*.py cli/*.py)
	@mkdir -p dist
	$(BIN)/python scripts/build_dist.py $@.partial
	mv $@.partial $@
	@echo "built $@"

# Builds the single file, then runs it as a user would: the system python3, no venv, an empty HOME.
test-dist: $(DIST)
	DIST_CHECK=$(CURDIR)/$(DIST) $(PYTEST) -n 0 tests/test_dist.py

# deploy/ for real: the nginx site over TLS in front of a server, and systemd's check of the unit
# with the single file in it. As root it installs nginx and openssl when missing; these tests,
# skipped elsewhere when a program is missing, fail here instead.
test-deploy: $(DIST)
	@command -v nginx >/dev/null && command -v openssl >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light openssl; }
	DEPLOY_CHECK=1 DIST_CHECK=$(CURDIR)/$(DIST) $(PYTEST) -n 0 tests/test_deploy.py

# The PostgreSQL column needs a server: without one, the table says why it is empty.
bench: $(VENV)/.installed-run
	scripts/with-postgres --optional $(BIN)/python bench/run.py $(BENCH_ARGS)
