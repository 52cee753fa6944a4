# Deepfield: every command lives here. Quick start on a fresh clone: `make all`, then `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

CONFIG ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)
SET ?=
SET_ARGS := $(foreach s,$(SET),--set $(s))
MODEL ?=
RUN_ARG := $(if $(MODEL),--run $(MODEL),)
OUTPUT ?=
OUTPUT_ARG := $(if $(OUTPUT),--output $(OUTPUT),)
INPUT ?=

.PHONY: all setup test test-all lint format bench tensorboard clean \
	fraud fraud-prepare fraud-train fraud-evaluate fraud-score fraud-export

all: setup fraud

# Create the virtual environment and install the project with its dev tools (once per change
# of pyproject.toml).
setup: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The test suite without the slow marker (what CI runs); test-all includes slow tests.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check apps shared tests
	$(VENV)/bin/ruff format --check apps shared tests

format: setup
	$(VENV)/bin/ruff format apps shared tests
	$(VENV)/bin/ruff check --fix apps shared tests

bench: setup
	$(PY) -m shared.bench --output runs/bench/bench.json

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

# --- fraud -------------------------------------------------------------------------------
FRAUD := $(PY) -m apps.fraud

fraud: fraud-prepare fraud-train fraud-evaluate
	$(FRAUD) score $(CONFIG_ARG) $(SET_ARGS) --input datasets/fraud/score_sample.csv --output runs/fraud/latest/scores.csv

fraud-prepare: setup
	$(FRAUD) prepare $(CONFIG_ARG) $(SET_ARGS)

fraud-train: setup
	$(FRAUD) train $(CONFIG_ARG) $(SET_ARGS)

fraud-evaluate: setup
	$(FRAUD) evaluate $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG)

fraud-score: setup
	@test -n "$(INPUT)" || { echo "usage: make fraud-score INPUT=file.csv [MODEL=runs/fraud/<run>] [OUTPUT=out.csv]"; exit 2; }
	$(FRAUD) score $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) --input $(INPUT) $(OUTPUT_ARG)

fraud-export: setup
	$(FRAUD) export $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) $(OUTPUT_ARG)

clean:
	rm -rf runs datasets/*/generated .pytest_cache .ruff_cache
