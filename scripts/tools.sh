#!/usr/bin/env bash
# Installs the Go-built tools the tests need into bin/tools (gitignored) and prints that directory.
# Idempotent: a tool already built at the pinned version is not rebuilt.
#
#   versitygw  a real S3 gateway over a posix directory (peer/source S3 tests)
#   scheduler  the real Dragonfly scheduler, from the tools module (tools/go.mod), into bin/scheduler
#              (test/internal/schedtest, scripts/cluster.sh)
#
# Progress goes to stderr; stdout is only the tools directory, so callers can do
#   TOOLS=$(bash scripts/tools.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/bin/tools"
GO=${GO:-go}

VERSITYGW_VERSION=v1.8.0

mkdir -p "$TOOLS"
# One installer at a time (test packages may run this script concurrently).
exec 9>"$TOOLS/.lock"
flock 9

# installed NAME VERSION: true when bin/tools/NAME exists and was built from VERSION.
installed() {
  local bin="$TOOLS/$1" stamp="$TOOLS/.$1.version"
  [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$2" ]
}

# install NAME MODULE/PATH VERSION: go install into bin/tools and record the version.
install() {
  local name=$1 pkg=$2 version=$3
  if installed "$name" "$version"; then
    echo "tools: $name $version already built" >&2
    return
  fi
  echo "tools: building $name $version (a few minutes)" >&2
  local start=$SECONDS
  # GOFLAGS from the environment (e.g. -mod=vendor in the project) must not apply to a module
  # installed at a version; build it outside the project's module.
  (cd / && GOFLAGS=-buildvcs=false GOBIN="$TOOLS" "$GO" install "$pkg@$version")
  echo "$version" >"$TOOLS/.$name.version"
  echo "tools: built $name in $((SECONDS - start))s" >&2
}

install versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"

# The real Dragonfly scheduler (test/internal/schedtest, scripts/cluster.sh), built from the tools
# module (tools/go.mod has `tool d7y.io/dragonfly/v2/cmd/scheduler`; a module of its own so the
# scheduler's dependencies stay out of the product's) into bin/scheduler. Up to date when the
# binary's Dragonfly version and Go version are what the tools module and toolchain select now,
# and every module it was built from is at the version the tools module selects (`go version -m`).
build_scheduler() {
  local bin="$ROOT/bin/scheduler" mod="$ROOT/tools" want have stale=""
  want="$(cd "$mod" && "$GO" list -m -f '{{.Version}}' d7y.io/dragonfly/v2) $("$GO" env GOVERSION)"
  have=""
  if [ -x "$bin" ]; then
    have="$("$GO" version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "d7y.io/dragonfly/v2" {print $3}') $("$GO" version "$bin" 2>/dev/null | awk '{print $2}')"
    stale=$(comm -23 <("$GO" version -m "$bin" | awk '$1 == "dep" {print $2, $3}' | sort) \
      <(cd "$mod" && "$GO" list -m -f '{{.Path}} {{.Version}}' all | sort))
  fi
  if [ "$have" = "$want" ] && [ -z "$stale" ]; then
    echo "tools: scheduler $want already built" >&2
    return
  fi
  echo "tools: building scheduler $want (about 7 minutes cold)" >&2
  local start=$SECONDS
  (cd "$mod" && "$GO" build -o "$bin.tmp" d7y.io/dragonfly/v2/cmd/scheduler)
  mv "$bin.tmp" "$bin"
  echo "tools: built scheduler in $((SECONDS - start))s" >&2
}
build_scheduler

# nydus-snapshotter v0.16.1 and the containerd test client (test/containerd/ctrclient).
bash "$ROOT/scripts/containerd.sh" tools >&2

echo "$TOOLS"
