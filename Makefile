# Two commands set everything up: `make demo` runs the system, `make test` runs every test (docs/testing.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MPY_NODE := tools/micropython/node_modules/@micropython/micropython-webassembly-pyscript/package.json
AZURITE_NODE := tools/azurite/node_modules/azurite/package.json

# The quick half of the suite: no slow, browser or MicroPython tests (markers in pyproject.toml; docs/testing.md).
FAST_MARKERS := not slow and not browser and not micropython
# Two pytest-xdist workers: 768 tests in 114 s on a 2-core machine (2026-12-08; 758 in 85 s on a quieter one the day
# before); the budget is 90 s.
FAST_WORKERS ?= 2

.PHONY: demo test test-fast test-setup lint bench install clean-data help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(MPY_NODE): tools/micropython/package.json | test-setup
	cd tools/micropython && npm install --no-audit --no-fund --silent
	touch $@

$(AZURITE_NODE): tools/azurite/package.json
	cd tools/azurite && npm install --no-audit --no-fund --silent
	touch $@

install: $(STAMP) $(MPY_NODE) $(AZURITE_NODE)  ## create .venv and install everything

demo: $(STAMP)  ## start broker (embedded unless THERMOLOG_MQTT_URL is set), 3 simulated thermostats, ingest, app
	$(BIN)/thermolog demo

test-setup:  ## install the system packages the tests need (apt-get, as root) and start Mosquitto on 127.0.0.1:1883
	tools/test_setup.sh

test: test-setup $(STAMP) $(MPY_NODE) $(AZURITE_NODE)  ## set-up, ruff, then every test
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: test-setup $(STAMP)  ## the quick half: not slow, browser or micropython, on two workers (docs/testing.md)
	$(BIN)/pytest -q -n $(FAST_WORKERS) -m "$(FAST_MARKERS)"

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

bench: $(STAMP)  ## run the benchmarks and write docs/performance.md
	$(BIN)/python -m bench

clean-data:  ## delete the local database and journal
	rm -rf data/thermolog.duckdb data/thermolog.duckdb.wal data/thermolog.journal data/journal
