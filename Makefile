# The two commands: `make run` and `make test`. Everything lives under .venv/ and .cbi_home/.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.cbi_home
export OMP_NUM_THREADS ?= 1
STAMP := $(VENV)/.installed

.PHONY: run test ui serve install lint clean home workers-up workers-down

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

home: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	@ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/dagster instance concurrency set gpu 1 >/dev/null 2>&1 || true

run: home
	$(BIN)/cbi run $(if $(MANIFEST),--manifest $(MANIFEST),)

test: $(STAMP)
	$(BIN)/ruff check cbi_platform cbi_platform_tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --durations=15

ui: home
	$(BIN)/dagster dev -w workspace.yaml

serve: $(STAMP)
	$(BIN)/cbi serve --host 127.0.0.1 --port 8000

# Local distributed execution (shared_data_job_celery): redis-server on 127.0.0.1:6379 and
# three celery workers (two on the default queue, one on `gpu`), each in its own process group
# with a pidfile (and log) in $(DAGSTER_HOME)/services/.
workers-up: home
	$(BIN)/python -m cbi_platform.workers up --dir $(DAGSTER_HOME)/services

workers-down:
	$(BIN)/python -m cbi_platform.workers down --dir $(DAGSTER_HOME)/services

lint: $(STAMP)
	$(BIN)/ruff check cbi_platform cbi_platform_tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(DAGSTER_HOME)
