# Two commands set everything up: `make demo` runs the system, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MPY_NODE := tools/micropython/node_modules/@micropython/micropython-webassembly-pyscript/package.json

.PHONY: demo test lint bench install clean-data help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(MPY_NODE): tools/micropython/package.json
	cd tools/micropython && npm install --no-audit --no-fund --silent
	touch $@

install: $(STAMP) $(MPY_NODE)  ## create .venv and install everything

demo: $(STAMP)  ## start broker (embedded unless THERMOLOG_MQTT_URL is set), 3 simulated thermostats, ingest, app
	$(BIN)/thermolog demo

test: $(STAMP) $(MPY_NODE)  ## run every test
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

bench: $(STAMP)  ## run the benchmarks and write docs/performance.md
	$(BIN)/python -m bench

clean-data:  ## delete the local database and journal
	rm -rf data/thermolog.duckdb data/thermolog.duckdb.wal data/thermolog.journal data/journal
