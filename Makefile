# make reproduce  - (creates .venv if missing) make compute, then make render
# make plan       - each cell of the run grid as done / missing / stale / failed, with the time left
# make compute    - runs the missing cells (EXECUTOR=local); make render - notebooks from the records
# make test       - (creates .venv if missing) pytest, then nbval on the committed notebooks
# make lab        - JupyterLab on notebooks/
.DEFAULT_GOAL := help
SHELL := /bin/bash

PROFILE ?= smoke
DATA_ROOT ?=
DEVICE ?= auto
VENV ?= .venv
# Set PYTHON to an existing environment's interpreter (e.g. conda's) to skip the venv set-up.
PYTHON ?= $(VENV)/bin/python
BOOTSTRAP_PYTHON ?= python3
SHARED ?= ../shared/data

ifeq ($(PYTHON),$(VENV)/bin/python)
SETUP := $(VENV)/.installed
else
SETUP :=
endif

export TQDM_DISABLE = 1
export PYTHONHASHSEED = 0

.PHONY: help env reproduce plan compute render test test-unit test-notebooks lab lint clean-cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) DATA_ROOT=$(DATA_ROOT) DEVICE=$(DEVICE) PYTHON=$(PYTHON)"

$(VENV)/.installed: pyproject.toml
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1 -e ".[dev,weights,ray,slurm,peer]"
	touch $@

env: $(SETUP) ## create the virtual environment (.venv) if missing

GRID_ARGS = --profile $(PROFILE) --data-root "$(DATA_ROOT)" $(if $(PAPER),--paper $(PAPER)) \
	$(if $(TABLE),--table $(TABLE)) $(if $(SEEDS),--seeds $(SEEDS))
EXECUTOR ?= local
# ray / slurm options, e.g. COMPUTE_ARGS="--gpus-per-cell 0.5" or "--partition gpu --mem 32G"
COMPUTE_ARGS ?=

reproduce: compute render ## compute the missing cells, then render results/$(PROFILE)/

plan: $(SETUP) ## each cell of the grid as done/missing/stale/failed (PROFILE, PAPER, TABLE, SEEDS)
	$(PYTHON) -m repro plan $(GRID_ARGS)

compute: $(SETUP) ## run the missing cells (EXECUTOR=local, PROFILE, PAPER, TABLE, SEEDS, DEVICE)
	$(PYTHON) -m repro compute $(GRID_ARGS) --executor $(EXECUTOR) --device $(DEVICE) $(COMPUTE_ARGS)

render: $(SETUP) ## execute the notebooks from the records only (NOTEBOOKS="05_matrix": some of them)
	REPRO_READONLY=1 $(PYTHON) -m repro reproduce --profile $(PROFILE) --data-root "$(DATA_ROOT)" \
	  --device $(DEVICE) $(NOTEBOOKS)

test: test-unit test-notebooks ## unit tests, then nbval on the committed executed notebooks

test-unit: $(SETUP)
	$(PYTHON) -m pytest tests -q

# nbval re-executes each committed notebook with REPRO_READONLY=1 (tables are rebuilt from the
# committed run records, nothing is recomputed) and compares the cells marked NBVAL_CHECK_OUTPUT.
# Outputs it writes go to a throw-away staging folder, never into results/.
NOTEBOOKS_TO_CHECK = $(wildcard results/smoke/*.ipynb) \
	$(if $(wildcard $(SHARED)),$(wildcard results/real_subset/*.ipynb))
test-notebooks: $(SETUP)
	@if [ ! -d "$(SHARED)" ]; then echo "nbval: $(SHARED) absent, skipping results/real_subset"; fi
	stage=$$(mktemp -d) && REPRO_READONLY=1 REPRO_STAGE_DIR=$$stage \
	  $(PYTHON) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS_TO_CHECK); \
	  rc=$$?; rm -rf $$stage; exit $$rc

lab: $(SETUP) ## JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks

lint: $(SETUP) ## ruff
	$(PYTHON) -m ruff check repro tests

clean-cache: ## delete checkpoints and generated synthetic data (.cache/)
	rm -rf .cache
