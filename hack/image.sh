#!/usr/bin/env bash
# Build the operator's container image without Docker: `make image` calls this script.
#
# It writes an OCI image archive (default out/sunblend-image.oci.tar) of two layers:
#   1. a Debian root file system with python3, from mmdebstrap. It is cached under
#      ~/.cache/sunblend/image/, keyed by the package list and options below, so only the first
#      build on a machine downloads Debian packages (SUNBLEND_IMAGE_REFRESH=1 rebuilds it);
#   2. a `sunblend` user (uid and gid 65532) and a virtualenv at /opt/sunblend, installed in a
#      chroot with `pip install --no-index` from wheels built here: sunblend from this tree, and its
#      dependencies at the versions pinned in requirements.lock, each checked against the lock's
#      hashes. The image build needs no network beyond the Debian mirror.
# umoci assembles the layers and the config: user 65532, entrypoint /opt/sunblend/bin/sunblend,
# the OCI labels source, version (pyproject.toml) and revision (git rev-parse HEAD), and the name
# ghcr.io/sunblend/sunblend:VERSION as the index's org.opencontainers.image.ref.name.
#
# Containers cannot run on the build machine; tests/image/test_image.py unpacks the archive and runs
# `sunblend` in it through `unshare --fork --pid --mount-proc chroot`. Needs root (chroot, unshare).
# Installs mmdebstrap and umoci from Debian when missing.
#
# Settings (environment): PYTHON (the Python whose pip builds the wheels, default .venv/bin/python),
# LOCK, IMAGE_ARCHIVE, IMAGE_REPOSITORY, IMAGE_SOURCE, SUNBLEND_IMAGE_REFRESH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
LOCK="${LOCK:-requirements.lock}"
IMAGE_ARCHIVE="${IMAGE_ARCHIVE:-out/sunblend-image.oci.tar}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-ghcr.io/sunblend/sunblend}"
IMAGE_SOURCE="${IMAGE_SOURCE:-https://github.com/sunblend/sunblend}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/sunblend/image"

# The base: Debian bookworm, whose python3 is 3.11 on glibc 2.36. The wheels are chosen for exactly
# that interpreter and C library, whatever Python the host runs.
SUITE=bookworm
TARGET_PYTHON=3.11
TARGET_GLIBC_MINOR=36
PACKAGES=python3,python3-venv,ca-certificates
# shellcheck disable=SC2016 # "$1" is the hook's argument, the chroot's path
MMDEBSTRAP_OPTIONS=(
  --variant=apt --include="$PACKAGES"
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --customize-hook='rm -f "$1"/etc/resolv.conf "$1"/etc/hostname'
)
USER_ID=65532
VENV=/opt/sunblend

log() { echo "==> $*" >&2; }
die() { echo "image.sh: $*" >&2; exit 1; }

need_tools() {
  [ "$(id -u)" = 0 ] || die "needs root: the venv is installed in a chroot of the image's root file system"
  if ! command -v mmdebstrap >/dev/null || ! command -v umoci >/dev/null || ! command -v mmtarfilter >/dev/null; then
    log "installing mmdebstrap and umoci from Debian"
    apt-get update && apt-get install -y --no-install-recommends mmdebstrap umoci
  fi
  if ! command -v unshare >/dev/null || ! command -v chroot >/dev/null; then
    die "needs unshare and chroot (util-linux, coreutils)"
  fi
}

# The host's apt sources for $SUITE, -updates and -security, in one-line format: the mirror is read
# at build time, never written into this repository.
apt_sources() {
  "$PYTHON" - "$SUITE" <<'EOF'
import glob, re, sys

suite = sys.argv[1]
wanted = re.compile(rf"^{re.escape(suite)}(-updates|-security)?$")
entries = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            entries.append((words[1], words[2], words[3:]))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path, encoding="utf-8").read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"]) == ["no"]:
            continue
        for uri in fields.get("uris", []):
            for each in fields.get("suites", []):
                entries.append((uri, each, fields.get("components", ["main"])))
seen = set()
for uri, each, components in entries:
    if wanted.match(each) and (uri, each) not in seen:
        seen.add((uri, each))
        print(f"deb {uri} {each} {' '.join(components)}")
EOF
}

# Layer 1: the Debian root file system, cached; /dev is left out (a runtime mounts its own).
base_rootfs() {
  local key tarball sources=()
  key="$(printf '%s\n' 1 "$SUITE" "${MMDEBSTRAP_OPTIONS[@]}" | sha256sum | cut -c1-16)"
  tarball="$CACHE/debian-$SUITE-$key.tar"
  if [ -s "$tarball" ] && [ -z "${SUNBLEND_IMAGE_REFRESH:-}" ]; then
    log "Debian root file system from the cache: $tarball" && echo "$tarball" && return
  fi
  mapfile -t sources < <(apt_sources)
  [ "${#sources[@]}" -gt 0 ] || die "no apt source for $SUITE in /etc/apt/sources.list{,.d}: add one (deb MIRROR $SUITE main)"
  log "building the Debian $SUITE root file system with mmdebstrap ($PACKAGES)"
  mkdir -p "$CACHE"
  mmdebstrap --quiet "${MMDEBSTRAP_OPTIONS[@]}" "$SUITE" "$WORK/debian.tar" "${sources[@]}" >&2
  mmtarfilter --path-exclude='/dev/*' <"$WORK/debian.tar" >"$tarball.partial"
  rm -f "$WORK/debian.tar"
  mv "$tarball.partial" "$tarball"
  echo "$tarball"
}

# The pins: requirements.lock without its hashes (they are checked after the download), or, with
# no lock, what the virtualenv has installed.
pins() {
  if [ -f "$LOCK" ]; then
    "$PYTHON" - "$LOCK" <<'EOF'
import re, sys

text = open(sys.argv[1], encoding="utf-8").read().replace("\\\n", " ")
for line in text.splitlines():
    line = re.sub(r"\s*--hash=\S+", "", line.split("#", 1)[0]).strip()
    if line and not line.startswith("-"):
        print(line)
EOF
  else
    log "WARNING: no $LOCK; pinning to the versions installed in $PYTHON's environment (pip freeze)"
    "$PYTHON" -m pip freeze --exclude-editable
  fi
}

check_hashes() {
  "$PYTHON" - "$LOCK" "$WORK/wheels" <<'EOF'
import hashlib, pathlib, re, sys

text = open(sys.argv[1], encoding="utf-8").read().replace("\\\n", " ")
locked = {}
for line in text.splitlines():
    match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
    if match:
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        locked.setdefault((name, match[2]), set()).update(re.findall(r"--hash=sha256:([0-9a-f]+)", line))
wrong = []
for wheel in sorted(pathlib.Path(sys.argv[2]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    name = re.sub(r"[-_.]+", "-", name).lower()
    if name == "sunblend":
        continue
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest not in locked.get((name, version), set()):
        wrong.append(f"{wheel.name} (sha256 {digest}) is not in {sys.argv[1]}")
if wrong:
    sys.exit("wheels that do not match the lock:\n  " + "\n  ".join(wrong))
EOF
}

# Wheels for the image: sunblend from a copy of this tree (so no build/ folder lands here), and
# binary wheels of its dependencies for CPython $TARGET_PYTHON on glibc 2.$TARGET_GLIBC_MINOR.
wheels() {
  local arch platforms=() minor
  arch="$(uname -m)"
  for ((minor = TARGET_GLIBC_MINOR; minor >= 17; minor--)); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch")
  mkdir -p "$WORK/source" "$WORK/wheels"
  tar --exclude=__pycache__ -cf - pyproject.toml README.md operator | tar -xf - -C "$WORK/source"
  log "building the sunblend wheel"
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/wheels" "$WORK/source"
  pins >"$WORK/pins.txt"
  log "downloading the pinned dependency wheels"
  "$PYTHON" -m pip download --quiet --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
    --abi "cp${TARGET_PYTHON/./}" "${platforms[@]}" -c "$WORK/pins.txt" -d "$WORK/wheels" "$WORK"/wheels/sunblend-*.whl
  if [ -f "$LOCK" ]; then check_hashes; fi
}

# Layer 2: the user and the virtualenv, installed in a chroot with no index.
install_venv() {
  local rootfs="$1"
  mkdir -p "$rootfs/tmp/wheels"
  cp "$WORK"/wheels/*.whl "$rootfs/tmp/wheels/"
  log "installing sunblend $VERSION into $VENV (chroot, no index)"
  # shellcheck disable=SC2016 # the scripts' "$1"... are expanded by the shells they run in
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    unshare --mount --pid --fork --mount-proc="$rootfs/proc" \
    sh -ec 'mount --rbind /dev "$1/dev"; shift; exec chroot "$@"' sh "$rootfs" "$rootfs" sh -ec '
      groupadd --gid "$1" -K GID_MAX="$1" sunblend
      useradd --uid "$1" --gid "$1" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        -K UID_MAX="$1" -K GID_MAX="$1" sunblend
      python3 -m venv --without-pip "$2"
      set -- "$2" "$3" /usr/share/python-wheels/pip-*.whl
      "$1/bin/python" "$3/pip" install --quiet --no-index --only-binary=:all: --find-links /tmp/wheels \
        --no-cache-dir --disable-pip-version-check "sunblend==$2"
      rm -rf /tmp/wheels
    ' sh "$USER_ID" "$VENV" "$VERSION"
}

main() {
  need_tools
  [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null || die "no Python at $PYTHON: run make image (it sets up .venv)"
  VERSION="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' pyproject.toml)"
  REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  local name="$IMAGE_REPOSITORY:$VERSION" started=$SECONDS base
  mkdir -p "$(dirname "$IMAGE_ARCHIVE")"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/sunblend-image.XXXXXX")"
  trap 'rm -rf --one-file-system "$WORK"' EXIT

  base="$(base_rootfs)"
  wheels

  local layout="$WORK/layout" image="$WORK/layout:$name" bundle="$WORK/bundle"
  umoci init --layout "$layout"
  umoci new --image "$image"
  log "adding the Debian layer"
  umoci raw add-layer --image "$image" --history.created_by "mmdebstrap $SUITE ($PACKAGES)" "$base"
  umoci unpack --image "$image" "$bundle" >/dev/null
  install_venv "$bundle/rootfs"
  log "adding the sunblend layer"
  umoci repack --image "$image" --history.created_by "pip install --no-index sunblend==$VERSION into $VENV" "$bundle"
  rm -rf --one-file-system "$bundle"

  local labels=(
    "org.opencontainers.image.title=sunblend"
    "org.opencontainers.image.description=Kubernetes operator that plans the cheapest blend of committed, spot and on-demand GPUs"
    "org.opencontainers.image.source=$IMAGE_SOURCE"
    "org.opencontainers.image.version=$VERSION"
    "org.opencontainers.image.revision=$REVISION"
    "org.opencontainers.image.licenses=Apache-2.0"
    "org.opencontainers.image.base.name=debian:$SUITE"
  )
  local config=(
    --config.user "$USER_ID:$USER_ID" --config.entrypoint "$VENV/bin/sunblend" --config.cmd run --config.workingdir /
    --config.env "PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --config.env LANG=C.UTF-8 --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1
    --config.env MPLCONFIGDIR=/tmp
  )
  for label in "${labels[@]}"; do config+=(--config.label "$label" --manifest.annotation "$label"); done
  umoci config --image "$image" --history.created_by "umoci config (hack/image.sh)" "${config[@]}"
  umoci gc --layout "$layout"

  chmod -R a+rX "$layout"
  tar --sort=name --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$IMAGE_ARCHIVE.partial" oci-layout index.json blobs
  mv "$IMAGE_ARCHIVE.partial" "$IMAGE_ARCHIVE"
  umoci stat --image "$image" >&2
  log "wrote $IMAGE_ARCHIVE ($name, revision $REVISION, $(du -h "$IMAGE_ARCHIVE" | cut -f1)) in $((SECONDS - started)) s"
  log "push: skopeo copy oci-archive:$IMAGE_ARCHIVE docker://REGISTRY/sunblend:$VERSION"
}

main "$@"
