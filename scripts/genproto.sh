#!/usr/bin/env bash
# Regenerates the Go code of the daemon's control API (proto/dfnydus/v1/*.proto) next to the .proto
# files. The generated code is committed; CI does not run this. Installs protoc and the well-known
# types (apt protobuf-compiler libprotobuf-dev) when missing and builds the two Go plugins at pinned versions into bin/tools (gitignored).
#
#   bash scripts/genproto.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/bin/tools"
GO=${GO:-go}

PROTOC_GEN_GO_VERSION=v1.36.11     # google.golang.org/protobuf, the runtime go.mod requires
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

WKT=/usr/include/google/protobuf/timestamp.proto
if ! command -v protoc >/dev/null || [ ! -f "$WKT" ]; then
  echo "genproto: installing protobuf-compiler libprotobuf-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -o DPkg::Lock::Timeout=600 -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.lock"
flock 9

# plugin NAME PACKAGE VERSION: go install into bin/tools unless already built at VERSION.
plugin() {
  local name=$1 pkg=$2 version=$3 stamp="$TOOLS/.$1.version"
  if [ -x "$TOOLS/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
    return
  fi
  echo "genproto: building $name $version" >&2
  (cd / && GOFLAGS=-buildvcs=false GOBIN="$TOOLS" "$GO" install "$pkg@$version")
  echo "$version" >"$stamp"
}
plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
flock -u 9

# The well-known types (google/protobuf/timestamp.proto) come from libprotobuf-dev in /usr/include.
PATH="$TOOLS:$PATH" protoc -I proto -I /usr/include \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  proto/dfnydus/v1/*.proto
echo "genproto: regenerated $(ls proto/dfnydus/v1/*.pb.go | tr '\n' ' ')" >&2
