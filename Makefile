# Deepfield: every command lives here. Quick start on a fresh clone: `make all`, then `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
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
WORKERS ?= 1
WORKERS_ARG := $(if $(filter-out 1,$(WORKERS)),--workers $(WORKERS),)

# The apps come from the one registry, shared/apps.py (standard library only, so the system
# Python reads it before the virtual environment exists).
APP_NAMES := $(shell $(PYTHON) -m shared.apps names)

.PHONY: all setup test test-all lint format bench quality gpu-check tensorboard clean $(APP_NAMES)

all: setup $(APP_NAMES)

# Create the virtual environment and install the project with its dev tools (once per change
# of pyproject.toml or the constraints), at the versions CI tested (.ci/constraints.txt).
CONSTRAINTS := .ci/constraints.txt
setup: $(STAMP)
$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -c $(CONSTRAINTS)
	touch $(STAMP)

# The test suite without the slow marker (what CI runs); test-all includes slow tests. Tests run
# in up to 4 processes (one per core): TensorFlow trains each tiny model on about one core; the
# tests that share an app's trained run stay on one process (tests/conftest.py), so it trains once.
PYTEST := $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup
test: setup
	$(PYTEST) -m "not slow"

test-all: setup
	$(PYTEST)

lint: setup
	$(VENV)/bin/ruff check apps shared tests
	$(VENV)/bin/ruff format --check apps shared tests

format: setup
	$(VENV)/bin/ruff format apps shared tests
	$(VENV)/bin/ruff check --fix apps shared tests

bench: setup
	$(PY) -m shared.bench --output runs/bench/bench.json

# Every app through its own steps on the real public datasets (../shared/realdata, or DATA=path
# or DEEPFIELD_REALDATA): each model beside its baselines, measured in the same run; report in
# runs/quality/quality.{json,md}. APPS=nlp,fraud runs a subset; QUICK=1 caps each training.
DATA ?=
APPS ?=
QUICK ?=
# The benchmark-only extras (pyproject's `bench`); where they cannot be installed (no index),
# their rows say so and the rest runs.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml $(STAMP)
	-$(PY) -m pip install --quiet -e ".[bench]" -c $(CONSTRAINTS) && touch $(BENCH_STAMP)

quality: setup $(BENCH_STAMP)
	$(PY) -m shared.quality $(if $(DATA),--data $(DATA),) $(if $(APPS),--apps $(APPS),) $(if $(filter 1 true yes,$(QUICK)),--quick,)

# Each app's smoke config on the GPU with and without mixed precision and XLA (JSON report);
# says so and exits 0 on a machine without a GPU.
gpu-check: setup
	$(PY) -m shared.gpu_check --output runs/gpu_check.json

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

# --- per-app steps: make <app>-prepare | -train [WORKERS=N] | -evaluate | -export | -score INPUT=...
# | -tune | -serve
%-prepare: setup
	$(PY) -m shared.cli $* prepare $(CONFIG_ARG) $(SET_ARGS)

%-train: setup
	$(PY) -m shared.cli $* train $(CONFIG_ARG) $(SET_ARGS) $(WORKERS_ARG)

%-evaluate: setup
	$(PY) -m shared.cli $* evaluate $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG)

%-export: setup
	$(PY) -m shared.cli $* export $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) $(OUTPUT_ARG)

%-score: setup
	@test -n "$(INPUT)" || { echo "usage: make $*-score INPUT=path [MODEL=runs/$*/<run>] [OUTPUT=out.csv]"; exit 2; }
	$(PY) -m shared.cli $* score $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) --input $(INPUT) $(OUTPUT_ARG)

%-recommend: setup
	@test -n "$(USERS)" || { echo "usage: make $*-recommend USERS=ids.txt|id1,id2 [MODEL=runs/$*/<run>] [OUTPUT=out.csv]"; exit 2; }
	$(PY) -m shared.cli $* recommend $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) --users $(USERS) $(OUTPUT_ARG)

# Rating models cross-validated over the folds of a ratings folder (ml-100k's u1..u5.base/.test
# pairs, else data.cv_folds seeded folds of one ratings file): each model's mean and spread of
# RMSE, in the run's cv.json and cv.md. E.g. make recsys-cv CONFIG=apps/recsys/configs/movielens.yaml
# SET="data.path=../shared/realdata/recsys/ml-latest-small"
%-cv: setup
	$(PY) -m shared.cli $* cv $(CONFIG_ARG) $(SET_ARGS)

# Hyper-parameter search over the config's tune.space (KerasTuner; each trial a run):
# make vision-tune TRIALS=20 MINUTES=60. Needs the `tune` extra (pip install -e ".[tune]").
TRIALS ?= 10
MINUTES ?=
%-tune: setup
	$(PY) -m shared.cli $* tune $(CONFIG_ARG) $(SET_ARGS) --trials $(TRIALS) $(if $(MINUTES),--max-minutes $(MINUTES),)

# Keep a run's model loaded and answer HTTP scoring requests: make fraud-serve [MODEL=...]
# [PORT=8080]. Needs the `serve` extra (pip install -e ".[serve]").
PORT ?= 8080
%-serve: setup
	$(PY) -m shared.cli $* serve $(CONFIG_ARG) $(SET_ARGS) $(RUN_ARG) --port $(PORT)

# --- whole pipelines on the sample data: prepare, train, then evaluate and the app's sample
# scoring commands (its `demo` entry in shared/apps.py) with the run that train made, passed
# along by path (never `latest`, which a run finishing elsewhere may have moved) -------------------
$(APP_NAMES): %: setup
	$(PY) -m shared.apps pipeline $* $(CONFIG_ARG) $(SET_ARGS)

clean:
	rm -rf runs datasets/*/generated .pytest_cache .ruff_cache
