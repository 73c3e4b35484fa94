#!/usr/bin/env bash
# Gateway API CRDs (standard channel) from their Go module, at a pinned version.
#
#   hack/gateway.sh crds     download once, cache, print the folder holding the YAML files
#   hack/gateway.sh apply    the same, then `kubectl apply --server-side` them to $KUBECONFIG
#                            and wait until every CRD is Established
#
# The files are config/crd/standard/*.yaml of sigs.k8s.io/gateway-api, fetched through the Go
# module proxy (checksummed against sum.golang.org like any module), and cached under
# $SUNBLEND_CACHE/crds/gateway-api-<version>/. Besides the CRDs the standard channel holds a
# ValidatingAdmissionPolicy (and its binding) that guards later CRD upgrades.
#
# Environment:
#   SUNBLEND_CACHE  cache folder         (default: $HOME/.cache/sunblend)
#   KUBECTL         kubectl to run       (default: kubectl)
#   KUBECONFIG      the cluster (apply)
#
# Requires: go (crds, first run), kubectl (apply).
set -euo pipefail

# ---- pinned version --------------------------------------------------------
# v1.7.0 declares `go 1.27.0`, which the pinned go 1.26 toolchain refuses to extract.
GATEWAY_API_VERSION=v1.6.3     # sigs.k8s.io/gateway-api
MODULE=sigs.k8s.io/gateway-api

CACHE="${SUNBLEND_CACHE:-$HOME/.cache/sunblend}"
DEST="$CACHE/crds/gateway-api-$GATEWAY_API_VERSION"
KUBECTL="${KUBECTL:-kubectl}"

# Use the installed go as-is; ignore any go.work/GOFLAGS of the caller.
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod

log() { printf '[gateway] %s\n' "$*" >&2; }
die() { printf '[gateway] ERROR: %s\n' "$*" >&2; exit 1; }

# crds: make sure $DEST holds the standard-channel YAML files; print it.
cmd_crds() {
  if [[ -s "$DEST/.complete" ]]; then
    log "gateway-api $GATEWAY_API_VERSION: cached"
    echo "$DEST"; return
  fi
  command -v go >/dev/null || die "go not found (needed once, to download $MODULE@$GATEWAY_API_VERSION)"
  log "gateway-api $GATEWAY_API_VERSION: downloading $MODULE through the Go module proxy"
  local json src
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  # Outside any module: `go mod download` of an explicit module@version needs none.
  json=$(cd "$WORK" && go mod download -json "$MODULE@$GATEWAY_API_VERSION") \
    || die "go mod download $MODULE@$GATEWAY_API_VERSION failed: $json"
  src=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
if d.get("Error"): sys.exit("error: " + d["Error"])
print(d["Dir"])' "$json") || die "go mod download $MODULE@$GATEWAY_API_VERSION: $src"
  src="$src/config/crd/standard"
  compgen -G "$src/*.yaml" >/dev/null || die "no YAML files under $src"
  # Fill a fresh folder, then rename it into place, so a half copy is never taken as cached.
  mkdir -p "$CACHE/crds"
  local tmp="$CACHE/crds/.gateway-api-$GATEWAY_API_VERSION.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  cp "$src"/*.yaml "$tmp"/
  chmod u+w "$tmp"/*.yaml   # the module cache is read-only
  grep -q '^kind: CustomResourceDefinition' "$tmp"/*.yaml || die "no CustomResourceDefinition in $src"
  echo "$MODULE@$GATEWAY_API_VERSION config/crd/standard" >"$tmp/.complete"
  rm -rf "$DEST"
  mv "$tmp" "$DEST"
  log "cached $(find "$DEST" -name '*.yaml' | wc -l) files in $DEST"
  echo "$DEST"
}

# The CRD names in $DEST (each CRD file holds one).
crd_names() {
  local f
  for f in "$DEST"/*.yaml; do
    grep -q '^kind: CustomResourceDefinition' "$f" || continue
    awk '/^metadata:/{m=1; next} m && /^[^ ]/{m=0} m && /^  name:/{print $2; exit}' "$f"
  done
}

cmd_apply() {
  cmd_crds >/dev/null
  [[ -n "${KUBECONFIG:-}" ]] || die "KUBECONFIG is not set"
  command -v "$KUBECTL" >/dev/null || die "$KUBECTL not found"
  log "applying $DEST to $KUBECONFIG"
  "$KUBECTL" apply --server-side --force-conflicts --field-manager=sunblend-gateway-sh -f "$DEST" >&2
  local names; names=$(crd_names)
  [[ -n "$names" ]] || die "no CRD names found in $DEST"
  # shellcheck disable=SC2086
  "$KUBECTL" wait --for=condition=Established --timeout=60s $(printf 'crd/%s ' $names) >&2
  echo "$DEST"
}

case "${1:-crds}" in
  crds) cmd_crds ;;
  apply) cmd_apply ;;
  version) echo "$GATEWAY_API_VERSION" ;;
  *) echo "usage: $0 {crds|apply|version}" >&2; exit 2 ;;
esac
