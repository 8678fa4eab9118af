#!/usr/bin/env bash
# The main job on an embedded default, no cluster: a local registry holding a sample image (the Go
# toolchain, ~270 MB) converted to nydus, mounted lazily by dfnydus alone; a program runs from the
# mount before the image is downloaded, and dfnydus reports what it fetched. Everything it starts is
# stopped and removed at the end.
#
# Environment:
#   DFNYDUS_BIN         the dfnydus binary (default bin/dfnydus, which `make demo` builds; test/readme
#                       runs the script with one built elsewhere)
#   DFNYDUS_DEMO_START  when the clock of the closing total started, in seconds since the epoch
#                       (`make demo` sets it so that the total includes setup and build)
set -euo pipefail
demo_start=${DFNYDUS_DEMO_START:-$(date +%s.%N)}
cd "$(dirname "$0")/.."
bin=${DFNYDUS_BIN:-$PWD/bin/dfnydus}
[ -x "$bin" ] || { echo "demo: no dfnydus binary at $bin (make build, or set DFNYDUS_BIN)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/dfnydus-demo.XXXXXX)
regpid=""; mountpid=""
cleanup() {
  [ -n "$mountpid" ] && { "$bin" umount "$work/mnt" 2>/dev/null || true; wait "$mountpid" 2>/dev/null || true; }
  [ -n "$regpid" ] && { kill "$regpid" 2>/dev/null || true; wait "$regpid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $reg}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & regpid=$!
for _ in $(seq 50); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

src=$(go env GOROOT)
echo "== a sample OCI image: the Go toolchain ($(du -sh "$src" | cut -f1)), pushed to a local registry at $reg"
umoci init --layout "$work/oci" && umoci new --image "$work/oci:go"
tar --numeric-owner -C "$src" -cf "$work/go.tar" . && umoci raw add-layer --image "$work/oci:go" "$work/go.tar" && rm "$work/go.tar"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:go" "docker://$reg/go:latest"

echo "== converting it to a nydus image in the same registry"
"$bin" convert --log-level warn --work-dir "$work/convert" "$reg/go:latest" "$reg/go:nydus"

echo "== mounting it lazily (no prefetch, so every byte read is fetched on demand)"
mkdir -p "$work/mnt"
"$bin" mount --log-level warn --cache-dir "$work/cache" --prefetch off --ready-file "$work/ready" "$reg/go:nydus" "$work/mnt" & mountpid=$!
for _ in $(seq 300); do [ -f "$work/ready" ] && break; sleep 0.1; done
[ -f "$work/ready" ] || { echo "mount did not come up"; exit 1; }

echo "== running a program from the mount: $work/mnt/bin/go version"
start=$(date +%s.%N)
"$work/mnt/bin/go" version
end=$(date +%s.%N)
echo "   took $(python3 -c "print(f'{$end-$start:.2f}')") s from a cold cache"
echo "== what dfnydus fetched"
"$bin" stat --cache-dir "$work/cache" "$work/mnt"
echo "== done in $(python3 -c "print(f'{$(date +%s.%N)-$demo_start:.0f}')") s${DFNYDUS_DEMO_START:+ (setup, build and demo)}"
