#!/usr/bin/env bash
# Installs what dfnydus's build, tests and benchmarks need on a fresh Debian 12 machine (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

PKGS=(
  erofs-utils      # fsck.erofs / dump.erofs: outside oracle for RAFS v6 output
  fuse3            # fusermount3 for go-fuse mounts
  debootstrap      # real Debian rootfs trees for round-trip tests
  umoci skopeo     # OCI image build/unpack baseline
  docker-registry  # real registry on loopback
  redis-server     # Redis for the real Dragonfly scheduler's jobs/preheat (test/internal/schedtest)
  xz-utils zstd attr acl ca-certificates
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -o DPkg::Lock::Timeout=600 -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi
# containerd + runc for the real-container tests (test/containerd) and `make bench-containers`.
bash "$(dirname "$0")/containerd.sh" apt
echo "setup: system packages ready"
