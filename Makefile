# sunblend developer entry points. Every target sets up the virtualenv it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/follow-the-sun-india-uk.yaml

.PHONY: plan test unit lint crd bench clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing sunblend with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## plan: plan the example India/UK pool and print the plan (the README's main job for now)
plan: $(STAMP)
	$(BIN)/sunblend plan $(EXAMPLE)

## test: every test: lint, types, layer contracts, CRD drift, unit and property tests
test: $(STAMP)
	$(BIN)/pytest

## crd: regenerate the CRD from the models into crds/
crd: $(STAMP)
	$(BIN)/sunblend crd -f crds/inferencepools.sunblend.dev.yaml
	cp crds/inferencepools.sunblend.dev.yaml charts/sunblend/crds/

## bench: planner build and solve time as pools grow; writes bench/results/planner.json
bench: $(STAMP)
	$(BIN)/python bench/planner.py --out bench/results/planner.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
