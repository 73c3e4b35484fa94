#!/usr/bin/env bash
# make demo: the README's main job, end to end, saying what it does at each step.
#
#   1. start the local control plane (or use the cluster in $KUBECONFIG, if set)
#   2. install the Helm chart (CRD, RBAC, metrics Service; the in-cluster Deployment is scaled to
#      0 because the local control plane has no container runtime: step 4 runs the operator here)
#   3. create kwok GPU nodes: committed (reserved), spot and on-demand, in two regions
#   4. start the operator (sunblend run) in the background
#   5. apply the India/UK follow-the-sun example
#   6. show the pool, its conditions and its plan for this hour
#   7. print how to watch it and how to tear it down
#
#   hack/demo.sh up | down
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_BIN=.venv/bin
CACHE="${SUNBLEND_CACHE:-$HOME/.cache/sunblend}"
DEMO="${SUNBLEND_DEMO_DIR:-$CACHE/demo}"
NAMESPACE=sunblend-system
POOL=examples/follow-the-sun-india-uk.yaml

say() { printf '\n==> %s\n' "$*"; }

cluster_env() {
  # shellcheck disable=SC1090
  eval "$(bash hack/cluster.sh env)"
}

up() {
  mkdir -p "$DEMO"
  if [[ -n "${KUBECONFIG:-}" ]]; then
    say "1/7 using your cluster: KUBECONFIG=$KUBECONFIG"
    bash hack/cluster.sh build >/dev/null
    export PATH="$(bash hack/cluster.sh env | sed -n 's/^export PATH=\(.*\):\$PATH$/\1/p'):$PATH"
    echo "external" >"$DEMO/cluster"
  else
    say "1/7 starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    bash hack/cluster.sh build
    bash hack/cluster.sh up
    cluster_env
    echo "local" >"$DEMO/cluster"
  fi
  local kubectl="$VENV_BIN/kubectl"

  say "2/7 installing the Helm chart into namespace $NAMESPACE"
  helm upgrade --install sunblend charts/sunblend --namespace "$NAMESPACE" --create-namespace \
    --set replicaCount=0 --wait=false
  "$kubectl" get crd inferencepools.sunblend.dev

  say "3/7 creating kwok GPU nodes (8x H100 each): committed, spot and on-demand in ap-south-1 and eu-west-2"
  "$VENV_BIN/python" hack/kwok_nodes.py \
    ap-south-1:reserved:1 ap-south-1:spot:2 ap-south-1:on-demand:2 \
    eu-west-2:reserved:1 eu-west-2:spot:3 eu-west-2:on-demand:3 | "$kubectl" apply -f -
  "$kubectl" wait --for=condition=Ready node -l sunblend.dev/demo=true --timeout=60s
  "$kubectl" get nodes -l sunblend.dev/demo=true -L topology.kubernetes.io/region,karpenter.sh/capacity-type

  say "4/7 starting the operator: sunblend run (log: $DEMO/operator.log)"
  if [[ -s "$DEMO/operator.pid" ]] && kill -0 "$(cat "$DEMO/operator.pid")" 2>/dev/null; then
    echo "already running (pid $(cat "$DEMO/operator.pid"))"
  else
    nohup "$VENV_BIN/sunblend" run --metrics-address 127.0.0.1 --metrics-port 18080 \
      --liveness http://127.0.0.1:18081/healthz >"$DEMO/operator.log" 2>&1 &
    echo $! >"$DEMO/operator.pid"
    for _ in $(seq 1 60); do
      curl -fsS --max-time 1 http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break
      sleep 0.5
    done
    echo "operator running (pid $(cat "$DEMO/operator.pid")), metrics on http://127.0.0.1:18080/metrics"
  fi

  say "5/7 applying the India/UK example pool ($POOL)"
  "$kubectl" apply -n default -f "$POOL"
  "$kubectl" wait -n default --for=condition=Ready inferencepools.sunblend.dev/chat-india-uk --timeout=60s

  say "6/7 the pool, its conditions, and the plan for this hour"
  "$kubectl" get -n default inferencepools.sunblend.dev
  "$kubectl" get -n default inferencepools.sunblend.dev/chat-india-uk \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
  "$kubectl" get -n default inferencepools.sunblend.dev/chat-india-uk \
    -o jsonpath='{range .status.current[*]}{.region} {.gpuClass} {.capacityType}: {.nodes} nodes, {.replicas} replicas{"\n"}{end}'
  "$kubectl" get events -n default --field-selector involvedObject.name=chat-india-uk

  say "7/7 next steps"
  cat <<MSG
  export KUBECONFIG=${KUBECONFIG}
  kubectl get inferencepools.sunblend.dev -A -w            # watch pools
  kubectl describe inferencepools.sunblend.dev chat-india-uk
  curl -s http://127.0.0.1:18080/metrics | grep ^sunblend_   # the operator's metrics
  tail -f $DEMO/operator.log                                # the operator's log
  make demo-down                                            # stop the operator and the cluster
MSG
}

down() {
  if [[ -s "$DEMO/operator.pid" ]]; then
    local pid; pid=$(cat "$DEMO/operator.pid")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping the operator (pid $pid)"
      kill -TERM "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$DEMO/operator.pid"
  fi
  if [[ "$(cat "$DEMO/cluster" 2>/dev/null)" == local ]]; then
    say "stopping the local control plane"
    bash hack/cluster.sh down
  else
    say "leaving your cluster as it is (delete the demo with: kubectl delete -n default -f $POOL; kubectl delete nodes -l sunblend.dev/demo=true)"
  fi
  rm -f "$DEMO/cluster"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 {up|down}" >&2; exit 2 ;;
esac
