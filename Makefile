# Two commands on a fresh machine:  `make run` (the default job) and `make test` (the tests).
# The venv is created once and reused; it is refreshed when pyproject.toml changes.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint typecheck mlproject clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# tensorrt-stubs declares the real tensorrt as a dependency, which is not installable here
	$(BIN)/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

## the default job: DHA on scikit-learn's digits, on the CPU, registry in ./mlflow.db;
## its runs land in the experiment dha-<space>-<dataset> (override: make run EXPERIMENT=name)
_param = $(patsubst $(1)=%,%,$(filter $(1)=%,$(P)))
EXPERIMENT ?= dha-$(or $(call _param,space),mobilenet)-$(or $(call _param,dataset),digits)
run: $(STAMP)
	$(BIN)/mlflow run . --env-manager local --experiment-name $(EXPERIMENT) $(if $(P),$(foreach p,$(P),-P $(p)))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## the TensorRT code against tensorrt-stubs (the test mends two defects of the stubs first)
typecheck: $(STAMP)
	$(BIN)/pytest -q tests/test_export_tensorrt.py -k mypy

## everything CI runs: lint, then all tests (e2e included; the mypy check is one of them)
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

## quick loop while developing: no end-to-end runs
test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

## regenerate MLproject (and its Kubernetes variant) from pipeline/params.py
mlproject: $(STAMP)
	$(BIN)/python -c "from pipeline.params import mlproject_yaml; print(mlproject_yaml(), end='')" > MLproject
	$(BIN)/python deploy/kubernetes/sync_mlproject.py

clean:
	rm -rf mlruns mlartifacts outputs .pytest_cache .ruff_cache .mypy_cache
