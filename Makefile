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

.PHONY: all setup test test-all lint format bench quality gpu-check tensorboard clean fraud vision recsys medical nlp speech

all: setup fraud vision recsys medical nlp speech

# Create the virtual environment and install the project with its dev tools (once per change
# of pyproject.toml).
setup: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The test suite without the slow marker (what CI runs); test-all includes slow tests. Tests run
# in up to 4 processes (one per core): TensorFlow trains each tiny model on about one core.
PYTEST := $(PY) -m pytest -q -n auto --maxprocesses 4
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
quality: setup
	$(PY) -m shared.quality $(if $(DATA),--data $(DATA),) $(if $(APPS),--apps $(APPS),) $(if $(filter 1 true yes,$(QUICK)),--quick,)

# Each app's smoke config on the GPU with and without mixed precision and XLA (JSON report);
# says so and exits 0 on a machine without a GPU.
gpu-check: setup
	$(PY) -m shared.gpu_check --output runs/gpu_check.json

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

# --- per-app steps: make <app>-prepare | -train [WORKERS=N] | -evaluate | -export | -score INPUT=... -
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

# --- whole pipelines on the sample data ---------------------------------------------------------
fraud: fraud-prepare fraud-train fraud-evaluate
	$(PY) -m apps.fraud score $(CONFIG_ARG) $(SET_ARGS) --input datasets/fraud/score_sample.csv --output runs/fraud/latest/scores.csv

vision: vision-prepare vision-train vision-evaluate
	$(PY) -m apps.vision score $(CONFIG_ARG) $(SET_ARGS) --input datasets/vision/samples --output runs/vision/latest/scores.csv

recsys: recsys-prepare recsys-train recsys-evaluate
	$(PY) -m apps.recsys recommend $(CONFIG_ARG) $(SET_ARGS) --users datasets/recsys/users.txt --output runs/recsys/latest/recommendations.csv
	$(PY) -m apps.recsys score $(CONFIG_ARG) $(SET_ARGS) --input datasets/recsys/pairs.csv --output runs/recsys/latest/pair_scores.csv

medical: medical-prepare medical-train medical-evaluate
	$(PY) -m shared.cli medical score $(CONFIG_ARG) $(SET_ARGS) --input datasets/medical/samples --output runs/medical/latest/scores.csv

nlp: nlp-prepare nlp-train nlp-evaluate
	$(PY) -m shared.cli nlp score $(CONFIG_ARG) $(SET_ARGS) --input datasets/nlp/score_sample.csv --output runs/nlp/latest/scores.csv

speech: speech-prepare speech-train speech-evaluate
	$(PY) -m shared.cli speech score $(CONFIG_ARG) $(SET_ARGS) --input datasets/speech/samples --output runs/speech/latest/scores.csv

clean:
	rm -rf runs datasets/*/generated .pytest_cache .ruff_cache
