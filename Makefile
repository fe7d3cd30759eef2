# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/.dagster_home
# A range run plans each asset's days as one event, not one per day (see iterable_assets/cli/main.py).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS := true

PORT ?= 3000

.PHONY: demo test test-fast sim dev ui check recover status bench screenshots setup clean postgresql

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# The simulator (iterable_simulator) is left out of the wheel; this environment imports it from here.
	echo "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/iterable-assets-repository.pth"
	touch $(STAMP)

setup: $(STAMP)
	mkdir -p $(DAGSTER_HOME) && ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: setup  ## sync all 16 tables from the bundled simulator into data/warehouse.duckdb
	$(BIN)/python -m iterable_simulator.commands demo

LINTED := iterable_assets iterable_assets_tests iterable_simulator bench docs

# The Postgres tests start their own throwaway servers (iterable_assets_tests/postgres_server.py) from
# Debian's PostgreSQL binaries; not the cluster the package may start on port 5432, which is stopped.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq postgresql && \
	  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _ status _; do \
	    if [ "$$status" = online ]; then pg_ctlcluster "$$version" "$$cluster" stop; fi; \
	  done; \
	fi

test: setup postgresql  ## lint, then the whole test suite, slow end-to-end tests included
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m pytest -q

test-fast: setup postgresql  ## lint, then the fast tier: every module, two export streams for the 35 (under 3 minutes)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m pytest -q -m "not slow and not full"

sim: setup  ## the bundled simulator until Ctrl-C, its URL and key in .env meanwhile
	$(BIN)/python -m iterable_simulator.commands simulate

dev: setup  ## the bundled simulator plus the Dagster UI on http://localhost:$(PORT)
	$(BIN)/python -m iterable_simulator.commands dev --port $(PORT)

ui: setup  ## the Dagster UI on http://localhost:$(PORT), on the settings in .env (a real project, or `make sim`)
	$(BIN)/iterable-assets ui --port $(PORT)

check: setup  ## validate ITERABLE_API_KEY against ITERABLE_BASE_URL
	$(BIN)/iterable-assets check

recover: setup  ## free the pool slots of runs whose process was killed
	$(BIN)/iterable-assets recover

status: setup  ## one line per table: rows, days loaded and missing, freshness, checks
	$(BIN)/iterable-assets status

bench: setup  ## the benchmarks of bench/README.md (about 5 minutes)
	$(BIN)/python bench/benchmark.py ingest --repeat 5
	$(BIN)/python bench/benchmark.py ingest --records 2000000 --repeat 3
	$(BIN)/python bench/benchmark.py pages --repeat 5
	$(BIN)/python bench/benchmark.py budget --repeat 3

screenshots: setup  ## re-take docs/*.png of the Dagster UI (installs Debian's chromium if missing)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) .dagster_home data .pytest_cache
