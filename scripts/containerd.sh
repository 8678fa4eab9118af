#!/usr/bin/env bash
# What the real-container tests and benchmarks need (run as root on Debian 12):
#   containerd + runc from apt (containerd 1.6; nothing is started: the tests run private instances),
#   containerd-nydus-grpc (nydus-snapshotter, pinned in test/containerd/ctrclient/go.mod) built into
#   bin/tools, and the test client program `ctrclient` from the same module.
# Idempotent; progress goes to stderr. Called by scripts/setup.sh (apt part) and scripts/tools.sh (builds).
#
#   bash scripts/containerd.sh apt     install the apt packages only
#   bash scripts/containerd.sh tools   build the Go tools only
#   bash scripts/containerd.sh         both
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/bin/tools"
GO=${GO:-go}
MOD="$ROOT/test/containerd/ctrclient"
SNAPSHOTTER_VERSION=v0.16.1   # must match test/containerd/ctrclient/go.mod

do_apt() {
  local missing=()
  for p in containerd runc; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "containerd.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -o DPkg::Lock::Timeout=600 -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# build NAME PKG STAMP: go build PKG from the ctrclient module into bin/tools/NAME unless STAMP matches.
build() {
  local name=$1 pkg=$2 stamp=$3
  local bin="$TOOLS/$name" stampf="$TOOLS/.$name.version"
  if [ -x "$bin" ] && [ -f "$stampf" ] && [ "$(cat "$stampf")" = "$stamp" ]; then
    echo "containerd.sh: $name already built" >&2
    return
  fi
  echo "containerd.sh: building $name (the first build takes a few minutes)" >&2
  local start=$SECONDS
  (cd "$MOD" && GOFLAGS=-mod=mod "$GO" build -trimpath -buildvcs=false -o "$bin.tmp" "$pkg")
  mv "$bin.tmp" "$bin"
  echo "$stamp" >"$stampf"
  echo "containerd.sh: built $name in $((SECONDS - start))s" >&2
}

do_tools() {
  mkdir -p "$TOOLS"
  exec 8>"$TOOLS/.containerd.lock"
  flock 8
  build containerd-nydus-grpc github.com/containerd/nydus-snapshotter/cmd/containerd-nydus-grpc "$SNAPSHOTTER_VERSION"
  # The client changes with the repository: stamp it with a hash of its sources.
  local sum
  sum=$(cat "$MOD"/go.mod "$MOD"/go.sum "$MOD"/*.go | sha256sum | cut -c1-16)
  build ctrclient . "$sum"
}

case "${1:-all}" in
  apt) do_apt ;;
  tools) do_tools ;;
  all) do_apt; do_tools ;;
  *) echo "usage: $0 [apt|tools]" >&2; exit 2 ;;
esac
