# sunblend developer entry points. Every target sets up the virtualenv it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/follow-the-sun-india-uk.yaml
IMAGE_ARCHIVE ?= out/sunblend-image.oci.tar

.PHONY: demo demo-down plan test crd bench bench-reconcile bench-simulate bench-agent clean prometheus cluster cluster-build cluster-down

# Every dependency, transitive ones included, is pinned with its hashes in $(LOCK), for Python 3.11+
# on any platform; `make lock` writes it with uv from pyproject.toml. `pip check` fails when the lock
# lacks a dependency that pyproject.toml names, or pins a version outside its bounds.
LOCK := requirements.lock
UV_VERSION := 0.13.8
UV := $(VENV)/uv-$(UV_VERSION)/bin/uv

$(STAMP): pyproject.toml $(LOCK)
	@echo "==> creating $(VENV) and installing the versions pinned in $(LOCK)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	@touch $(STAMP)

$(UV):
	$(PYTHON) -m venv $(VENV)/uv-$(UV_VERSION)
	$(VENV)/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

.PHONY: lock
## lock: re-pin $(LOCK) from pyproject.toml, keeping every pin that still fits;
## `make lock UPGRADE=numpy` moves one package (and what it needs) to its newest version
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --output-file $(LOCK) $(if $(UPGRADE),--upgrade-package $(UPGRADE))

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

.PHONY: image
## image: the operator's OCI image archive, built without Docker (mmdebstrap, umoci; installed when
## missing; needs root): a cached Debian layer, then the locked wheels in /opt/sunblend, user 65532
image: $(STAMP)
	PYTHON=$(BIN)/python LOCK=$(LOCK) IMAGE_ARCHIVE=$(IMAGE_ARCHIVE) bash hack/image.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
