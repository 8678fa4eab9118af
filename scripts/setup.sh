#!/usr/bin/env bash
# Installs the system packages dfnydus needs on a fresh Debian 12 machine (run as root).
# Idempotent: packages already present are skipped quickly.
#
#   bash scripts/setup.sh        everything the build, tests and benchmarks need (make setup / test)
#   bash scripts/setup.sh demo   only what scripts/demo.sh runs (make demo): seconds, not minutes
set -euo pipefail

# What scripts/demo.sh calls besides dfnydus, go and coreutils (the tests use them too).
DEMO_PKGS=(
  docker-registry  # the local registry the sample image is pushed to
  umoci skopeo     # build the sample OCI image and push it
  fuse3            # fusermount3 for the lazy mount
  python3 curl     # a free port, timings; waiting for the registry
)

PKGS=(
  "${DEMO_PKGS[@]}"
  erofs-utils      # fsck.erofs / dump.erofs: outside oracle for RAFS v6 output
  debootstrap      # real Debian rootfs trees for round-trip tests
  redis-server     # Redis for the real Dragonfly scheduler's jobs/preheat (test/internal/schedtest)
  xz-utils zstd attr acl ca-certificates
)

# install PKG...: apt-get install the ones not installed yet.
install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -o DPkg::Lock::Timeout=600 -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

case "${1:-all}" in
  demo)
    install "${DEMO_PKGS[@]}"
    echo "setup: the demo's packages are ready"
    ;;
  all)
    install "${PKGS[@]}"
    # containerd + runc for the real-container tests (test/containerd) and `make bench-containers`.
    bash "$(dirname "$0")/containerd.sh" apt
    echo "setup: system packages ready"
    ;;
  *) echo "usage: $0 [all|demo]" >&2; exit 2 ;;
esac
