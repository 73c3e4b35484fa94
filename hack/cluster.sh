#!/usr/bin/env bash
# Local Kubernetes control plane as plain processes (envtest-style, no Docker).
#
#   hack/cluster.sh build    build pinned binaries once into the cache (slow, one-time)
#   hack/cluster.sh build-karpenter  only Karpenter (kwok provider) and its CRDs; tests start it
#   hack/cluster.sh up       start etcd, kube-apiserver, controller-manager, scheduler, kwok
#   hack/cluster.sh down     stop everything started by `up` and wipe etcd data
#   hack/cluster.sh env      print export lines (KUBECONFIG, PATH)
#   hack/cluster.sh status   show process/port state
#
# Environment:
#   SUNBLEND_CACHE        binary/build cache     (default: $HOME/.cache/sunblend)
#   SUNBLEND_CLUSTER_DIR  runtime state dir      (default: $SUNBLEND_CACHE/cluster)
#   SUNBLEND_BUILD_JOBS   go build -p value      (default: number of CPUs)
#
# Requires only: go, openssl, curl, python3.
set -euo pipefail

# ---- pinned versions -------------------------------------------------------
ETCD_VERSION=v3.6.16          # go.etcd.io/etcd/server/v3
KUBE_VERSION=v1.36.3          # k8s.io/kubernetes (staging modules at v0.36.3)
KWOK_VERSION=v0.8.0           # sigs.k8s.io/kwok
HELM_VERSION=v3.22.0          # helm.sh/helm/v3
KARPENTER_VERSION=v1.15.0     # sigs.k8s.io/karpenter (kwok cloud provider)
# karpenter v1.15.0's go.mod needs go >= 1.26.9; only its module uses this toolchain.
KARPENTER_GOTOOLCHAIN=go1.27.3

CACHE="${SUNBLEND_CACHE:-$HOME/.cache/sunblend}"
BIN_ROOT="$CACHE/bin"
BUILD_ROOT="$CACHE/build"
STATE="${SUNBLEND_CLUSTER_DIR:-$CACHE/cluster}"

ETCD_DIR="$BIN_ROOT/etcd-$ETCD_VERSION"
APISERVER_DIR="$BIN_ROOT/kube-apiserver-$KUBE_VERSION"
KCM_DIR="$BIN_ROOT/kube-controller-manager-$KUBE_VERSION"
SCHED_DIR="$BIN_ROOT/kube-scheduler-$KUBE_VERSION"
KWOK_DIR="$BIN_ROOT/kwok-$KWOK_VERSION"
HELM_DIR="$BIN_ROOT/helm-$HELM_VERSION"
KARPENTER_DIR="$BIN_ROOT/karpenter-$KARPENTER_VERSION"

# Start order; `down` stops in reverse.
PROCS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# Use the installed go as-is; ignore any go.work/GOFLAGS of the caller.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod
JOBS="${SUNBLEND_BUILD_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- build -----------------------------------------------------------------

# new_module DIR NAME: create an empty Go module used only to pin one tool set.
new_module() {
  local dir=$1 name=$2
  mkdir -p "$dir"
  rm -f "$dir/go.mod" "$dir/go.sum"
  (cd "$dir" && go mod init "$name" >/dev/null 2>&1 && go mod edit -go=1.26.0)
}

# go_build DIR OUT PKG LDFLAGS: build one main package inside module DIR.
go_build() {
  local dir=$1 out=$2 pkg=$3 ldflags=$4
  mkdir -p "$(dirname "$out")"
  log "  go build $pkg -> $out"
  (cd "$dir" && go build -p "$JOBS" -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
}

# mod_dir MODULE@VERSION: print the extracted module source directory.
mod_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

build_etcd() {
  [[ -x "$ETCD_DIR/etcd" ]] && { log "etcd $ETCD_VERSION: cached"; return; }
  log "etcd $ETCD_VERSION: building"
  local dir="$BUILD_ROOT/etcd-$ETCD_VERSION"
  new_module "$dir" sunblend.local/build/etcd
  # The module root package of go.etcd.io/etcd/server/v3 is the etcd main.
  (cd "$dir" && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
  go_build "$dir" "$ETCD_DIR/etcd" go.etcd.io/etcd/server/v3 ""
}

build_kube() {
  if [[ -x "$APISERVER_DIR/kube-apiserver" && -x "$KCM_DIR/kube-controller-manager" \
        && -x "$SCHED_DIR/kube-scheduler" ]]; then
    log "kubernetes $KUBE_VERSION: cached"; return
  fi
  log "kubernetes $KUBE_VERSION: building kube-apiserver, kube-controller-manager, kube-scheduler"
  local dir="$BUILD_ROOT/kubernetes-$KUBE_VERSION"
  new_module "$dir" sunblend.local/build/kubernetes
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
  # with ./staging paths; re-point each at its published v0.<minor>.<patch> tag.
  local modfile staging_ver="v0.${KUBE_VERSION#v1.}" m
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local staging
  staging=$(python3 - "$modfile" <<'EOF'
import re, sys
mods = set()
for line in open(sys.argv[1]):
    m = re.match(r'\s*(?:require\s+)?(k8s\.io/\S+)\s+v0\.0\.0(\s|$)', line)
    if m:
        mods.add(m.group(1))
print("\n".join(sorted(mods)))
EOF
)
  [[ -n "$staging" ]] || die "no staging modules found in $modfile"
  (
    cd "$dir"
    go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
    for m in $staging; do go mod edit -replace="$m=$m@$staging_ver"; done
    for m in kube-apiserver kube-controller-manager kube-scheduler; do
      go mod edit -tool="k8s.io/kubernetes/cmd/$m"
    done
    go mod tidy
  )
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  go_build "$dir" "$APISERVER_DIR/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$ld"
  go_build "$dir" "$KCM_DIR/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager "$ld"
  go_build "$dir" "$SCHED_DIR/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler "$ld"
}

build_kwok() {
  local dir="$BUILD_ROOT/kwok-$KWOK_VERSION"
  if [[ -x "$KWOK_DIR/kwok" ]]; then
    log "kwok $KWOK_VERSION: cached"
  else
    log "kwok $KWOK_VERSION: building"
    new_module "$dir" sunblend.local/build/kwok
    (cd "$dir" && go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" && go mod tidy)
    go_build "$dir" "$KWOK_DIR/kwok" sigs.k8s.io/kwok/cmd/kwok \
      "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  fi
  [[ -s "$KWOK_DIR/stages.yaml" ]] && return
  # kwok exits with "no stages found" unless given stages: bundle the upstream
  # stages that kwok's own kustomize/stage/fast uses (node-fast, node
  # heartbeat-with-lease, pod-fast) into one multi-document config file.
  local src f sub
  src=$(mkdir -p "$dir" && cd "$dir" && mod_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
  : >"$KWOK_DIR/stages.yaml.tmp"
  for sub in node/fast node/heartbeat-with-lease pod/fast; do
    for f in "$src/kustomize/stage/$sub"/*.yaml; do
      [[ "$(basename "$f")" == kustomization.yaml ]] && continue
      { echo "---"; cat "$f"; } >>"$KWOK_DIR/stages.yaml.tmp"
    done
  done
  grep -q '^kind: Stage' "$KWOK_DIR/stages.yaml.tmp" \
    || die "no kwok stage yamls found under $src/kustomize/stage"
  mv -f "$KWOK_DIR/stages.yaml.tmp" "$KWOK_DIR/stages.yaml"
}

build_helm() {
  [[ -x "$HELM_DIR/helm" ]] && { log "helm $HELM_VERSION: cached"; return; }
  log "helm $HELM_VERSION: building"
  local dir="$BUILD_ROOT/helm-$HELM_VERSION"
  new_module "$dir" sunblend.local/build/helm
  (cd "$dir" && go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" && go mod tidy)
  go_build "$dir" "$HELM_DIR/helm" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

# Karpenter's kwok cloud provider: a real Karpenter controller that launches kwok
# nodes. Not part of `up`; the karpenter provider's tests start it themselves.
# The cache dir also holds the CRDs from the module (crds/*.yaml): NodePool and
# NodeClaim from kwok/charts/crds, KWOKNodeClass from kwok/apis/crds.
build_karpenter() {
  local dir="$BUILD_ROOT/karpenter-$KARPENTER_VERSION"
  if [[ -x "$KARPENTER_DIR/karpenter" ]]; then
    log "karpenter $KARPENTER_VERSION: cached"
  else
    log "karpenter $KARPENTER_VERSION: building (toolchain $KARPENTER_GOTOOLCHAIN)"
    (
      # The go command fetches this toolchain from the module proxy once.
      export GOTOOLCHAIN=$KARPENTER_GOTOOLCHAIN
      new_module "$dir" sunblend.local/build/karpenter
      (cd "$dir" && go get -tool "sigs.k8s.io/karpenter/kwok@$KARPENTER_VERSION" && go mod tidy)
      go_build "$dir" "$KARPENTER_DIR/karpenter" sigs.k8s.io/karpenter/kwok \
        "-X sigs.k8s.io/karpenter/pkg/operator.Version=$KARPENTER_VERSION"
    )
  fi
  [[ -s "$KARPENTER_DIR/crds/karpenter.sh_nodepools.yaml" ]] && return
  local src f
  src=$(mkdir -p "$dir" && cd "$dir" && GOTOOLCHAIN=$KARPENTER_GOTOOLCHAIN \
    mod_dir "sigs.k8s.io/karpenter@$KARPENTER_VERSION")
  rm -rf "$KARPENTER_DIR/crds.tmp" && mkdir -p "$KARPENTER_DIR/crds.tmp"
  for f in "$src"/kwok/charts/crds/*.yaml "$src"/kwok/apis/crds/*.yaml; do
    [[ -e "$f" ]] || continue
    cp "$f" "$KARPENTER_DIR/crds.tmp/" && chmod u+w "$KARPENTER_DIR/crds.tmp/$(basename "$f")"
  done
  [[ -s "$KARPENTER_DIR/crds.tmp/karpenter.sh_nodepools.yaml" ]] \
    || die "no karpenter CRDs found under $src/kwok/{charts,apis}/crds"
  rm -rf "$KARPENTER_DIR/crds" && mv -f "$KARPENTER_DIR/crds.tmp" "$KARPENTER_DIR/crds"
}

cmd_build() {
  command -v go >/dev/null || die "go not found"
  # The pinned modules declare `go 1.26.0`; with GOTOOLCHAIN=local an older go fails.
  local gov; gov=$(go env GOVERSION)
  python3 -c 'import re,sys; v=tuple(map(int,re.findall(r"\d+",sys.argv[1])[:2])); sys.exit(v<(1,26))' "$gov" \
    || die "need go >= 1.26 (found $gov)"
  log "cache: $CACHE (first build takes ~10-40 minutes depending on CPUs)"
  BUILDING=""
  trap '[[ -z "$BUILDING" ]] || log "FAILED building $BUILDING (errors above)"' EXIT
  BUILDING="go.etcd.io/etcd/server/v3@$ETCD_VERSION"; build_etcd
  BUILDING="sigs.k8s.io/kwok@$KWOK_VERSION"; build_kwok
  BUILDING="helm.sh/helm/v3@$HELM_VERSION"; build_helm
  BUILDING="k8s.io/kubernetes@$KUBE_VERSION"; build_kube
  BUILDING="sigs.k8s.io/karpenter@$KARPENTER_VERSION"; build_karpenter
  BUILDING=""
  log "build complete"
}

# ---- runtime helpers ---------------------------------------------------------

need_bins() {
  local b
  for b in "$ETCD_DIR/etcd" "$APISERVER_DIR/kube-apiserver" "$KCM_DIR/kube-controller-manager" \
           "$SCHED_DIR/kube-scheduler" "$KWOK_DIR/kwok" "$KWOK_DIR/stages.yaml"; do
    [[ -e "$b" ]] || die "missing $b; run: hack/cluster.sh build"
  done
}

pid_of() { [[ -s "$STATE/pids/$1.pid" ]] && cat "$STATE/pids/$1.pid"; }

# alive NAME: the recorded PID is running (not a zombie) and is one of our
# binaries, so a stale PID file can never make us signal an unrelated process.
alive() {
  local pid; pid=$(pid_of "$1") || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -d /proc/$pid ]] || return 0
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  [[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" == "$BIN_ROOT"/* ]]
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start NAME CMD...: run a process in the background, record its PID.
start() {
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(pid_of "$name"))"; return; fi
  log "starting $name"
  # setsid: own session, so a terminal's Ctrl-C/hangup does not reach it.
  # (In a non-interactive shell setsid execs in place, so $! is the process.)
  if command -v setsid >/dev/null; then
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  else
    "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  fi
  echo $! >"$STATE/pids/$name.pid"
}

# wait_for DESC SECONDS CMD...: poll CMD until success.
wait_for() {
  local desc=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "timed out after ${secs}s waiting for $desc (see $STATE/logs/)"
}

check_alive() {
  alive "$1" || { tail -n 30 "$STATE/logs/$1.log" >&2 || true; die "$1 exited (log: $STATE/logs/$1.log)"; }
}

gen_pki() {
  local pki="$STATE/pki"
  [[ -s "$pki/ca.crt" && -s "$pki/apiserver.crt" && -s "$pki/sa.key" ]] && return
  log "generating certificates"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 \
      -subj "/CN=sunblend-local-ca" -out ca.crt 2>/dev/null
    openssl genrsa -out apiserver.key 2048 2>/dev/null
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    printf '%s\n' \
      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    # One RSA key both signs and verifies service account tokens.
    openssl genrsa -out sa.key 2048 2>/dev/null
    chmod 600 ./*.key
  )
}

write_kubeconfig() {
  local token=$1 port=$2
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sunblend
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $STATE/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: sunblend
  context:
    cluster: sunblend
    user: admin
current-context: sunblend
EOF
  chmod 600 "$STATE/kubeconfig"
}

apiserver_ready() {
  # shellcheck disable=SC1091
  . "$STATE/ports.env"
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $(cat "$STATE/token")" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null
}

print_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=$ETCD_DIR:$APISERVER_DIR:$KCM_DIR:$SCHED_DIR:$KWOK_DIR:$HELM_DIR:\$PATH"
}

# ---- subcommands -----------------------------------------------------------

cmd_up() {
  need_bins
  local t0=$SECONDS all=1 p
  for p in "${PROCS[@]}"; do alive "$p" || all=0; done
  if ((all)) && apiserver_ready 2>/dev/null; then
    log "cluster already up"; print_env; return
  fi
  # Partial leftovers (crash, stale pids): restart cleanly.
  for p in "${PROCS[@]}"; do alive "$p" && { log "restarting partially-running cluster"; cmd_down; break; }; done

  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/certs"
  gen_pki
  [[ -s "$STATE/token" ]] || python3 -c 'import secrets; print(secrets.token_hex(24))' >"$STATE/token"
  local token; token=$(cat "$STATE/token")
  printf '%s,admin,admin,system:masters\n' "$token" >"$STATE/tokens.csv"
  chmod 600 "$STATE/token" "$STATE/tokens.csv"

  # Fresh ports every `up`, recorded for status/env consumers.
  cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
APISERVER_PORT=$(free_port)
KCM_PORT=$(free_port)
SCHEDULER_PORT=$(free_port)
KWOK_PORT=$(free_port)
EOF
  # shellcheck disable=SC1091
  . "$STATE/ports.env"
  write_kubeconfig "$token" "$APISERVER_PORT"

  rm -rf "$STATE/etcd"
  start etcd "$ETCD_DIR/etcd" \
    --name=sunblend --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="sunblend=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd" 30 curl -fsS --max-time 1 "http://127.0.0.1:$ETCD_PORT/health"
  check_alive etcd

  start kube-apiserver "$APISERVER_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$STATE/certs" \
    --tls-cert-file="$STATE/pki/apiserver.crt" --tls-private-key-file="$STATE/pki/apiserver.key" \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$STATE/pki/sa.key" \
    --service-account-signing-key-file="$STATE/pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --token-auth-file="$STATE/tokens.csv" \
    --allow-privileged=true
  local i
  for ((i = 0; i < 360; i++)); do
    apiserver_ready 2>/dev/null && break
    check_alive kube-apiserver
    sleep 0.25
  done
  apiserver_ready || die "kube-apiserver not ready after 90s (log: $STATE/logs/kube-apiserver.log)"
  log "kube-apiserver ready on https://127.0.0.1:$APISERVER_PORT"

  start kube-controller-manager "$KCM_DIR/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/certs" \
    --service-account-private-key-file="$STATE/pki/sa.key" \
    --root-ca-file="$STATE/pki/ca.crt" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --controllers='*' --leader-elect=false --use-service-account-credentials=false

  start kube-scheduler "$SCHED_DIR/kube-scheduler" \
    --kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$STATE/certs" \
    --leader-elect=false

  start kwok "$KWOK_DIR/kwok" \
    --kubeconfig="$STATE/kubeconfig" \
    --config="$KWOK_DIR/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT"

  # Give the controllers a moment to fail fast on bad flags.
  sleep 2
  for p in kube-controller-manager kube-scheduler kwok; do check_alive "$p"; done
  wait_for "kube-controller-manager healthz" 30 \
    curl -fsSk --max-time 1 "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for "kube-scheduler healthz" 30 \
    curl -fsSk --max-time 1 "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  log "cluster up in $((SECONDS - t0))s (state: $STATE)"
  print_env
}

# stop NAME: SIGTERM, wait up to 10 s, then SIGKILL; by recorded PID only.
stop() {
  local name=$1 pid i
  pid=$(pid_of "$name") || return 0
  if alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      alive "$name" || break
      sleep 0.25
    done
    if alive "$name"; then
      log "$name did not exit; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$STATE/pids/$name.pid"
}

cmd_down() {
  local i
  for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do stop "${PROCS[i]}"; done
  rm -rf "$STATE/etcd"
  log "cluster down"
}

cmd_status() {
  local p rc=0
  [[ -s "$STATE/ports.env" ]] && cat "$STATE/ports.env"
  for p in "${PROCS[@]}"; do
    if alive "$p"; then echo "$p: running (pid $(pid_of "$p"))"; else echo "$p: stopped"; rc=1; fi
  done
  if ((rc == 0)) && apiserver_ready 2>/dev/null; then echo "apiserver: ready"; else echo "apiserver: not ready"; rc=1; fi
  return $rc
}

case "${1:-}" in
  build) cmd_build ;;
  build-karpenter) build_karpenter ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status) cmd_status ;;
  *) echo "usage: $0 {build|build-karpenter|up|down|env|status}" >&2; exit 2 ;;
esac
