#!/usr/bin/env bash
# make demo: the README's main job, end to end, saying what it does at each step.
#
#   1. start the local control plane (or use the cluster in $KUBECONFIG, if set)
#   2. install the Helm chart (CRD, RBAC, metrics Service; the in-cluster Deployment is scaled to
#      0 because the local control plane has no container runtime: step 4 runs the operator here)
#   3. create kwok GPU nodes: committed (reserved), spot and on-demand, in two regions
#   4. start the operator (sunblend run) in the background, in Enforce mode
#   5. apply the India/UK follow-the-sun pool, with a pod template: sunblend runs its slices
#   6. show the pool, its conditions, its slices per region and capacity type, and where the pods run
#   7. a drain that respects a PodDisruptionBudget: held back, then done once the budget allows
#   8. a follow-the-sun day in a few minutes, with the kwok node provider (hack/demo_day.py),
#      a spot interruption at India's evening peak, and a PNG of nodes over the day
#   9. print how to watch it and how to tear it down
#
#   hack/demo.sh up | down
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_BIN=.venv/bin
CACHE="${SUNBLEND_CACHE:-$HOME/.cache/sunblend}"
DEMO="${SUNBLEND_DEMO_DIR:-$CACHE/demo}"
NAMESPACE=sunblend-system
POOL=hack/demo/chat-india-uk.yaml
DRAIN=hack/demo/drain.yaml

say() { printf '\n==> %s\n' "$*"; }

cluster_env() {
  # shellcheck disable=SC1090
  eval "$(bash hack/cluster.sh env)"
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "timed out after ${seconds}s waiting for: $what" >&2
  return 1
}

up() {
  mkdir -p "$DEMO"
  if [[ -n "${KUBECONFIG:-}" ]]; then
    say "1/9 using your cluster: KUBECONFIG=$KUBECONFIG"
    bash hack/cluster.sh build >/dev/null
    export PATH="$(bash hack/cluster.sh env | sed -n 's/^export PATH=\(.*\):\$PATH$/\1/p'):$PATH"
    echo "external" >"$DEMO/cluster"
  else
    say "1/9 starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    bash hack/cluster.sh build
    bash hack/cluster.sh up
    cluster_env
    echo "local" >"$DEMO/cluster"
  fi
  local kubectl="$VENV_BIN/kubectl"

  say "2/9 installing the Helm chart into namespace $NAMESPACE (actuation.mode=Enforce)"
  helm upgrade --install sunblend charts/sunblend --namespace "$NAMESPACE" --create-namespace \
    --set replicaCount=0 --set actuation.mode=Enforce --wait=false
  "$kubectl" get crd inferencepools.sunblend.dev

  say "3/9 creating kwok GPU nodes (8x H100 each): committed, spot and on-demand in ap-south-1 and eu-west-2"
  "$VENV_BIN/python" hack/kwok_nodes.py \
    ap-south-1:reserved:1 ap-south-1:spot:2 ap-south-1:on-demand:2 \
    eu-west-2:reserved:1 eu-west-2:spot:3 eu-west-2:on-demand:3 | "$kubectl" apply -f -
  "$VENV_BIN/python" hack/kwok_nodes.py --label sunblend.dev/demo=drain --label sunblend.dev/drain-demo=true \
    --prefix drain-demo \
    eu-west-2:on-demand:2 | "$kubectl" apply -f -
  "$kubectl" wait --for=condition=Ready node -l sunblend.dev/demo=true --timeout=60s
  "$kubectl" get nodes -l sunblend.dev/demo=true -L topology.kubernetes.io/region,karpenter.sh/capacity-type

  say "4/9 starting the operator in Enforce mode: sunblend run (log: $DEMO/operator.log)"
  if [[ -s "$DEMO/operator.pid" ]] && kill -0 "$(cat "$DEMO/operator.pid")" 2>/dev/null; then
    echo "already running (pid $(cat "$DEMO/operator.pid"))"
  else
    nohup "$VENV_BIN/sunblend" run -n default --actuation-mode Enforce --replan-seconds 5 \
      --metrics-address 127.0.0.1 --metrics-port 18080 \
      --liveness http://127.0.0.1:18081/healthz >"$DEMO/operator.log" 2>&1 &
    echo $! >"$DEMO/operator.pid"
    for _ in $(seq 1 60); do
      curl -fsS --max-time 1 http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break
      sleep 0.5
    done
    echo "operator running (pid $(cat "$DEMO/operator.pid")), metrics on http://127.0.0.1:18080/metrics"
  fi

  say "5/9 applying the India/UK follow-the-sun pool with a pod template ($POOL)"
  "$kubectl" apply -n default -f "$POOL"
  "$kubectl" wait -n default --for=condition=Ready inferencepools.sunblend.dev/chat-india-uk --timeout=60s
  wait_until 60 "the pool's slices" \
    test -n "$("$kubectl" get deploy -n default -l sunblend.dev/pool=chat-india-uk -o name)"
  sleep 10  # let kwok start the pods

  say "6/9 the pool, its conditions, its slices (one Deployment per region, GPU class and capacity type)"
  "$kubectl" get -n default inferencepools.sunblend.dev
  "$kubectl" get -n default inferencepools.sunblend.dev/chat-india-uk \
    -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
  "$kubectl" get deploy -n default -l sunblend.dev/pool=chat-india-uk \
    -L topology.kubernetes.io/region,sunblend.dev/capacity-type
  echo "where the pods run:"
  "$kubectl" get pods -n default -l sunblend.dev/pool=chat-india-uk --field-selector=status.phase=Running \
    -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c
  echo "what the operator did (status.actuation.commands):"
  "$kubectl" get -n default inferencepools.sunblend.dev/chat-india-uk \
    -o jsonpath='{range .status.actuation.commands[*]}  {.kind} {.target} {.value}: {.reason}{"\n"}{end}'

  say "7/9 a drain that respects a PodDisruptionBudget ($DRAIN)"
  "$kubectl" apply -n default -f "$DRAIN"
  wait_until 90 "DrainBlocked=True" bash -c "'$kubectl' get -n default inferencepools.sunblend.dev/drain-demo \
    -o jsonpath='{.status.conditions[?(@.type==\"DrainBlocked\")].reason}' | grep -qx DrainBlocked"
  "$kubectl" get -n default inferencepools.sunblend.dev/drain-demo \
    -o jsonpath='{.status.conditions[?(@.type=="DrainBlocked")].message}{"\n"}'
  "$kubectl" get nodes -l sunblend.dev/drain-demo=true -o custom-columns=NODE:.metadata.name,UNSCHEDULABLE:.spec.unschedulable
  echo "the budget is lifted: the drain completes and the replicas share one node"
  "$kubectl" delete -n default pdb drain-demo-keep-all
  wait_until 90 "the drain to complete" bash -c "test \"\$('$kubectl' get pods -n default -l sunblend.dev/pool=drain-demo \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.spec.nodeName}{\"\\n\"}{end}' | sort -u | wc -l)\" = 1"
  "$kubectl" get pods -n default -l sunblend.dev/pool=drain-demo --field-selector=status.phase=Running \
    -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c
  "$kubectl" get events -n default --field-selector involvedObject.name=drain-demo \
    -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | head -12

  say "8/9 a follow-the-sun day in a few minutes: the kwok node provider, India's evening meeting London's afternoon"
  local gateway=()
  if KUBECTL="$kubectl" bash hack/gateway.sh apply >/dev/null; then
    gateway=(--gateway demo-day/edge)  # the Gateway API CRDs are in: the pool's routes become HTTPRoutes
  else
    echo "(the Gateway API CRDs could not be installed: traffic weights go to the pool's status only)"
  fi
  "$VENV_BIN/python" hack/demo_day.py --out "$DEMO" --speed "${SUNBLEND_DEMO_SPEED:-360}" "${gateway[@]}"

  say "9/9 next steps"
  cat <<MSG
  export KUBECONFIG=${KUBECONFIG}
  kubectl get inferencepools.sunblend.dev -A -w            # watch pools
  kubectl describe inferencepools.sunblend.dev chat-india-uk
  kubectl get deploy -l sunblend.dev/pool=chat-india-uk     # the slices
  curl -s http://127.0.0.1:18080/metrics | grep ^sunblend_   # the operator's metrics
  tail -f $DEMO/operator.log                                # the operator's log
  xdg-open $DEMO/day.png                                    # nodes by capacity type over the day
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
    say "leaving your cluster as it is (delete the demo with: kubectl delete -n default -f $POOL -f $DRAIN; kubectl delete nodes -l sunblend.dev/demo=true)"
  fi
  rm -f "$DEMO/cluster"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 {up|down}" >&2; exit 2 ;;
esac
