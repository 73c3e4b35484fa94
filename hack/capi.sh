#!/usr/bin/env bash
# Cluster API core CRDs (Cluster, MachineDeployment, MachineSet, Machine) for the local control plane.
#
#   hack/capi.sh path       fetch the CRDs once into the cache; print the folder that holds them
#   hack/capi.sh install    apply them into $KUBECONFIG's cluster and wait until they are Established
#   hack/capi.sh versions   list the sigs.k8s.io/cluster-api versions the Go module proxy serves
#
# The CRDs come from the Go module sigs.k8s.io/cluster-api (core/config/crd/bases/), fetched with
# the ordinary `go mod download`, so the real API server validates sunblend's writes against the
# real schemas. Only the CRDs are installed: no Cluster API controller and no infrastructure
# provider runs here, so nothing acts on the objects (MachineSets are not created, Machines get no
# Nodes).
#
# Conversion: the module's bases declare no conversion (strategy None); the conversion webhook
# lives only in the kustomize patches (core/config/crd/patches/webhook_in_*.yaml), which this
# script does not apply. Should a base ever carry `spec.conversion`, it is stripped, because no
# webhook can run here; the script says so on stderr.
#
# Environment:
#   SUNBLEND_CACHE         cache root                  (default: $HOME/.cache/sunblend)
#   SUNBLEND_CAPI_VERSION  sigs.k8s.io/cluster-api tag (default: the pinned CAPI_VERSION below)
#   KUBECTL                kubectl to use              (default: kubectl on PATH, else .venv/bin/kubectl)
#
# Requires: go, python3; kubectl for `install`.
set -euo pipefail

CAPI_VERSION="${SUNBLEND_CAPI_VERSION:-v1.14.2}"   # newest v1.14.x the proxy serves (checked: v1.14.2)
CACHE="${SUNBLEND_CACHE:-$HOME/.cache/sunblend}"
CRD_DIR="$CACHE/crds/cluster-api-$CAPI_VERSION"
CRDS=(clusters machinedeployments machinesets machines)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The same Go settings as hack/cluster.sh: the installed go as-is, no caller go.work/GOFLAGS.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod

log() { printf '[capi] %s\n' "$*" >&2; }
die() { printf '[capi] ERROR: %s\n' "$*" >&2; exit 1; }

# Run go outside any module (the repository has none, but a caller's cwd might).
go_outside() { (cd "${TMPDIR:-/tmp}" && go "$@"); }

module_dir() {
  go_outside mod download -json "sigs.k8s.io/cluster-api@$CAPI_VERSION" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])'
}

# strip_conversion SRC DST: copy a CRD, dropping a top-level `spec.conversion` block if any.
# controller-gen writes the CRD's spec fields at two spaces, so the block is `  conversion:` and
# every following line indented deeper.
strip_conversion() {
  awk '
    /^  conversion:/ { skipping = 1; stripped = 1; next }
    skipping && /^   / { next }
    { skipping = 0; print }
    END { if (stripped) print "[capi] stripped spec.conversion from " FILENAME " (no webhook can run here)" > "/dev/stderr" }
  ' "$1" >"$2"
}

cmd_path() {
  if [[ -s "$CRD_DIR/.complete" ]]; then echo "$CRD_DIR"; return; fi
  command -v go >/dev/null || die "go not found"
  log "sigs.k8s.io/cluster-api@$CAPI_VERSION: downloading"
  local src; src=$(module_dir) || die "go mod download sigs.k8s.io/cluster-api@$CAPI_VERSION failed"
  local bases="$src/core/config/crd/bases" tmp="$CRD_DIR.tmp.$$" name
  [[ -d "$bases" ]] || die "no $bases in sigs.k8s.io/cluster-api@$CAPI_VERSION"
  rm -rf "$tmp"; mkdir -p "$tmp"
  for name in "${CRDS[@]}"; do
    local file="$bases/cluster.x-k8s.io_$name.yaml"
    [[ -s "$file" ]] || die "missing $file"
    strip_conversion "$file" "$tmp/cluster.x-k8s.io_$name.yaml"
    grep -q '^  conversion:' "$tmp/cluster.x-k8s.io_$name.yaml" && die "could not strip conversion from $file"
  done
  echo "sigs.k8s.io/cluster-api@$CAPI_VERSION" >"$tmp/.complete"
  rm -rf "$CRD_DIR"; mkdir -p "$(dirname "$CRD_DIR")"; mv "$tmp" "$CRD_DIR"
  echo "$CRD_DIR"
}

kubectl_bin() {
  if [[ -n "${KUBECTL:-}" ]]; then echo "$KUBECTL"
  elif command -v kubectl >/dev/null; then command -v kubectl
  elif [[ -x "$ROOT/.venv/bin/kubectl" ]]; then echo "$ROOT/.venv/bin/kubectl"
  else die "kubectl not found (set KUBECTL)"; fi
}

cmd_install() {
  [[ -n "${KUBECONFIG:-}" ]] || die "KUBECONFIG is not set"
  local dir kubectl name
  dir=$(cmd_path); kubectl=$(kubectl_bin)
  # Server-side apply: the Cluster CRD is too large for client-side apply's last-applied annotation.
  for name in "${CRDS[@]}"; do
    "$kubectl" apply --server-side --force-conflicts --field-manager=sunblend-capi \
      -f "$dir/cluster.x-k8s.io_$name.yaml" >&2
  done
  for name in "${CRDS[@]}"; do
    "$kubectl" wait --for=condition=Established --timeout=60s "crd/$name.cluster.x-k8s.io" >&2
  done
  log "Cluster API $CAPI_VERSION CRDs installed (no controllers run)"
}

cmd_versions() { go_outside list -m -versions sigs.k8s.io/cluster-api | tr ' ' '\n' | tail -n +2; }

case "${1:-}" in
  path) cmd_path ;;
  install) cmd_install ;;
  versions) cmd_versions ;;
  *) echo "usage: $0 {path|install|versions}" >&2; exit 2 ;;
esac
