# `make run` serves, `make test` tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-pg soak lint bench clean

run: $(VENV)/.installed-run
	$(BIN)/flask init-db
	$(BIN)/python serve.py

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# Every test on both backends: SQLite, and PostgreSQL on a throwaway server that
# scripts/with-postgres starts (installing Debian's postgresql when run as root) and stops.
test-pg: $(VENV)/.installed-dev
	scripts/with-postgres $(BIN)/python -m pytest

# ruff's rules and formatting (configured in pyproject.toml) over every Python file.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The crash test, many more times than `make test` runs it (about a second per kill);
# in one process (-n 0): its one long test gains nothing from pytest-xdist's workers.
SOAK_ROUNDS ?= 60
soak: $(VENV)/.installed-dev
	SOAK_ROUNDS=$(SOAK_ROUNDS) $(BIN)/python -m pytest -n 0 tests/test_crash.py

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "botstate needs Python 3.11 or newer (found: $$($(PYTHON) --version)); set PYTHON=python3.X" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: requirements.txt $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache

# The PostgreSQL column needs a server: without one, the table says why it is empty.
bench: $(VENV)/.installed-run
	scripts/with-postgres --optional $(BIN)/python bench/run.py $(BENCH_ARGS)
