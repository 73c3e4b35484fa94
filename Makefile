# sunblend developer entry points. Every target sets up the virtualenv it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/follow-the-sun-india-uk.yaml

.PHONY: demo demo-down plan test crd bench bench-reconcile bench-simulate bench-agent clean prometheus cluster cluster-build cluster-down

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing sunblend with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: the main job: local control plane, chart, kwok GPU nodes, operator, India/UK pool
demo: $(STAMP)
	bash hack/demo.sh up

## demo-down: stop the demo's operator and its local control plane
demo-down:
	bash hack/demo.sh down

## plan: plan the example India/UK pool and print the plan (the README's main job for now)
plan: $(STAMP)
	$(BIN)/sunblend plan $(EXAMPLE)

## test: every test: lint, types, layer contracts, CRD drift, unit, property and e2e tests
## (e2e runs against a real kube-apiserver started from hack/cluster.sh; the first build of its
## binaries takes a while and is cached outside the repository)
test: $(STAMP) cluster-build prometheus
	$(BIN)/pytest

## prometheus: Debian's Prometheus server, which the e2e tests start on 127.0.0.1 (installed only when missing)
prometheus:
	@test -x /usr/bin/prometheus || (apt-get update && apt-get install -y --no-install-recommends prometheus)

## cluster-build: build etcd, kube-apiserver, controller-manager, scheduler, kwok and helm once
cluster-build:
	bash hack/cluster.sh build

## cluster: start the local control plane (idempotent); prints the KUBECONFIG to export
cluster: cluster-build
	bash hack/cluster.sh up

## cluster-down: stop the local control plane and every process it started
cluster-down:
	bash hack/cluster.sh down

## crd: regenerate the CRD from the models into crds/
crd: $(STAMP)
	$(BIN)/sunblend crd -f crds/inferencepools.sunblend.dev.yaml
	cp crds/inferencepools.sunblend.dev.yaml charts/sunblend/crds/

## bench: planner build and solve time as pools grow; writes bench/results/planner.json
bench: $(STAMP)
	$(BIN)/python bench/planner.py --out bench/results/planner.json

## bench-simulate: every policy replayed on the real traces in ../shared/data; writes bench/results/simulate.json
bench-simulate: $(STAMP)
	$(BIN)/python bench/simulate.py --out bench/results/simulate.json --png docs/simulation.png

## bench-agent: the GPU agent's CPU overhead at 1 s sampling (fake NVML); writes bench/results/agent.json
bench-agent: $(STAMP)
	$(BIN)/python bench/agent.py --out bench/results/agent.json

## bench-reconcile: apply-to-Ready latency and operator memory with 1, 100 and 1,000 pools
bench-reconcile: $(STAMP) cluster-build
	$(BIN)/python bench/reconcile.py --out bench/results/reconcile.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
